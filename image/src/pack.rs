//! Packs an overlay upper directory into a layer tar: 0/0 character devices become `.wh.NAME`
//! entries and opaque directories get a `.wh..wh..opq` entry; hard links, symlinks, modes,
//! ownership, times and xattrs are kept. Entries are written in sorted order so the same upper
//! gives the same tar.

use crate::error::{io, Result};
use crate::fsmeta;
use crate::unpack::{OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tar::{Builder, EntryType, Header};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PackStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub bytes: u64,
}

struct Packer<W: Write> {
    tar: Builder<W>,
    root: PathBuf,
    /// First path seen for each multiply-linked inode, so later names become hard links.
    inodes: HashMap<(u64, u64), PathBuf>,
    stats: PackStats,
    shift: Option<IdShift>,
    /// Mount points the runtime made (e.g. the network's /etc/hosts): left out when still empty.
    mountpoints: Vec<PathBuf>,
}

/// A `--userns auto` container's id range: its files are stored as host ids `uid..uid+count`
/// and go into the layer as the container's ids `0..count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdShift {
    pub uid: u32,
    pub gid: u32,
    pub count: u32,
}

/// What an id outside the range showed as inside the container.
const OVERFLOW_ID: u32 = 65534;

impl IdShift {
    fn map(base: u32, count: u32, id: u32) -> u32 {
        match id.checked_sub(base) {
            Some(n) if n < count => n,
            _ => OVERFLOW_ID,
        }
    }
}

fn header_for(m: &fs::Metadata, kind: EntryType, shift: Option<IdShift>) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(m.mode() & 0o7777);
    let (uid, gid) = match shift {
        Some(s) => (
            IdShift::map(s.uid, s.count, m.uid()),
            IdShift::map(s.gid, s.count, m.gid()),
        ),
        None => (m.uid(), m.gid()),
    };
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(gid));
    h.set_mtime(u64::try_from(m.mtime()).unwrap_or(0));
    h.set_size(0);
    h
}

fn empty_file_header(mtime: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

impl<W: Write> Packer<W> {
    fn xattrs(&mut self, p: &Path) -> Result<()> {
        let mut recs: Vec<(String, Vec<u8>)> = Vec::new();
        for name in fsmeta::list_xattrs(p)? {
            if fsmeta::is_overlay_xattr(&name) {
                continue;
            }
            if let Some(v) = fsmeta::get_xattr(p, &name)? {
                recs.push((format!("SCHILY.xattr.{name}"), v));
            }
        }
        if !recs.is_empty() {
            let it = recs.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
            self.tar
                .append_pax_extensions(it)
                .map_err(io(format!("writing xattrs of {}", p.display())))?;
        }
        Ok(())
    }

    fn walk(&mut self, dir: &Path) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(io(format!("reading {}", dir.display())))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(io(format!("reading {}", dir.display())))?;
        names.sort();
        for name in names {
            self.entry(&dir.join(name))?;
        }
        Ok(())
    }

    fn entry(&mut self, p: &Path) -> Result<()> {
        let rel = p.strip_prefix(&self.root).unwrap_or(p).to_path_buf();
        let m = fs::symlink_metadata(p).map_err(io(format!("inspecting {}", p.display())))?;
        let ft = m.file_type();
        if ft.is_file() && m.len() == 0 && self.mountpoints.contains(&rel) {
            // docker keeps these in an init layer no commit sees; the image keeps its own.
            return Ok(());
        }
        let werr = || io(format!("writing {} to the layer", rel.display()));
        self.stats.entries += 1;
        if ft.is_char_device() && m.rdev() == 0 {
            let name = rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let wh = rel.with_file_name(format!("{WHITEOUT_PREFIX}{name}"));
            let mut h = empty_file_header(u64::try_from(m.mtime()).unwrap_or(0));
            self.tar
                .append_data(&mut h, &wh, std::io::empty())
                .map_err(werr())?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if ft.is_socket() {
            return Ok(()); // a socket is a live endpoint, not content
        }
        // A redirect or metacopy entry only makes sense against the lower layers it points
        // into; packed alone it would be a wrong layer.
        for x in ["trusted.overlay.redirect", "trusted.overlay.metacopy"] {
            if fsmeta::get_xattr(p, x)?.is_some() {
                return Err(crate::error::format(
                    "upper directory",
                    format_args!("{} has {x}: mount the overlay with redirect_dir=off,metacopy=off to commit it", rel.display()),
                ));
            }
        }
        self.xattrs(p)?;
        if ft.is_dir() {
            let mut h = header_for(&m, EntryType::Directory, self.shift);
            self.tar
                .append_data(&mut h, &rel, std::io::empty())
                .map_err(werr())?;
            if fsmeta::get_xattr(p, OPAQUE_XATTR)?.as_deref() == Some(b"y") {
                let mut h = empty_file_header(u64::try_from(m.mtime()).unwrap_or(0));
                self.tar
                    .append_data(&mut h, rel.join(OPAQUE_MARKER), std::io::empty())
                    .map_err(werr())?;
                self.stats.whiteouts += 1;
            }
            return self.walk(p);
        }
        if ft.is_symlink() {
            let to = fs::read_link(p).map_err(io(format!("reading link {}", p.display())))?;
            let mut h = header_for(&m, EntryType::Symlink, self.shift);
            return self.tar.append_link(&mut h, &rel, &to).map_err(werr());
        }
        if !ft.is_dir() && m.nlink() > 1 {
            if let Some(first) = self.inodes.get(&(m.dev(), m.ino())) {
                let first = first.clone();
                let mut h = header_for(&m, EntryType::Link, self.shift);
                return self.tar.append_link(&mut h, &rel, &first).map_err(werr());
            }
            self.inodes.insert((m.dev(), m.ino()), rel.clone());
        }
        if ft.is_file() {
            let mut h = header_for(&m, EntryType::Regular, self.shift);
            h.set_size(m.len());
            let f = fs::File::open(p).map_err(io(format!("opening {}", p.display())))?;
            self.tar.append_data(&mut h, &rel, f).map_err(werr())?;
            self.stats.bytes += m.len();
            return Ok(());
        }
        let kind = if ft.is_char_device() {
            EntryType::Char
        } else if ft.is_block_device() {
            EntryType::Block
        } else {
            EntryType::Fifo
        };
        let mut h = header_for(&m, kind, self.shift);
        let dev = m.rdev();
        let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
        h.set_device_major(u32::try_from(major).unwrap_or(0))
            .map_err(werr())?;
        h.set_device_minor(u32::try_from(minor).unwrap_or(0))
            .map_err(werr())?;
        self.tar
            .append_data(&mut h, &rel, std::io::empty())
            .map_err(werr())
    }
}

/// Writes the layer tar of `upper` to `out` (uncompressed; the caller compresses and hashes),
/// owners shifted back by `shift` when the container had its own id range, and the runtime's
/// still-empty `mountpoints` (paths relative to the root) left out.
pub fn pack_upper<W: Write>(
    upper: &Path,
    out: W,
    shift: Option<IdShift>,
    mountpoints: &[PathBuf],
) -> Result<(W, PackStats)> {
    let mut p = Packer {
        tar: Builder::new(out),
        root: upper.to_path_buf(),
        inodes: HashMap::new(),
        stats: PackStats::default(),
        shift,
        mountpoints: mountpoints.to_vec(),
    };
    p.walk(upper)?;
    let stats = p.stats;
    let w = p.tar.into_inner().map_err(io("finishing the layer tar"))?;
    Ok((w, stats))
}

#[cfg(test)]
mod tests {
    use super::IdShift;

    #[test]
    fn ids_of_a_private_range_shift_back_and_others_are_nobody() {
        let (base, count) = (100_000, 65_536);
        assert_eq!(IdShift::map(base, count, base), 0);
        assert_eq!(IdShift::map(base, count, base + 1000), 1000);
        assert_eq!(IdShift::map(base, count, base + count - 1), count - 1);
        assert_eq!(IdShift::map(base, count, base + count), 65534);
        assert_eq!(IdShift::map(base, count, 0), 65534);
    }
}
