//! Content-addressed blobs (`blobs/sha256/<hex>`): every blob is written to a temp file,
//! checked against its digest, and only then renamed into place.

use crate::digest::{Digest, HashWriter};
use crate::error::{io, Error, Result};
use crate::temp::{unique_path, TempPath};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct Blobs {
    dir: PathBuf,
    tmp: PathBuf,
}

impl Blobs {
    pub fn new(dir: PathBuf, tmp: PathBuf) -> Self {
        Blobs { dir, tmp }
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.hex())
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        fs::read(self.path(d)).map_err(io(format!("reading blob {d}")))
    }

    /// Writes a blob through `fill` and keeps it only if its digest is `expected`.
    pub fn put_verified(
        &self,
        expected: &Digest,
        what: &str,
        fill: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<PathBuf> {
        let (tmp, actual, _) = self.write_temp(fill)?;
        if &actual != expected {
            return Err(Error::DigestMismatch {
                what: what.into(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        self.commit(tmp, &actual)
    }

    /// Writes a blob whose digest is learnt from its content; returns (digest, size).
    pub fn put_computed(
        &self,
        fill: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<(Digest, u64)> {
        let (tmp, d, n) = self.write_temp(fill)?;
        self.commit(tmp, &d)?;
        Ok((d, n))
    }

    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest> {
        self.put_computed(|w| w.write_all(data).map_err(io("writing blob")))
            .map(|(d, _)| d)
    }

    fn write_temp(
        &self,
        fill: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<(TempPath, Digest, u64)> {
        let tmp = TempPath::new(unique_path(&self.tmp, "blob"));
        let f =
            File::create(tmp.path()).map_err(io(format!("creating {}", tmp.path().display())))?;
        let mut w = HashWriter::new(BufWriter::with_capacity(256 * 1024, f));
        fill(&mut w)?;
        let (bw, d, n) = w.finish();
        let f = bw
            .into_inner()
            .map_err(|e| io("flushing blob")(e.into_error()))?;
        f.sync_all().map_err(io("syncing blob"))?;
        Ok((tmp, d, n))
    }

    fn commit(&self, tmp: TempPath, d: &Digest) -> Result<PathBuf> {
        let dst = self.path(d);
        fs::rename(tmp.path(), &dst).map_err(io(format!("storing blob {d}")))?;
        tmp.keep();
        Ok(dst)
    }

    pub fn remove(&self, d: &Digest) -> Result<()> {
        match fs::remove_file(self.path(d)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("removing blob {d}"))(e))
            }
            _ => Ok(()),
        }
    }

    /// Number of blobs and their total size (for tests and `images` output).
    pub fn usage(&self) -> Result<(u64, u64)> {
        dir_usage(&self.dir)
    }
}

pub(crate) fn dir_usage(dir: &Path) -> Result<(u64, u64)> {
    let mut n = 0;
    let mut bytes = 0;
    for e in fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))? {
        let e = e.map_err(io(format!("reading {}", dir.display())))?;
        n += 1;
        bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
    }
    Ok((n, bytes))
}
