//! The on-disk cache of compiled programs.

use cgsight_seccomp::{Cache, CapSet, KernelVersion, Profile, Target};
use cgsight_testkit::TempDir;

fn target(caps: CapSet) -> Target {
    Target {
        caps,
        kernel: KernelVersion::current().unwrap(),
    }
}

#[test]
fn second_load_is_a_hit_and_other_targets_miss() {
    let dir = TempDir::new("seccomp-cache");
    let cache = Cache::new(dir.path().join("seccomp"));
    let profile = Profile::docker_default();
    let first = cache
        .load_or_compile(&profile, &target(CapSet::docker_default()))
        .unwrap();
    assert!(!first.cache_hit);
    let second = cache
        .load_or_compile(&profile, &target(CapSet::docker_default()))
        .unwrap();
    assert!(second.cache_hit);
    assert_eq!(second.program, first.program);
    assert_eq!(second.path, first.path);
    let admin = cache
        .load_or_compile(&profile, &target(CapSet::all()))
        .unwrap();
    assert!(!admin.cache_hit);
    assert_ne!(admin.path, first.path);
    assert_ne!(admin.program, first.program);
}

#[test]
fn damaged_cache_files_are_recompiled() {
    let dir = TempDir::new("seccomp-cache-damaged");
    let cache = Cache::new(dir.path());
    let profile = Profile::docker_default();
    let t = target(CapSet::docker_default());
    let first = cache.load_or_compile(&profile, &t).unwrap();
    let good = std::fs::read(&first.path).unwrap();

    // Truncated mid-program.
    std::fs::write(&first.path, good.get(..good.len() - 5).unwrap()).unwrap();
    let again = cache.load_or_compile(&profile, &t).unwrap();
    assert!(!again.cache_hit);
    assert_eq!(again.program, first.program);
    assert_eq!(
        std::fs::read(&first.path).unwrap(),
        good,
        "the file was rewritten whole"
    );

    // Same length, one instruction byte flipped: only the hash can tell.
    let mut flipped = good.clone();
    if let Some(b) = flipped.last_mut() {
        *b ^= 0x40;
    }
    std::fs::write(&first.path, &flipped).unwrap();
    assert!(!cache.load_or_compile(&profile, &t).unwrap().cache_hit);

    // Garbage and empty files.
    std::fs::write(&first.path, b"not a program").unwrap();
    assert!(!cache.load_or_compile(&profile, &t).unwrap().cache_hit);
    std::fs::write(&first.path, b"").unwrap();
    assert!(!cache.load_or_compile(&profile, &t).unwrap().cache_hit);
    assert!(cache.load_or_compile(&profile, &t).unwrap().cache_hit);

    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}
