//! sysinfo(2) inside a container: answered by the supervisor through the seccomp listener with
//! the same numbers as the /proc views (limit, free memory, tasks, age, load), and the host's
//! again when the views are off or the filter is (`--no-proc-views`, `seccomp=unconfined`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use cgsight_testkit::{require_root, unique_name, ChildGuard};

use crate::support::{cgsight, cpu_load, stderr, stdout, Ctr};

/// A C program printing `struct sysinfo` and, right after the call, what the container's own
/// /proc says (threads, uptime, meminfo), one `key=value` a line.
const PROBE: &str = r#"
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysinfo.h>
static long threads(void) {
    long n = 0; DIR *p = opendir("/proc"); struct dirent *e;
    if (!p) return -1;
    while ((e = readdir(p))) {
        char path[300]; DIR *t; struct dirent *f;
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/task", e->d_name);
        if (!(t = opendir(path))) continue;
        while ((f = readdir(t))) if (f->d_name[0] >= '0' && f->d_name[0] <= '9') n++;
        closedir(t);
    }
    closedir(p);
    return n;
}
int main(void) {
    struct sysinfo s; char line[256]; double age = -1; FILE *f;
    if (sysinfo(&s)) { perror("sysinfo"); return 1; }
    printf("totalram=%lu\nfreeram=%lu\nsharedram=%lu\nbufferram=%lu\ntotalswap=%lu\nfreeswap=%lu\n",
           s.totalram, s.freeram, s.sharedram, s.bufferram, s.totalswap, s.freeswap);
    printf("unit=%u\nprocs=%u\nuptime=%ld\nload1=%lu\n", s.mem_unit, s.procs, s.uptime, s.loads[0]);
    printf("threads=%ld\n", threads());
    if ((f = fopen("/proc/uptime", "r"))) { if (fscanf(f, "%lf", &age) != 1) age = -1; fclose(f); }
    printf("age=%.2f\n", age);
    if ((f = fopen("/proc/meminfo", "r"))) {
        while (fgets(line, sizeof line, f)) {
            unsigned long v;
            if (sscanf(line, "MemFree: %lu", &v) == 1) printf("memfree_kb=%lu\n", v);
            if (sscanf(line, "SwapTotal: %lu", &v) == 1) printf("swaptotal_kb=%lu\n", v);
        }
        fclose(f);
    }
    return 0;
}
"#;

/// A temporary directory with the compiled probe, removed on drop.
struct Probe(PathBuf);

impl Probe {
    fn build() -> Probe {
        let dir = std::env::temp_dir().join(unique_name("sysinfo"));
        std::fs::create_dir_all(&dir).expect("probe dir");
        let p = Probe(dir);
        std::fs::write(p.0.join("si.c"), PROBE).expect("write si.c");
        let out = Command::new("gcc")
            .args(["-O2", "-o"])
            .arg(p.0.join("si"))
            .arg(p.0.join("si.c"))
            .output()
            .expect("gcc");
        assert!(out.status.success(), "gcc: {}", stderr(&out));
        p
    }

    fn volume(&self) -> String {
        format!("{}:/si", self.0.display())
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `launch --rm FLAGS -v probe:/si -- sh -c SCRIPT` in the foreground; its stdout.
fn run(probe: &Probe, flags: &[&str], script: &str) -> String {
    let c = Ctr::named(&unique_name("sysinfo"));
    let vol = probe.volume();
    let mut args = vec!["launch", "--rm", "--name", &c.name, "-v", &vol];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let out = cgsight(&args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// The probe's `key=value` lines (and any other `KEY value` lines the script printed).
fn values(out: &str) -> HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('=').or_else(|| l.split_once(' ')))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn num(v: &HashMap<String, String>, k: &str, out: &str) -> f64 {
    v.get(k)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{k} missing in\n{out}"))
}

fn host_sysinfo() -> libc::sysinfo {
    // SAFETY: sysinfo fills the struct we own.
    let mut s: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::sysinfo(&mut s) }, 0);
    s
}

/// `busybox free -b`'s Mem total.
fn free_total(out: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix("Mem:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no Mem: line in\n{out}"))
}

// The first probe's count must not be what the second one reports: procs is counted per call.
const SCRIPT: &str = "sleep 30 & A=$!; /si/si >/dev/null; sleep 30 & B=$!; /si/si; busybox free -b; \
     /usr/bin/python3 -c 'import os; print(\"PHYS\", os.sysconf(\"SC_PHYS_PAGES\") * os.sysconf(\"SC_PAGE_SIZE\"))'; \
     /usr/bin/python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); r = l.sysinfo(None); print(\"BADPTR\", r, ctypes.get_errno())'; \
     kill $A $B";

#[test]
fn sysinfo_answers_the_containers_limit_tasks_and_age() {
    require_root!();
    let probe = Probe::build();
    let cases: [(&[&str], f64); 2] = [
        (
            &["--memory", "256m", "--cpus", "1.5"],
            (256u64 << 20) as f64,
        ),
        (
            &["--memory", "512m", "--cpus", "0.5", "--cpuset-cpus", "0"],
            (512u64 << 20) as f64,
        ),
    ];
    for (flags, limit) in cases {
        let out = run(&probe, flags, SCRIPT);
        let v = values(&out);
        let n = |k: &str| num(&v, k, &out);
        let unit = n("unit");
        assert_eq!(n("totalram") * unit, limit, "{flags:?}\n{out}");
        assert_eq!(free_total(&out), limit, "busybox free, {flags:?}\n{out}");
        assert_eq!(n("PHYS"), limit, "SC_PHYS_PAGES, {flags:?}\n{out}");
        // sh, two sleeps and the probe: the container's threads, counted in its /proc.
        assert_eq!(n("procs"), n("threads"), "{flags:?}\n{out}");
        assert_eq!(n("procs"), 4.0, "{flags:?}\n{out}");
        // The kernel's rounding: a started second counts.
        let (up, age) = (n("uptime"), n("age"));
        assert!(
            up < 60.0 && up >= age.floor() && up <= age.ceil() + 1.0,
            "uptime {up} vs /proc/uptime {age}, {flags:?}\n{out}"
        );
        // MemFree moves a little between the two reads; a page cache's worth at most.
        let free = n("freeram") * unit;
        let view_free = n("memfree_kb") * 1024.0;
        assert!(
            (free - view_free).abs() <= (4u64 << 20) as f64 && free <= limit,
            "freeram {free} vs MemFree {view_free}, {flags:?}\n{out}"
        );
        assert_eq!(
            n("totalswap") * unit,
            n("swaptotal_kb") * 1024.0,
            "{flags:?}\n{out}"
        );
        assert_eq!(n("bufferram"), 0.0, "{out}");
        // A bad pointer: the write fails, the kernel's own call answers EFAULT (no hang).
        assert_eq!(v.get("BADPTR").map(String::as_str), Some("-1 14"), "{out}");
    }
}

#[test]
fn with_the_views_or_the_filter_off_sysinfo_is_the_hosts() {
    require_root!();
    let probe = Probe::build();
    let host = host_sysinfo();
    let host_total = host.totalram as f64 * host.mem_unit as f64;
    for off in [
        &["--no-proc-views"][..],
        &["--security-opt", "seccomp=unconfined"][..],
    ] {
        let mut flags = vec!["--memory", "256m", "--cpus", "1.5"];
        flags.extend_from_slice(off);
        let out = run(&probe, &flags, SCRIPT);
        let v = values(&out);
        let n = |k: &str| num(&v, k, &out);
        assert_eq!(n("totalram") * n("unit"), host_total, "{off:?}\n{out}");
        assert_eq!(free_total(&out), host_total, "{off:?}\n{out}");
        assert!(n("procs") > n("threads"), "{off:?}\n{out}");
    }
}

/// Busy loops on the host (outside any container), killed on drop.
fn host_busy(n: usize) -> Vec<ChildGuard> {
    (0..n)
        .map(|_| {
            let c = Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .spawn()
                .expect("busy loop");
            ChildGuard::new(c)
        })
        .collect()
}

fn loadavg_of(out: &str) -> [f64; 3] {
    let l: Vec<f64> = out
        .lines()
        .find_map(|l| l.strip_prefix("LOAD "))
        .unwrap_or_else(|| panic!("no LOAD line in\n{out}"))
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    [l[0], l[1], l[2]]
}

/// sysinfo's raw 1-minute load (fixed point, 16 bits of fraction) from the RAW line.
fn raw_load1(out: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix("RAW "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no RAW line in\n{out}"))
        / 65536.0
}

#[test]
fn getloadavg_is_the_containers_on_a_busy_host() {
    require_root!();
    let _cpu = cpu_load();
    let probe = Probe::build();
    let _busy = host_busy(2);
    // glibc's getloadavg, then sysinfo's raw loads through ctypes, back to back in one process
    // (a sampling step between two processes' reads would make them differ).
    let read = "import os, ctypes, struct, time\n\
                time.sleep(float(os.environ.get(\"WAIT\", \"0\")))\n\
                la = os.getloadavg()\n\
                b = ctypes.create_string_buffer(256)\n\
                ctypes.CDLL(None).sysinfo(b)\n\
                print(\"LOAD\", *la)\n\
                print(\"RAW\", *struct.unpack_from(\"3L\", b, 8))";
    let py = format!("/usr/bin/python3 -c '{read}'");
    // Three 5-second samples of the supervisor's sampler. The idle reader starts Python first
    // and sleeps in it: its start-up (seconds under emulation) is then the only work a sample
    // can catch, not one that lands just before the read.
    let idle = format!("WAIT=16 {py}");
    let busy = format!("sh -c 'while :; do :; done' & P=$!; sleep 16; {py}; kill $P");
    let flags = ["--memory", "256m", "--cpus", "1.5"];
    let mut off = flags.to_vec();
    off.push("--no-proc-views");
    let (o_idle, o_busy, o_off) = std::thread::scope(|s| {
        let a = s.spawn(|| run(&probe, &flags, &idle));
        let b = s.spawn(|| run(&probe, &flags, &busy));
        let c = s.spawn(|| run(&probe, &off, &idle));
        let j = |h: std::thread::ScopedJoinHandle<'_, String>| h.join().expect("launch thread");
        (j(a), j(b), j(c))
    });
    let host = host_sysinfo().loads[0] as f64 / 65536.0;
    assert!(host > 0.5, "the host is busy: load {host}");
    // Idle: 0 on a quiet run; at most the reader's own start-up caught by one sample (one task
    // for one step: 1 - 1884/2048 = 0.08) when starting Python is slow (emulated CPUs).
    let one_step = 1.0 - 1884.0 / 2048.0;
    let l_idle = loadavg_of(&o_idle);
    assert!(
        l_idle.iter().all(|l| *l <= one_step + 1e-3),
        "idle container: {l_idle:?}\n{o_idle}"
    );
    // glibc's getloadavg is sysinfo's loads.
    assert!((raw_load1(&o_idle) - l_idle[0]).abs() < 1e-3, "{o_idle}");
    // One busy thread for three samples: 1 - (1884/2048)^3 ≈ 0.22.
    let l_busy = loadavg_of(&o_busy);
    assert!(
        l_busy[0] > 2.0 * one_step && l_busy[0] < 1.0,
        "busy container\n{o_busy}"
    );
    assert!((raw_load1(&o_busy) - l_busy[0]).abs() < 1e-3, "{o_busy}");
    // Views off: the host's load (which moves a little between the two reads).
    let l_off = loadavg_of(&o_off);
    assert!(
        l_off[0] > 0.5 && (l_off[0] - host).abs() < host.max(1.0) * 0.5,
        "--no-proc-views: {l_off:?} vs host {host}\n{o_off}"
    );
}
