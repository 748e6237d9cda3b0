//! Real clients inside `cgsight launch` containers (views on): procps `ps`, `top`, `vmstat`,
//! util-linux `lscpu` and Python's psutil read the container's values, each compared with the
//! container's own cgroup files or clocks, not only with the host's.

use std::time::{SystemTime, UNIX_EPOCH};

use cgsight_testkit::{require_root, unique_name};

use crate::support::*;

/// `launch --rm FLAGS -- sh -c SCRIPT` with the test binary's views; its stdout, checked to
/// have succeeded and to leave nothing behind.
fn launch_sh(flags: &[&str], script: &str) -> String {
    let name = unique_name("clients");
    let _g = Ctr::named(&name);
    let mut args = vec!["launch", "--rm", "--name", &name];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let o = cgsight(&args);
    no_container_named(&name);
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "launch failed: {:?}\n{out}\n{}",
        o.status,
        stderr(&o)
    );
    out
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The number after `key` on the line starting with `key`.
fn value(out: &str, key: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.split_ascii_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?} in\n{out}"))
}

/// `total=` of the `some` line of a PSI file's text.
fn psi_some_total(text: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with("some "))
        .and_then(|l| {
            l.split_ascii_whitespace()
                .find_map(|f| f.strip_prefix("total="))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no some total in\n{text}"))
}

/// The container's own cgroup files, v1 hybrid or v2 (it sees its cgroup at the root).
const CG: &str = "if [ -f /sys/fs/cgroup/unified/cpu.pressure ]; then U=/sys/fs/cgroup/unified; else U=/sys/fs/cgroup; fi\n\
    if [ -f /sys/fs/cgroup/memory/memory.stat ]; then MS=/sys/fs/cgroup/memory/memory.stat; PF=total_pgfault; else MS=/sys/fs/cgroup/memory.stat; PF=pgfault; fi\n";

#[test]
fn process_start_and_boot_time_are_the_launch_time() {
    require_root!();
    let t0 = now_secs();
    let out = launch_sh(
        &["--memory", "256m", "--cpus", "1"],
        "echo START $(date -d \"$(ps -o lstart= -p 1)\" +%s)\n\
         echo BOOT $(/usr/bin/python3 -c 'import psutil; print(int(psutil.boot_time()))')\n",
    );
    let t1 = now_secs();
    // ps adds pid 1's start (counted from the container's boot) to btime: a host btime would
    // put it the host's uptime early.
    for key in ["START ", "BOOT "] {
        let v = value(&out, key);
        assert!(
            v >= t0.floor() - 1.0 && v <= t1 && v - t0 <= 2.0,
            "{key}{v} not within 2 s of the launch at {t0:.1} (returned {t1:.1})\n{out}"
        );
    }
}

#[test]
fn pressure_is_the_containers_psi() {
    require_root!();
    // Per-cgroup PSI lives in cgroup2; a legacy v1 host (no cgroup2 mounted) has none to show.
    let h = cgsight_cgroup::Hierarchies::detect().expect("cgroup layout");
    if h.unified().is_none() {
        eprintln!("skipped: no cgroup2 on this host, so no per-container PSI");
        return;
    }
    let out = launch_sh(
        &["--memory", "256m", "--cpus", "1.5"],
        &format!(
            "{CG}sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done' & sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'; wait\n\
             echo BEFORE; cat $U/cpu.pressure; echo VIEW; cat /proc/pressure/cpu; echo AFTER; cat $U/cpu.pressure\n"
        ),
    );
    let part = |from: &str, to: Option<&str>| {
        let rest = out.split_once(from).map_or("", |x| x.1);
        to.and_then(|t| rest.split_once(t).map(|x| x.0))
            .unwrap_or(rest)
            .to_owned()
    };
    let before = psi_some_total(&part("BEFORE\n", Some("VIEW\n")));
    let view = psi_some_total(&part("VIEW\n", Some("AFTER\n")));
    let after = psi_some_total(&part("AFTER\n", None));
    assert!(
        before <= view && view <= after,
        "the view's cpu some total {view} is not the cgroup's ({before}..{after})\n{out}"
    );
    let host = psi_some_total(&std::fs::read_to_string("/proc/pressure/cpu").expect("host psi"));
    assert!(view < host, "view {view} vs host {host}");
}

#[test]
fn lscpu_sees_a_consistent_machine_of_the_views_cpus() {
    require_root!();
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (cpus, want) in [("1", 1), ("1.5", host_cpus.min(2))] {
        let out = launch_sh(
            &["--cpus", cpus],
            "lscpu; echo PROCESSORS $(grep -c ^processor /proc/cpuinfo)",
        );
        let n = value(&out, "CPU(s):");
        assert_eq!(n as usize, want, "--cpus {cpus}\n{out}");
        assert_eq!(n, value(&out, "PROCESSORS "), "{out}");
        let threads = value(&out, "Thread(s) per core:");
        let cores = value(&out, "Core(s) per socket:");
        let sockets = value(&out, "Socket(s):");
        assert!(threads >= 1.0 && cores >= 1.0 && sockets >= 1.0, "{out}");
        assert_eq!(threads * cores * sockets, n, "{out}");
        // caches come from the mirrored cache/indexK directories
        if std::path::Path::new("/sys/devices/system/cpu/cpu0/cache/index0").exists() {
            assert!(out.contains("L1d cache:"), "{out}");
        }
    }
}

#[test]
fn vmstat_is_the_containers() {
    require_root!();
    let out = launch_sh(
        &["--memory", "256m", "--cpus", "1"],
        &format!(
            "{CG}echo BEFORE $(grep \"^$PF \" $MS | cut -d' ' -f2)\n\
             echo VIEW $(grep '^pgfault ' /proc/vmstat | cut -d' ' -f2)\n\
             echo AFTER $(grep \"^$PF \" $MS | cut -d' ' -f2)\n\
             vmstat 1 2 | sed -n 3p | sed 's/^/FIRST /'\n"
        ),
    );
    let (before, view, after) = (
        value(&out, "BEFORE "),
        value(&out, "VIEW "),
        value(&out, "AFTER "),
    );
    assert!(
        before <= view && view <= after,
        "pgfault {view} is not the cgroup's ({before}..{after})\n{out}"
    );
    // r b swpd free buff cache si so bi bo in cs us sy id wa st: a fresh container has read
    // and written next to nothing (bi/bo are KiB/s since its start).
    let first: Vec<f64> = out
        .lines()
        .find_map(|l| l.strip_prefix("FIRST "))
        .expect("vmstat's first line")
        .split_ascii_whitespace()
        .map(|v| v.parse().expect("number"))
        .collect();
    let (bi, bo) = (first[8], first[9]);
    assert!(bi < 5000.0 && bo < 5000.0, "bi {bi} bo {bo}\n{out}");
}

/// top's `%Cpu(s)` field `name` (us, id, st…) in the second frame.
fn top_field(out: &str, name: &str) -> f64 {
    let cpu = out
        .lines()
        .rfind(|l| l.starts_with("%Cpu"))
        .unwrap_or_else(|| panic!("no %Cpu line in\n{out}"));
    cpu.split_once(':')
        .map_or("", |x| x.1)
        .split(',')
        .find_map(|p| p.trim().strip_suffix(name).map(|v| v.trim().parse().ok()))
        .flatten()
        .unwrap_or_else(|| panic!("{name} in {cpu}"))
}

#[test]
fn top_at_full_quota_is_not_idle() {
    require_root!();
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut shapes = vec![("1", 1)];
    if host_cpus >= 2 {
        shapes.push(("1.5", 2));
    }
    for (cpus, loops) in shapes {
        let out = launch_sh(
            &["--cpus", cpus],
            &format!(
                "P=; for i in $(seq {loops}); do sh -c 'while :; do :; done' & P=\"$P $!\"; done\n\
                 grep -c ^processor /proc/cpuinfo | sed 's/^/VISIBLE /'\n\
                 sleep 2\ntop -b -n 2 -d 1 | grep '^%Cpu'\nkill $P\n"
            ),
        );
        assert_eq!(value(&out, "VISIBLE ") as usize, loops, "{out}");
        let idle = top_field(&out, "id");
        // Under TCG emulation (the VM lanes set CGSIGHT_VM) the guest's vCPUs lose wall time
        // whenever the host deschedules them, which the guest cannot see as throttling or
        // waiting; the strict bound is the host lane's.
        let bound = if std::env::var_os("CGSIGHT_VM").is_some() {
            30.0
        } else {
            5.0
        };
        assert!(
            idle <= bound,
            "--cpus {cpus}, {loops} loops: idle {idle}\n{out}"
        );
        assert!(top_field(&out, "us") > 0.0, "{out}");
    }
}

#[test]
fn top_at_half_quota_is_about_half_idle() {
    require_root!();
    // One CPU's quota, half used by a 50 ms busy / 50 ms asleep loop; the container's own CPU
    // counter, read around top, says how busy it really was.
    let out = launch_sh(
        &["--cpus", "1"],
        // v1's cpuacct may be co-mounted with cpu (`cpu,cpuacct`, a legacy host's layout).
        "F=$(ls /sys/fs/cgroup/*cpuacct*/cpuacct.usage 2>/dev/null | head -n1)\n\
         if [ -n \"$F\" ]; then u() { echo $(( $(cat \"$F\") / 1000 )); }\n\
         else u() { sed -n 's/^usage_usec //p' /sys/fs/cgroup/cpu.stat; }; fi\n\
         python3 -c 'import time\nwhile True:\n t=time.monotonic()\n while time.monotonic()-t<0.05: pass\n time.sleep(0.05)' &\n\
         P=$!\nsleep 2\n\
         grep -c ^processor /proc/cpuinfo | sed 's/^/VISIBLE /'\n\
         U0=$(u); T0=$(date +%s%N)\n\
         top -b -n 2 -d 1 | grep '^%Cpu'\n\
         U1=$(u); T1=$(date +%s%N)\n\
         [ -n \"$U0\" ] && [ -n \"$U1\" ] && echo BUSY $(( (U1 - U0) * 100000 / (T1 - T0) ))\n\
         kill $P\n",
    );
    assert_eq!(value(&out, "VISIBLE "), 1.0, "{out}");
    let busy = value(&out, "BUSY ");
    let idle = top_field(&out, "id");
    // The host's top would show two CPUs, so ~75 % idle beside a half-busy container here.
    // Under emulation top itself (reading every /proc/PID) and the loop's late wake-ups add to
    // the container's use: a v2 lane on a loaded host measured 88 %, with top rightly at 0 idle.
    let (slack, most) = if std::env::var_os("CGSIGHT_VM").is_some() {
        (30.0, 95.0)
    } else {
        (20.0, 80.0)
    };
    assert!(
        (20.0..=most).contains(&busy) && (idle - (100.0 - busy)).abs() <= slack,
        "busy {busy} % of the quota, top idle {idle}\n{out}"
    );
}
