//! Unpacked layers (`layers/<diff-id hex>/diff`), each unpacked once from its blob into a temp
//! directory and renamed into place, plus short links (`l/<id>`) that keep overlay's lowerdir
//! option under the 4096-byte page it must fit in.

use crate::digest::{Digest, HashReader};
use crate::error::{io, Error, Result};
use crate::temp::{unique_path, TempPath};
use crate::unpack::{unpack_layer, UnpackStats};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Linux caps one mount option string at a page, NUL included.
pub const MOUNT_OPTION_MAX: usize = 4095;
const SHORT_LEN: usize = 12;

pub struct Layers {
    dir: PathBuf,
    links: PathBuf,
    tmp: PathBuf,
}

pub fn short_id(diff_id: &Digest) -> &str {
    diff_id.hex().get(..SHORT_LEN).unwrap_or(diff_id.hex())
}

/// Escapes the characters overlay's option parser splits on.
fn escape_option_path(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, ':' | ',' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

impl Layers {
    pub fn new(dir: PathBuf, links: PathBuf, tmp: PathBuf) -> Self {
        Layers { dir, links, tmp }
    }

    pub fn diff_dir(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join(diff_id.hex()).join("diff")
    }

    pub fn link_path(&self, diff_id: &Digest) -> PathBuf {
        self.links.join(short_id(diff_id))
    }

    pub fn has(&self, diff_id: &Digest) -> bool {
        self.diff_dir(diff_id).is_dir()
    }

    /// Unpacks `blob` as layer `diff_id` unless already there; returns the stats if it unpacked.
    /// The uncompressed stream must hash to `diff_id`, else nothing is kept.
    pub fn ensure(&self, diff_id: &Digest, blob: &Path) -> Result<Option<UnpackStats>> {
        if self.has(diff_id) {
            self.link(diff_id)?;
            return Ok(None);
        }
        let tmp = TempPath::new(unique_path(&self.tmp, "layer"));
        let diff = tmp.path().join("diff");
        fs::create_dir_all(&diff).map_err(io(format!("creating {}", diff.display())))?;
        let f = File::open(blob).map_err(io(format!("opening {}", blob.display())))?;
        let mut br = BufReader::with_capacity(256 * 1024, f);
        let head = br
            .fill_buf()
            .map_err(io(format!("reading {}", blob.display())))?;
        // By magic number, not media type: a docker-archive names no compression at all.
        let decoded: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(br))
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(
                zstd::stream::read::Decoder::with_buffer(br)
                    .map_err(|e| crate::error::format(format!("layer {diff_id}"), e))?,
            )
        } else {
            Box::new(br)
        };
        let mut hr = HashReader::new(decoded);
        let stats = unpack_layer(&mut hr, &diff, diff_id.as_str())?;
        // The tar reader stops at the end-of-archive marker; the padding after it is hashed too.
        std::io::copy(&mut hr, &mut std::io::sink())
            .map_err(|e| crate::error::format(format!("layer {diff_id}"), e))?;
        let (actual, _) = hr.finish();
        if &actual != diff_id {
            return Err(Error::DigestMismatch {
                what: "uncompressed layer (diff_id)".into(),
                expected: diff_id.to_string(),
                actual: actual.to_string(),
            });
        }
        let d = File::open(tmp.path()).map_err(io("opening the unpacked layer"))?;
        // One syncfs instead of an fsync per file: the layer is durable before it becomes visible.
        // SAFETY: d is an open descriptor for the duration of the call.
        if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
            return Err(io("syncing the unpacked layer")(
                std::io::Error::last_os_error(),
            ));
        }
        let dst = self.dir.join(diff_id.hex());
        fs::rename(tmp.path(), &dst).map_err(io(format!("moving layer into {}", dst.display())))?;
        tmp.keep();
        self.link(diff_id)?;
        Ok(Some(stats))
    }

    fn link(&self, diff_id: &Digest) -> Result<()> {
        let l = self.link_path(diff_id);
        let want = Path::new("..")
            .join("layers")
            .join(diff_id.hex())
            .join("diff");
        match fs::read_link(&l) {
            Ok(t) if t == want => Ok(()),
            Ok(t) => Err(crate::error::format(
                "layer link",
                format_args!(
                    "{} already points at {} (short id collision)",
                    l.display(),
                    t.display()
                ),
            )),
            Err(_) => std::os::unix::fs::symlink(&want, &l)
                .map_err(io(format!("linking {}", l.display()))),
        }
    }

    /// Removes a layer: moved aside first, so a crash midway never leaves a half layer in place.
    pub fn remove(&self, diff_id: &Digest) -> Result<()> {
        let _ = fs::remove_file(self.link_path(diff_id));
        let src = self.dir.join(diff_id.hex());
        if !src.exists() {
            return Ok(());
        }
        let aside = TempPath::new(unique_path(&self.tmp, "gone"));
        fs::rename(&src, aside.path()).map_err(io(format!("removing {}", src.display())))?;
        Ok(())
    }

    /// The layer directories for a mount, top layer first (a manifest lists them base first).
    pub fn lower_paths(&self, diff_ids: &[Digest]) -> Vec<PathBuf> {
        diff_ids.iter().rev().map(|d| self.link_path(d)).collect()
    }

    /// overlay's `lowerdir=` value (without the key), top layer first, through the short links.
    pub fn lowerdir(&self, diff_ids: &[Digest]) -> Result<String> {
        let s = self
            .lower_paths(diff_ids)
            .iter()
            .map(|p| escape_option_path(p))
            .collect::<Vec<_>>()
            .join(":");
        if s.len() + "lowerdir=".len() > MOUNT_OPTION_MAX {
            return Err(crate::error::format(
                "lowerdir",
                format_args!(
                    "{} layers need {} bytes, over the {MOUNT_OPTION_MAX}-byte mount option limit",
                    diff_ids.len(),
                    s.len()
                ),
            ));
        }
        Ok(s)
    }

    pub fn count(&self) -> Result<u64> {
        crate::blobs::dir_usage(&self.dir).map(|(n, _)| n)
    }
}
