//! Unpacks one layer tar into a directory in overlay's form: `.wh.NAME` becomes a 0/0 character
//! device, `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr; paths that would leave the
//! directory (`..`, absolute, through a symlink) are refused.

use crate::error::{io, Error, Result};
use crate::fsmeta;
use nix::sys::stat::SFlag;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use tar::EntryType;

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
}

/// Ownership, mode, time and xattrs of one entry, PAX records taking precedence.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn read_meta<R: Read>(e: &mut tar::Entry<R>) -> Result<Meta> {
    let h = e.header();
    let bad = |f: &str, err: std::io::Error| {
        crate::error::format("tar header", format_args!("{f}: {err}"))
    };
    let mut m = Meta {
        mode: h.mode().map_err(|x| bad("mode", x))? & 0o7777,
        uid: h.uid().map_err(|x| bad("uid", x))?,
        gid: h.gid().map_err(|x| bad("gid", x))?,
        mtime: i64::try_from(h.mtime().map_err(|x| bad("mtime", x))?).unwrap_or(0),
        xattrs: Vec::new(),
    };
    if let Some(pax) = e.pax_extensions().map_err(|x| bad("pax", x))? {
        for ext in pax {
            let ext = ext.map_err(|x| bad("pax", x))?;
            let Ok(key) = ext.key() else { continue };
            let num = || {
                ext.value()
                    .ok()
                    .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
            };
            match key {
                "uid" => m.uid = num().and_then(|v| u64::try_from(v).ok()).unwrap_or(m.uid),
                "gid" => m.gid = num().and_then(|v| u64::try_from(v).ok()).unwrap_or(m.gid),
                "mtime" => m.mtime = num().unwrap_or(m.mtime),
                k => {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        if !fsmeta::is_overlay_xattr(name) {
                            m.xattrs
                                .push((name.to_string(), ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }
    }
    Ok(m)
}

/// A tar path made relative and checked: only plain names, no `..`, not absolute.
pub fn safe_relative(p: &Path, layer: &str) -> Result<PathBuf> {
    let unsafe_path = |why| Error::UnsafePath {
        layer: layer.into(),
        path: p.to_path_buf(),
        why,
    };
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_path("contains ..")),
            Component::RootDir | Component::Prefix(_) => return Err(unsafe_path("is absolute")),
        }
    }
    Ok(out)
}

/// Makes sure every parent of `rel` under `root` is a real directory (created if missing), so
/// nothing is written through a symlink the layer planted.
fn prepare_parents(root: &Path, rel: &Path, layer: &str) -> Result<()> {
    let mut cur = root.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for c in parent.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                let why = if m.file_type().is_symlink() {
                    "goes through a symlink"
                } else {
                    "goes through a non-directory"
                };
                return Err(Error::UnsafePath {
                    layer: layer.into(),
                    path: rel.to_path_buf(),
                    why,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(io(format!("creating {}", cur.display())))?;
            }
            Err(e) => return Err(io(format!("inspecting {}", cur.display()))(e)),
        }
    }
    Ok(())
}

/// Removes whatever is at `p` unless it is a directory and `keep_dir` is set.
fn clear(p: &Path, keep_dir: bool) -> Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() && keep_dir => Ok(true),
        Ok(m) if m.is_dir() => fs::remove_dir_all(p)
            .map(|_| false)
            .map_err(io(format!("removing {}", p.display()))),
        Ok(_) => fs::remove_file(p)
            .map(|_| false)
            .map_err(io(format!("removing {}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(format!("inspecting {}", p.display()))(e)),
    }
}

fn apply_meta(p: &Path, m: &Meta, chmod: bool) -> Result<()> {
    fsmeta::lchown(p, m.uid, m.gid)?;
    // chmod after chown: chown clears set-id bits.
    if chmod {
        fs::set_permissions(p, fs::Permissions::from_mode(m.mode))
            .map_err(io(format!("chmod {}", p.display())))?;
    }
    for (k, v) in &m.xattrs {
        fsmeta::set_xattr(p, k, v)?;
    }
    Ok(())
}

/// Unpacks the (uncompressed) layer tar from `reader` into `dest`, an existing empty directory.
pub fn unpack_layer(reader: impl Read, dest: &Path, layer: &str) -> Result<UnpackStats> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    // Directory times are set last: writing children would bump them again.
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    let tar_err = |e: std::io::Error| crate::error::format(format!("layer {layer}"), e);
    for entry in archive.entries().map_err(tar_err)? {
        let mut e = entry.map_err(tar_err)?;
        let kind = e.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            continue;
        }
        let raw = e.path().map_err(tar_err)?.into_owned();
        let rel = safe_relative(&raw, layer)?;
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the root itself ("./")
        };
        prepare_parents(dest, &rel, layer)?;
        let target = dest.join(&rel);
        stats.entries += 1;
        if name == OPAQUE_MARKER {
            let dir = target.parent().unwrap_or(dest);
            fsmeta::set_xattr(dir, OPAQUE_XATTR, b"y")?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(WHITEOUT_PREFIX) {
                continue; // other .wh..wh. names are aufs bookkeeping, meaningless here
            }
            let victim = target.with_file_name(hidden);
            clear(&victim, false)?;
            fsmeta::make_whiteout(&victim)?;
            continue;
        }
        let meta = read_meta(&mut e)?;
        let existing_dir = clear(&target, kind == EntryType::Directory)?;
        match kind {
            EntryType::Directory => {
                if !existing_dir {
                    fs::create_dir(&target)
                        .map_err(io(format!("creating {}", target.display())))?;
                }
                apply_meta(&target, &meta, true)?;
                dir_times.push((target, meta.mtime));
                continue;
            }
            EntryType::Regular | EntryType::Continuous => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(io(format!("creating {}", target.display())))?;
                stats.bytes += std::io::copy(&mut e, &mut f)
                    .map_err(io(format!("writing {}", target.display())))?;
                apply_meta(&target, &meta, true)?;
            }
            EntryType::Symlink => {
                let to = e.link_name().map_err(tar_err)?.ok_or_else(|| {
                    crate::error::format(format!("layer {layer}"), "symlink without target")
                })?;
                std::os::unix::fs::symlink(&to, &target)
                    .map_err(io(format!("symlink {}", target.display())))?;
                apply_meta(&target, &meta, false)?;
            }
            EntryType::Link => {
                let to = e.link_name().map_err(tar_err)?.ok_or_else(|| {
                    crate::error::format(format!("layer {layer}"), "hard link without target")
                })?;
                let src_rel = safe_relative(&to, layer)?;
                prepare_parents(dest, &src_rel, layer)?;
                let src = dest.join(&src_rel);
                fs::hard_link(&src, &target).map_err(io(format!(
                    "hard link {} -> {}",
                    target.display(),
                    src.display()
                )))?;
                continue; // shares the inode's metadata
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let h = e.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let flag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                fsmeta::make_node(&target, flag, meta.mode, u64::from(major), u64::from(minor))?;
                apply_meta(&target, &meta, true)?;
            }
            other => {
                return Err(crate::error::format(
                    format!("layer {layer}"),
                    format_args!("unsupported tar entry type {other:?} at {}", rel.display()),
                ));
            }
        }
        fsmeta::set_mtime(&target, meta.mtime)?;
    }
    for (d, t) in dir_times.iter().rev() {
        fsmeta::set_mtime(d, *t)?;
    }
    Ok(stats)
}
