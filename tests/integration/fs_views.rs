//! End-to-end tests of `cgsight fs` on the real kernel: a real cgroup, a process in new pid and
//! mount namespaces that bind-mounts the views over /proc and /sys/devices/system/cpu, and real
//! procps / glibc / Python reading them. Run as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cgsight_cgroup::{CpuList, Hierarchies, Resources};
use cgsight_testkit::{
    fs_io_uring_arg, io_uring_completions, kernel_has_fuse_io_uring, require_root, unique_name,
    wait_for, ChildGuard, MountGuard, TestCgroup,
};

use crate::support::{cpu_load, BIN};

const MIB: u64 = 1 << 20;

/// A `cgsight fs --foreground` on a unique mount point; SIGTERM + detach + rmdir on drop.
struct Server {
    child: Option<ChildGuard>,
    mp: PathBuf,
    _mount: MountGuard,
}

impl Server {
    fn start() -> Server {
        Self::start_with(&[])
    }
    /// Serves with `extra`, over io_uring where the kernel has it unless `extra` says.
    fn start_with(extra: &[&str]) -> Server {
        Self::start_at(&std::env::temp_dir().join(unique_name("fs")), extra)
    }
    /// Serves at `mp` (made by the server when missing).
    fn start_at(mp: &Path, extra: &[&str]) -> Server {
        let mut args = extra.to_vec();
        if !args.contains(&"--io-uring") {
            args.extend(["--io-uring", fs_io_uring_arg()]);
        }
        let mp = mp.to_path_buf();
        let pidfile = mp.with_extension("pid");
        let child = ChildGuard::new(
            Command::new(BIN)
                .args(["fs", "--foreground", "--mountpoint"])
                .arg(&mp)
                .arg("--pidfile")
                .arg(&pidfile)
                .args(&args)
                .stdin(Stdio::null())
                .spawn()
                .expect("start cgsight fs"),
        );
        let s = Server {
            child: Some(child),
            _mount: MountGuard::new(&mp),
            mp,
        };
        wait_for("the fs to serve", Duration::from_secs(60), || {
            cgsight_fusefs::is_serving(&s.mp).then_some(())
        });
        s
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.mp.join(rel)
    }
    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.pid()),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.child().wait();
        }
        let _ = nix::mount::umount2(&self.mp, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.mp);
        let _ = std::fs::remove_file(self.mp.with_extension("pid"));
        let _ = std::fs::remove_file(self.mp.with_extension("log"));
    }
}

fn res(mem_mib: Option<u64>, quota: Option<u64>, cpus: &str) -> Resources {
    Resources {
        memory: mem_mib.map(|m| m * MIB),
        cpu_quota_us: quota,
        cpu_period_us: quota.map(|_| 100_000),
        cpuset_cpus: CpuList::parse(cpus),
        ..Default::default()
    }
}

/// Runs `script` with sh as pid 1 of new pid + mount namespaces inside `tc`, with the views
/// bound over /proc/* and /sys/devices/system/cpu. Returns stdout; panics with stderr on failure.
fn in_container(tc: &TestCgroup, s: &Server, script: &str) -> String {
    let m = s.mp.display();
    let prelude = format!(
        "set -e\nfor f in meminfo cpuinfo stat uptime loadavg diskstats swaps; do mount --bind {m}/proc/$f /proc/$f; done\nmount --bind {m}/sys/devices/system/cpu /sys/devices/system/cpu\nset +e\n"
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--fork",
        "--pid",
        "--mount",
        "--mount-proc",
        "--propagation",
        "private",
        "sh",
        "-c",
    ])
    .arg(format!("{prelude}{script}"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let out = tc.spawn(&mut cmd).into_output();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "container script failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The value after `key` on the line starting with `key`.
fn after<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no line {key:?} in\n{text}"))
        .split_ascii_whitespace()
        .collect()
}

fn num(text: &str, key: &str, i: usize) -> f64 {
    after(text, key)[i]
        .trim_end_matches(',')
        .parse()
        .unwrap_or_else(|_| panic!("field {i} of {key:?} in\n{text}"))
}

#[test]
fn free_and_top_see_the_memory_limit_and_its_usage() {
    require_root!();
    let s = Server::start();
    let tc = TestCgroup::new("fsmem", &res(Some(256), Some(150_000), "0-1"));
    let out = in_container(
        &tc,
        &s,
        "echo FREE0; free -b\necho TOP; top -b -n 1 | head -5\n\
         python3 -c '\nimport subprocess\nb = bytearray(100 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint(\"FREE1\"); print(subprocess.run([\"free\", \"-b\"], capture_output=True, text=True).stdout, flush=True)\ndel b\nprint(\"FREE2\"); print(subprocess.run([\"free\", \"-b\"], capture_output=True, text=True).stdout)\n'\n",
    );
    let section = |name: &str| -> String {
        let i = out.find(name).unwrap_or_else(|| panic!("{name} in\n{out}"));
        out[i..].to_owned()
    };
    let f0 = section("FREE0");
    assert_eq!(num(&f0, "Mem:", 0) as u64, 268435456, "{out}");
    let top = section("TOP");
    let mem_line = top
        .lines()
        .find(|l| l.contains("Mem :"))
        .expect("top Mem line");
    assert!(mem_line.contains("256.0 total"), "{mem_line}");
    let used0 = num(&f0, "Mem:", 1);
    let used1 = num(&section("FREE1"), "Mem:", 1);
    let used2 = num(&section("FREE2"), "Mem:", 1);
    assert!(
        used1 >= used0 + 90.0 * MIB as f64,
        "used did not grow by 100 MiB: {out}"
    );
    assert!(
        used2 <= used1 - 90.0 * MIB as f64,
        "used did not shrink: {out}"
    );
}

fn cpu_counts(s: &Server, r: Resources) -> Vec<String> {
    let tc = TestCgroup::new("fscpu", &r);
    let out = in_container(
        &tc,
        s,
        "grep -c ^processor /proc/cpuinfo\ngrep -c '^cpu[0-9]' /proc/stat\ngetconf _NPROCESSORS_ONLN\n\
         getconf _NPROCESSORS_CONF\npython3 -c 'import os; print(os.cpu_count())'\n\
         ls -d /sys/devices/system/cpu/cpu[0-9]* | wc -l\ncat /sys/devices/system/cpu/online\n",
    );
    out.lines().map(str::to_owned).collect()
}

#[test]
fn every_cpu_count_agrees() {
    require_root!();
    let s = Server::start();
    assert_eq!(
        cpu_counts(&s, res(Some(256), Some(150_000), "0-1")),
        ["2", "2", "2", "2", "2", "2", "0-1"]
    );
    assert_eq!(
        cpu_counts(&s, res(Some(256), Some(50_000), "0-1")),
        ["1", "1", "1", "1", "1", "1", "0"]
    );
    assert_eq!(
        cpu_counts(&s, res(None, None, "1")),
        ["1", "1", "1", "1", "1", "1", "0"]
    );
}

#[test]
fn cpuset_view_ignores_the_quota() {
    require_root!();
    let s = Server::start_with(&["--cpu-view", "cpuset"]);
    assert_eq!(
        cpu_counts(&s, res(Some(256), Some(50_000), "0-1")),
        ["2", "2", "2", "2", "2", "2", "0-1"]
    );
}

#[test]
fn busy_loop_at_full_quota_is_busy_and_stat_never_decreases() {
    require_root!();
    let _cpu = cpu_load();
    let s = Server::start();
    let tc = TestCgroup::new("fsbusy", &res(Some(256), Some(100_000), "0"));
    let out = in_container(
        &tc,
        &s,
        "sh -c 'while :; do :; done' & P=$!\n\
         top -b -n 2 -d 1 | grep '^%Cpu' | tail -1\n\
         python3 -c '\nlast = None\nfor i in range(100):\n    with open(\"/proc/stat\") as f:\n        v = [list(map(int, l.split()[1:])) for l in f if l.startswith(\"cpu\")]\n    if last is not None:\n        for a, b in zip(last, v):\n            for x, y in zip(a, b):\n                assert y >= x, (last, v)\n    last = v\nprint(\"MONOTONIC\", len(v))\n'\nkill $P\n",
    );
    let cpu = out
        .lines()
        .find(|l| l.starts_with("%Cpu"))
        .expect("top %Cpu line");
    // "%Cpu(s): 99.0 us,  1.0 sy,  0.0 ni,  0.0 id,  0.0 wa,  0.0 hi,  0.0 si,  0.0 st"
    let field = |name: &str| -> f64 {
        let body = cpu.split_once(':').expect("colon").1;
        body.split(',')
            .find_map(|p| {
                p.trim()
                    .strip_suffix(name)
                    .map(|v| v.trim().parse().expect("number"))
            })
            .unwrap_or_else(|| panic!("{name} in {cpu}"))
    };
    // Contention from outside the container is shown as steal, not idle.
    assert!(field("us") + field("st") >= 90.0, "{cpu}");
    assert!(field("id") <= 10.0, "{cpu}");
    assert!(out.contains("MONOTONIC 2"), "{out}");
}

#[test]
fn uptime_is_the_containers_age_and_loadavg_rises_under_load() {
    require_root!();
    let _cpu = cpu_load();
    let s = Server::start();
    let tc = TestCgroup::new("fsload", &res(Some(256), Some(100_000), "0"));
    let out = in_container(
        &tc,
        &s,
        "echo UPTIME $(cat /proc/uptime)\nuptime\nsh -c 'while :; do :; done' & P=$!\n\
         for i in $(seq 1 60); do l=$(cut -d' ' -f1 /proc/loadavg); if [ \"$l\" != 0.00 ]; then echo LOAD $(cat /proc/loadavg); break; fi; sleep 0.5; done\nkill $P\n",
    );
    let up = num(&out, "UPTIME", 0);
    let host_up: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        up < 10.0 && up < host_up,
        "container uptime {up} (host {host_up})\n{out}"
    );
    assert!(out.contains(" up 0 min"), "{out}");
    let load = after(&out, "LOAD");
    assert!(load[0].parse::<f64>().unwrap() > 0.0, "{out}");
    // last pid is in the container's numbering (a handful of processes), never a host pid
    let last_pid: u64 = load[4].parse().unwrap();
    assert!(last_pid < 1000, "{out}");
    let (run, total) = load[3].split_once('/').unwrap();
    assert!(
        run.parse::<u64>().unwrap() >= 1 && total.parse::<u64>().unwrap() >= 2,
        "{out}"
    );
}

#[test]
fn chunked_reads_return_one_snapshot() {
    require_root!();
    let _cpu = cpu_load();
    let s = Server::start();
    let tc = TestCgroup::new("fschunk", &res(Some(256), Some(200_000), "0-1"));
    let out = in_container(
        &tc,
        &s,
        "sh -c 'while :; do :; done' & P=$!\n\
         python3 -c '\nimport os, time\ndef chunked(path, n):\n    fd = os.open(path, os.O_RDONLY)\n    parts = []\n    while True:\n        b = os.read(fd, n)\n        if not b: break\n        parts.append(b)\n        time.sleep(0.2)\n    os.close(fd)\n    return b\"\".join(parts).decode(), len(parts)\nm, k = chunked(\"/proc/meminfo\", 1024)\nassert k >= 2, k\nassert m == m.rstrip(\"\\n\") + \"\\n\"\nassert sum(l.startswith(\"MemTotal:\") for l in m.splitlines()) == 1\nt, k = chunked(\"/proc/stat\", 64)\nassert k >= 3, k\ncpus = [list(map(int, l.split()[1:])) for l in t.splitlines() if l.startswith(\"cpu\")]\nassert [sum(c) for c in zip(*cpus[1:])] == cpus[0], cpus\n# re-reading from offset 0 on the same fd regenerates\nfd = os.open(\"/proc/uptime\", os.O_RDONLY)\na = os.read(fd, 100); time.sleep(0.3); os.lseek(fd, 0, 0); b = os.read(fd, 100)\nassert a != b, (a, b)\nprint(\"CONSISTENT\")\n'\nkill $P\n",
    );
    assert!(out.contains("CONSISTENT"), "{out}");
}

#[test]
fn a_host_reader_in_no_limited_cgroup_gets_the_host_files() {
    require_root!();
    let s = Server::start();
    let tc = TestCgroup::new("fshost", &Resources::default());
    let read_via = |rel: &str| -> String {
        let out = tc
            .spawn(Command::new("cat").arg(s.path(rel)).stdout(Stdio::piped()))
            .into_output();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    for (rel, host) in [
        ("proc/cpuinfo", "/proc/cpuinfo"),
        ("proc/swaps", "/proc/swaps"),
        (
            "sys/devices/system/cpu/online",
            "/sys/devices/system/cpu/online",
        ),
        (
            "sys/devices/system/cpu/possible",
            "/sys/devices/system/cpu/possible",
        ),
        (
            "sys/devices/system/cpu/present",
            "/sys/devices/system/cpu/present",
        ),
    ] {
        assert_eq!(
            read_via(rel),
            std::fs::read_to_string(host).unwrap(),
            "{rel}"
        );
    }
    let keys = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split([':', ' ']).next().unwrap().to_owned())
            .collect()
    };
    let m = read_via("proc/meminfo");
    let hm = std::fs::read_to_string("/proc/meminfo").unwrap();
    assert_eq!(keys(&m), keys(&hm));
    assert_eq!(after(&m, "MemTotal:"), after(&hm, "MemTotal:"));
    let st = read_via("proc/stat");
    let hst = std::fs::read_to_string("/proc/stat").unwrap();
    assert_eq!(keys(&st), keys(&hst));
    assert_eq!(after(&st, "btime"), after(&hst, "btime"));
    assert_eq!(after(&st, "intr").len(), after(&hst, "intr").len());
    let up = num(&read_via("proc/uptime"), "", 0);
    let hup = num(&std::fs::read_to_string("/proc/uptime").unwrap(), "", 0);
    assert!((hup - up).abs() < 5.0, "{up} vs {hup}");

    // The same host-namespace reader in a limited cgroup gets its own cgroup's view.
    let lim = TestCgroup::new("fshostlim", &res(Some(128), None, "0-1"));
    let out = lim
        .spawn(
            Command::new("cat")
                .arg(s.path("proc/meminfo"))
                .stdout(Stdio::piped()),
        )
        .into_output();
    let m = String::from_utf8(out.stdout).unwrap();
    assert_eq!(after(&m, "MemTotal:")[0], "131072", "{m}");
}

#[test]
fn nested_limits_an_ancestor_wins_a_descendant_does_not() {
    require_root!();
    let s = Server::start();
    let h = Hierarchies::detect().unwrap();
    let top = format!("/{}", unique_name("fsnest"));
    let parent = TestCgroup::at(&h, &top, &res(Some(200), None, "0-1"));
    let root = TestCgroup::at(&h, &format!("{top}/ct"), &res(Some(300), None, "0-1"));
    let below = TestCgroup::at(&h, &format!("{top}/ct/sub"), &res(Some(100), None, "0-1"));
    // cgroup v2 allows processes only in leaves once children have controllers, so the
    // container's init lives in `ct/init.scope`, as systemd puts it; the views strip that.
    let init = TestCgroup::at(&h, &format!("{top}/ct/init.scope"), &res(None, None, "0-1"));
    let procs: Vec<String> = below
        .managed
        .dirs()
        .iter()
        .map(|d| d.join("cgroup.procs").display().to_string())
        .collect();
    let out = in_container(
        &init,
        &s,
        &format!(
            "echo ROOT $(grep MemTotal /proc/meminfo)\nsh -c 'for f in {}; do echo 0 > $f; done; echo SUB $(grep MemTotal /proc/meminfo)'\n",
            procs.join(" ")
        ),
    );
    assert_eq!(after(&out, "ROOT MemTotal:")[0], "204800", "{out}");
    assert_eq!(after(&out, "SUB MemTotal:")[0], "204800", "{out}");
    drop(init);
    drop(below);
    drop(root);
    drop(parent);
}

#[test]
fn second_instance_refuses_and_stale_mount_is_replaced() {
    require_root!();
    let s = Server::start();
    let out = Command::new(BIN)
        .args(["fs", "--mountpoint"])
        .arg(&s.mp)
        .arg("--pidfile")
        .arg(s.mp.with_extension("pid2"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already"),
        "{out:?}"
    );

    // Kill the server hard: the mount is left dead (ENOTCONN; over io_uring ECONNABORTED, or
    // ECANCELED while the kernel still tears the dead server's rings down — seen once in CI),
    // and a new server replaces it.
    let mp = s.mp.clone();
    let mut s = s;
    if let Some(mut c) = s.child.take() {
        let _ = c.child().kill();
        let _ = c.child().wait();
    }
    let e = std::fs::read(mp.join("proc/uptime")).unwrap_err();
    assert!(
        matches!(
            e.raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED)
        ),
        "{e}"
    );
    let pidfile = mp.with_extension("pid3");
    let st = Command::new(BIN)
        .args(["fs", "--mountpoint"])
        .arg(&mp)
        .arg("--pidfile")
        .arg(&pidfile)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(cgsight_fusefs::is_serving(&mp));
    // SIGTERM unmounts cleanly.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for("the daemon to unmount", Duration::from_secs(10), || {
        (!std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(mp.to_str().unwrap()))
        .then_some(())
    });
    wait_for("the daemon to exit", Duration::from_secs(10), || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    let _ = std::fs::remove_file(mp.with_extension("pid2"));
}

/// `cgsight fs` leaves the directory tree as it found it: a mount point it made goes with the
/// unmount (a test binary's views used to leave one empty directory per run in /tmp), one it
/// found stays.
#[test]
fn a_mount_point_it_made_is_removed_on_unmount() {
    require_root!();
    // SIGTERM, wait for the exit, and say whether the mount point is still there.
    let stop = |mut s: Server| {
        let mut c = s.child.take().expect("server");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        assert!(c.wait_timeout(Duration::from_secs(30)).success());
        s.mp.exists()
    };
    assert!(!stop(Server::start()), "a mount point it made is removed");
    let found = std::env::temp_dir().join(unique_name("fs-found"));
    std::fs::create_dir(&found).expect("mkdir");
    assert!(stop(Server::start_at(&found, &[])), "one it found stays");
    let _ = std::fs::remove_dir(&found);
}

/// Both transports serve the same views. Where the kernel has FUSE over io_uring, the requests
/// of a container's reads must travel over the server's rings (the kernel's own completion
/// counters in fdinfo say so); without it (the 6.1 VM lanes) `--io-uring on` must refuse with a
/// clear message and leave no mount. `--io-uring off` holds no ring and serves over /dev/fuse.
#[test]
fn io_uring_carries_the_requests_and_dev_fuse_serves_the_same_views() {
    require_root!();
    let tc = TestCgroup::new("fsuring", &res(Some(256), Some(150_000), "0-1"));
    let script = "for i in $(seq 60); do cat /proc/meminfo /proc/uptime >/dev/null; done\n\
                  free -b | awk '/^Mem:/ {print \"TOTAL\", $2}'\n\
                  echo CPUS $(grep -c ^processor /proc/cpuinfo) $(getconf _NPROCESSORS_CONF)\n";
    let check = |out: &str| {
        assert_eq!(after(out, "TOTAL"), ["268435456"], "{out}");
        assert_eq!(after(out, "CPUS"), ["2", "2"], "{out}");
    };
    if kernel_has_fuse_io_uring() {
        let s = Server::start_with(&["--io-uring", "on"]);
        let before = io_uring_completions(s.pid()).expect("the server holds io_uring rings");
        check(&in_container(&tc, &s, script));
        let after = io_uring_completions(s.pid()).unwrap_or(0);
        // 120 opens, each an OPEN, a READ, a READ at EOF and a RELEASE.
        assert!(
            after.saturating_sub(before) >= 360,
            "only {} io_uring completions for 120 open+read+close",
            after.saturating_sub(before)
        );
    } else {
        let mp = std::env::temp_dir().join(unique_name("fsnouring"));
        let _guard = MountGuard::new(&mp);
        let out = Command::new(BIN)
            .args(["fs", "--foreground", "--io-uring", "on", "--mountpoint"])
            .arg(&mp)
            .arg("--pidfile")
            .arg(mp.with_extension("pid"))
            .stdin(Stdio::null())
            .output()
            .expect("run cgsight fs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("no FUSE over io_uring"), "{err}");
        assert!(!cgsight_fusefs::is_serving(&mp));
        assert!(
            !mp.exists(),
            "the mount point it made is removed after a failed start"
        );
    }
    let d = Server::start_with(&["--io-uring", "off"]);
    assert_eq!(
        io_uring_completions(d.pid()),
        None,
        "--io-uring off holds no ring"
    );
    check(&in_container(&tc, &d, script));
}
