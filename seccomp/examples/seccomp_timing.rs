//! Measures the default profile's cold compile, cache load and install times (µs).
//! Run as root: `cargo run --release -p cgsight-seccomp --example seccomp_timing`.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use cgsight_seccomp::{compile, Cache, Profile, Program, Target};

const RUNS: usize = 25;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let profile = Profile::docker_default();
    let target = Target::docker_default()?;

    let mut cold = Vec::new();
    let mut program = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let compiled = compile(&profile, &target)?;
        cold.push(t.elapsed());
        program = Some(compiled.program);
    }
    let program = program.ok_or("no runs")?;
    let unknown = compile(&profile, &target)?.unknown_syscalls;
    println!(
        "names this libseccomp does not know (skipped): {}",
        unknown.join(" ")
    );
    println!(
        "program: {} BPF instructions ({} bytes)",
        program.len(),
        program.len() * 8
    );
    report("compile (cold, no cache)", &mut cold);

    let dir = std::env::temp_dir().join(format!("cgsight-seccomp-timing-{}", std::process::id()));
    let cache = Cache::new(&dir);
    let t = Instant::now();
    let first = cache.load_or_compile(&profile, &target)?;
    println!(
        "first load_or_compile (miss, compile + write): {} µs",
        t.elapsed().as_micros()
    );
    assert!(!first.cache_hit);
    let mut hits = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let loaded = cache.load_or_compile(&profile, &target)?;
        hits.push(t.elapsed());
        assert!(loaded.cache_hit);
    }
    report("load_or_compile (cache hit)", &mut hits);
    std::fs::remove_dir_all(&dir)?;

    let mut installs: Vec<Duration> = (0..RUNS).map(|_| install_in_child(&program)).collect();
    report("install in a forked child", &mut installs);
    Ok(())
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let us = |d: Option<&Duration>| d.map_or(0, |d| d.as_micros());
    println!(
        "{what}: median {} µs, min {} µs, max {} µs ({} runs)",
        us(samples.get(samples.len() / 2)),
        us(samples.first()),
        us(samples.last()),
        samples.len()
    );
}

/// Forks; the child times `install()` alone and sends the nanoseconds back.
fn install_in_child(program: &Program) -> Duration {
    let (rd, wr) = nix::unistd::pipe().expect("pipe");
    // SAFETY: the child only makes raw syscalls and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raw syscalls on stack memory.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let mut a: libc::timespec = std::mem::zeroed();
            let mut b: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut a);
            let ok = program.install().is_ok();
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut b);
            let ns: i64 = if ok {
                (b.tv_sec - a.tv_sec) * 1_000_000_000 + (b.tv_nsec - a.tv_nsec)
            } else {
                -1
            };
            libc::write(wr.as_raw_fd(), (&ns as *const i64).cast(), 8);
            libc::_exit(0);
        }
    }
    drop(wr);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(rd), &mut bytes).expect("read");
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    let ns = i64::from_ne_bytes(bytes.try_into().expect("8 bytes from the child"));
    assert!(ns >= 0, "install failed in the child");
    Duration::from_nanos(ns as u64)
}
