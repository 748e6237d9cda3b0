//! Test support: overlay mounts of stored images, temp stores and store checks. The test
//! image, its layers, the tree walk and the loopback registry live in cgsight-testkit (the
//! CLI's tests use them too).
#![allow(dead_code)]

pub use cgsight_testkit::oci::*;
#[allow(unused_imports)] // store.rs needs no registry
pub use cgsight_testkit::registry::*;
use cgsight_testkit::{MountGuard, TempDir};
use std::fs;
use std::path::{Path, PathBuf};

/// An overlay of `lowerdir` with a fresh upper and work dir, detached on drop.
pub struct Overlay {
    pub merged: PathBuf,
    pub upper: PathBuf,
    _mount: MountGuard,
    _dir: TempDir,
}

pub fn mount_overlay(lowerdir: &str) -> Overlay {
    let dir = TempDir::new_in(Path::new("/var/tmp"), "img-ovl");
    let (upper, work, merged) = (
        dir.path().join("upper"),
        dir.path().join("work"),
        dir.path().join("merged"),
    );
    for d in [&upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    let opts = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap_or_else(|e| panic!("mount overlay ({} bytes of options): {e}", opts.len()));
    Overlay {
        _mount: MountGuard::new(&merged),
        merged,
        upper,
        _dir: dir,
    }
}

/// A store in a fresh temp dir on a real disk (overlay and trusted xattrs need one).
pub fn temp_store(tag: &str) -> (TempDir, cgsight_image::Store) {
    let dir = TempDir::new_in(Path::new("/var/tmp"), tag);
    let s = cgsight_image::Store::open(&dir.path().join("store")).unwrap();
    (dir, s)
}

/// Entries of a directory (0 if missing).
pub fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}

/// Flips the middle byte of the largest of `files` (the busybox layer), keeping its name.
pub fn corrupt_largest(files: impl Iterator<Item = PathBuf>) {
    let big = files
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut data = fs::read(&big).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs::write(&big, data).unwrap();
}

/// Nothing half-done is left in the store: no layer, no temp file, no link, no image.
pub fn assert_no_partial(store: &cgsight_image::Store) {
    assert_eq!(
        store.layers().count().unwrap(),
        0,
        "a partial layer was left"
    );
    assert_eq!(count(&store.root().join("tmp")), 0, "temp files were left");
    assert_eq!(count(&store.root().join("l")), 0, "a layer link was left");
    assert!(store.images().unwrap().is_empty());
}
