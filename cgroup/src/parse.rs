//! Whole-file readers: every read error names its path; the text goes to [`crate::format`].

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
pub(crate) use crate::format::{flat_keyed, limit_of, parse_err, u64_of};

pub(crate) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a file that may legitimately be absent (e.g. `memory.peak` on older kernels).
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    let text = read(path)?;
    u64_of(path, "an unsigned integer", &text)
}

pub(crate) fn read_u64_opt(path: &Path) -> Result<Option<u64>> {
    match read_opt(path)? {
        Some(text) => Ok(Some(u64_of(path, "an unsigned integer", &text)?)),
        None => Ok(None),
    }
}

pub(crate) fn read_limit(path: &Path) -> Result<Option<u64>> {
    let text = read(path)?;
    limit_of(path, &text)
}

pub(crate) fn join(dir: &Path, file: &str) -> PathBuf {
    dir.join(file)
}
