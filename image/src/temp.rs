//! Temporary files and directories inside the store (same filesystem, so a finished one is
//! renamed into place atomically) that remove themselves unless kept.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A fresh unused name under `dir` (pid + counter: unique across threads and processes).
pub fn unique_path(dir: &Path, tag: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{tag}-{}-{n}", std::process::id()))
}

/// Removes its path (file or directory tree) on drop unless `keep` was called.
pub struct TempPath {
    path: Option<PathBuf>,
}

impl TempPath {
    pub fn new(path: PathBuf) -> Self {
        TempPath { path: Some(path) }
    }
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }
    /// The caller has moved it into place: nothing to remove any more.
    pub fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {
                    let _ = std::fs::remove_dir_all(&p);
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(&p);
                }
                Err(_) => {}
            }
        }
    }
}
