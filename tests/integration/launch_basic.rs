//! End-to-end tests of `cgsight launch` on the real kernel (root).

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;
use cgsight_testkit::{require_root, unique_name, wait_for, ChildGuard, TempDir};

/// Launches with --rm, returns (exit code, stdout, stderr) and asserts nothing remains.
fn run_rm(name: &str, flags: &[&str], cmd: &str) -> (i32, String, String) {
    let _g = Ctr::named(name);
    let mut args = vec!["launch", "--rm", "--name", name];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "sh", "-c", cmd]);
    let o = cgsight(&args);
    no_container_named(name);
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mi.contains("/var/lib/cgsight/containers/"),
        "a container mount leaked to the host"
    );
    (o.status.code().unwrap_or(-1), stdout(&o), stderr(&o))
}

#[test]
fn limits_show_in_top_free_nproc_cpuinfo() {
    require_root!();
    let n = unique_name("views");
    let (code, out, err) = run_rm(
        &n,
        &["--memory", "256m", "--cpus", "1"],
        "top -b -n 1 | head -5; echo ---; free -m; echo ---; nproc; grep -c ^processor /proc/cpuinfo; getconf _NPROCESSORS_ONLN",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("256.0 total"),
        "top does not show 256 MiB:\n{out}\n{err}"
    );
    let free_total = out
        .lines()
        .find(|l| l.starts_with("Mem:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    assert_eq!(free_total, "256", "free -m:\n{out}");
    // A quota of 1 CPU shows as one processor in the views; nproc counts the affinity mask
    // (sched_getaffinity), which a CFS quota does not narrow: it stays the host's CPUs, as under
    // docker and lxcfs.
    let host_cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .to_string();
    let last: Vec<&str> = out.lines().rev().take(3).collect();
    assert_eq!(
        last,
        ["1", "1", host_cpus.as_str()],
        "getconf / cpuinfo processors / nproc:\n{out}"
    );

    // A cpuset narrows the affinity mask too, so nproc agrees with the views.
    let (code, out, err) = run_rm(
        &unique_name("views-cpuset"),
        &["--cpuset-cpus", "0"],
        "nproc; grep -c ^processor /proc/cpuinfo; getconf _NPROCESSORS_CONF; cat /sys/devices/system/cpu/online",
    );
    assert_eq!(code, 0, "{err}");
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(
        l,
        ["1", "1", "1", "0"],
        "nproc / cpuinfo / CONF / online:\n{out}"
    );
}

#[test]
fn hostname_pid1_and_no_host_processes() {
    require_root!();
    let n = unique_name("ns");
    let (code, out, err) = run_rm(
        &n,
        &["--hostname", "box1", "--no-proc-views"],
        "hostname; echo $$; ls /proc | grep -c '^[0-9]'",
    );
    assert_eq!(code, 0, "{err}");
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "box1");
    assert_eq!(l[1], "1");
    // sh, ls, grep: nothing from the host
    let count: u32 = l[2].parse().unwrap();
    assert!(count <= 3, "{count} processes visible");
}

#[test]
fn user_flag_sets_ids_and_home_from_passwd() {
    require_root!();
    // The host root's passwd: nobody's home (Debian: /nonexistent).
    let passwd = std::fs::read_to_string("/etc/passwd").expect("passwd");
    let home = passwd
        .lines()
        .find_map(|l| l.strip_prefix("nobody:"))
        .and_then(|l| l.split(':').nth(4))
        .expect("a nobody entry")
        .to_owned();
    let n = unique_name("user");
    let (code, out, err) = run_rm(
        &n,
        &["-u", "nobody", "--no-proc-views"],
        "id -u; echo $HOME",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("65534\n{home}\n"));
    // Without -u: root, HOME=/root.
    let (code, out, err) = run_rm(
        &unique_name("user"),
        &["--no-proc-views"],
        "id -u; echo $HOME",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "0\n/root\n");
}

#[test]
fn exit_code_is_the_commands() {
    require_root!();
    let (code, _, _) = run_rm(&unique_name("exit"), &["--no-proc-views"], "exit 7");
    assert_eq!(code, 7);
    let (code, _, _) = run_rm(
        &unique_name("sig"),
        &["--no-proc-views", "--init"],
        "kill -9 $$",
    );
    assert_eq!(code, 137);
}

#[test]
fn missing_command_is_127_and_leaves_nothing() {
    require_root!();
    let n = unique_name("nf");
    let _g = Ctr::named(&n);
    let o = launch_rm(&n, &["no-such-cmd-cgsight"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    no_container_named(&n);
    // without --rm a failed start also leaves nothing
    let o = cgsight(&[
        "launch",
        "--no-proc-views",
        "--name",
        &n,
        "--",
        "/etc/passwd",
    ]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    no_container_named(&n);
}

#[test]
fn bad_inputs_exit_125_with_one_line() {
    require_root!();
    let n = unique_name("bad");
    let cases: Vec<Vec<&str>> = vec![
        vec!["--memory", "12x"],
        vec!["--cpus", "0"],
        vec!["--cpuset-cpus", "0-999"],
        vec!["--rootfs", "/nonexistent-cgsight-rootfs"],
        vec!["--hostname", "bad_host"],
        vec!["-v", "relative:/x"],
        vec!["--require-proc-views"],
    ];
    for c in cases {
        let mut args = vec!["launch", "--rm", "--no-proc-views", "--name", &n];
        args.extend_from_slice(&c);
        args.extend_from_slice(&["--", "true"]);
        let o = cgsight(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{c:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{c:?}: {e}");
        no_container_named(&n);
    }
    let o = cgsight(&["launch", "--rm", "--name", "bad name", "--", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    // duplicate name
    let _g = Ctr::named(&n);
    let id = launch_detached(&n, &["sleep", "30"]);
    let o = launch_rm(&n, &["true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));
    assert!(cgsight(&["rm", "-f", &n]).status.success());
    assert_gone(&id);
}

#[test]
fn sigterm_to_launcher_reaches_command() {
    require_root!();
    let n = unique_name("term");
    let _g = Ctr::named(&n);
    let child = command(&[
        "launch",
        "--rm",
        "--init",
        "--no-proc-views",
        "--name",
        &n,
        "--",
        "sleep",
        "300",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut g = ChildGuard::new(child);
    let id = wait_for("container running", Duration::from_secs(20), || {
        inspect(&n)
            .filter(|v| v["status"] == "running")
            .map(|v| v["id"].as_str().unwrap().to_owned())
    });
    // SAFETY: signalling our child.
    unsafe { libc::kill(g.pid(), libc::SIGTERM) };
    let st = g.wait_timeout(Duration::from_secs(20));
    assert_eq!(st.code(), Some(143), "{st:?} {:?}", st.signal());
    assert_gone(&id);
}

#[test]
fn oom_kill_is_137_and_reported() {
    require_root!();
    let n = unique_name("oom");
    let _g = Ctr::named(&n);
    let o = cgsight(&[
        "launch",
        "--no-proc-views",
        "--memory",
        "256m",
        "--name",
        &n,
        "--",
        "python3",
        "-c",
        "b = b'x' * (300 << 20); print('survived')",
    ]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let v = inspect(&n).expect("inspect");
    assert_eq!(v["OOMKilled"], true, "{v}");
    assert_eq!(v["exit_code"], 137);
    assert_eq!(v["status"], "exited");
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(cgsight(&["rm", &n]).status.success());
    assert_gone(&id);
}

#[test]
fn pids_limit_contains_fork_loop() {
    require_root!();
    let (code, out, err) = run_rm(
        &unique_name("pids"),
        &["--no-proc-views", "--pids-limit", "20"],
        "i=0; while [ $i -lt 100 ]; do sleep 60 & i=$((i+1)); done; echo all-forked",
    );
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("all-forked"), "{out}");
    assert!(err.to_lowercase().contains("fork"), "{err}");
}

#[test]
fn cpus_half_uses_half_a_cpu() {
    require_root!();
    let cpu = cpu_measurement();
    let n = unique_name("cpu");
    let _g = Ctr::named(&n);
    let o = cgsight(&[
        "launch",
        "-d",
        "--no-proc-views",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "262144",
        "--name",
        &n,
        "--",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    // Only the quota may hold the loop back, not the host's load (see the boost's doc).
    let _boost = boost_cgsight_cpu_weight(&cpu);
    let h = cgsight_cgroup::Hierarchies::detect().unwrap();
    let cg = cgsight_cgroup::Cgroup::at_path(&h, &format!("/cgsight/{id}"));
    let a = cg.cpu_usage().unwrap().total_ns;
    let t = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let b = cg.cpu_usage().unwrap().total_ns;
    let cpus = (b - a) as f64 / t.elapsed().as_nanos() as f64;
    assert!((cpus - 0.5).abs() <= 0.1, "used {cpus:.3} CPUs");
    assert!(cgsight(&["rm", "-f", &n]).status.success());
    assert_gone(&id);
}

#[test]
fn volumes_ro_and_rw() {
    require_root!();
    let d = TempDir::new("vol");
    std::fs::write(d.path().join("in"), "hello").unwrap();
    let rw = format!("{}:/data", d.path().display());
    let ro = format!("{}:/ro:ro", d.path().display());
    let (code, out, err) = run_rm(
        &unique_name("vol"),
        &["--no-proc-views", "-v", &rw, "-v", &ro],
        "cat /ro/in; echo out > /data/out; if echo x > /ro/x 2>/dev/null; then echo ro-writable; fi",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "hello");
    assert_eq!(
        std::fs::read_to_string(d.path().join("out")).unwrap(),
        "out\n"
    );
    assert!(!d.path().join("x").exists());
}

#[test]
fn exec_joins_the_pid_namespace() {
    require_root!();
    let n = unique_name("exec");
    let _g = Ctr::named(&n);
    let id = launch_detached(&n, &["sleep", "300"]);
    let o = cgsight(&[
        "exec",
        &id[..16],
        "sh",
        "-c",
        "cat /proc/1/comm; hostname; echo $$",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "sleep");
    assert_eq!(l[1], &id[..12]);
    assert!(l[2].parse::<u32>().unwrap() < 10, "{out}");
    let o = cgsight(&["exec", &n, "sh", "-c", "exit 5"]);
    assert_eq!(o.status.code(), Some(5));
    assert!(cgsight(&["stop", "-t", "1", &n]).status.success());
    assert_eq!(inspect(&n).unwrap()["status"], "exited");
    assert!(cgsight(&["rm", &n]).status.success());
    assert_gone(&id);
}

#[test]
fn writes_land_in_upper_layer_only() {
    require_root!();
    let n = unique_name("upper");
    let _g = Ctr::named(&n);
    let marker = format!("/etc/{n}");
    let o = cgsight(&[
        "launch",
        "--no-proc-views",
        "--name",
        &n,
        "--",
        "sh",
        "-c",
        &format!("echo inside > {marker}"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !std::path::Path::new(&marker).exists(),
        "write reached the host root"
    );
    let v = inspect(&n).unwrap();
    let upper = v["paths"]["upper"].as_str().unwrap().to_owned();
    let id = v["id"].as_str().unwrap().to_owned();
    let inup = std::path::Path::new(&upper).join(marker.trim_start_matches('/'));
    assert_eq!(std::fs::read_to_string(&inup).unwrap(), "inside\n");
    assert!(cgsight(&["rm", &n]).status.success());
    assert_gone(&id);
}

#[test]
fn killed_supervisor_is_cleaned_by_rm() {
    require_root!();
    let n = unique_name("dead");
    let _g = Ctr::named(&n);
    let id = launch_detached(&n, &["sleep", "300"]);
    let v = inspect(&n).unwrap();
    let sup = v["supervisor_pid"].as_i64().unwrap() as i32;
    // SAFETY: killing the supervisor we started.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    wait_for("reported dead", Duration::from_secs(10), || {
        (inspect(&n)?["status"] == "exited").then_some(())
    });
    assert!(cgsight(&["rm", &n]).status.success());
    assert_gone(&id);
}
