//! Live tests against this machine's real cgroup hierarchy (root required). They run the same
//! on hybrid, legacy v1 and unified v2 kernels (the VM lane runs them on the latter two).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cgsight_cgroup::{Cgroup, CpuList, Hierarchies, Layout, Managed, Resources, Version};
use cgsight_testkit::{require_root, wait_for, TestCgroup};

const MIB: u64 = 1 << 20;

fn limits() -> Resources {
    Resources {
        memory: Some(256 * MIB),
        cpu_quota_us: Some(50_000),
        cpu_period_us: Some(100_000),
        cpuset_cpus: Some(CpuList::parse("0").unwrap()),
        pids_max: Some(64),
        ..Default::default()
    }
}

#[test]
fn detects_this_hosts_layout() {
    let h = Hierarchies::detect().unwrap();
    let expected = std::env::var("CGSIGHT_EXPECT_LAYOUT").ok();
    if let Some(e) = expected {
        assert_eq!(format!("{:?}", h.layout).to_lowercase(), e);
    }
    // Whatever the layout, memory and cpu must be served by some hierarchy.
    assert!(h.mount_for(cgsight_cgroup::Controller::Memory).is_some());
    assert!(h.mount_for(cgsight_cgroup::Controller::Cpu).is_some());
    if h.layout == Layout::Unified {
        assert!(h.mounts.iter().all(|m| m.version == Version::V2));
    }
}

#[test]
fn limits_read_back_and_usage_moves() {
    require_root!();
    let tc = TestCgroup::new("limits", &limits());
    let cg = tc.cgroup().clone();

    let mem = cg.memory().unwrap();
    assert_eq!(mem.limit, Some(256 * MIB));
    let cpu = cg.cpu_limits().unwrap();
    assert_eq!((cpu.quota_us, cpu.period_us), (Some(50_000), 100_000));
    assert_eq!(cg.cpuset().unwrap().cpus, CpuList::parse("0").unwrap());
    assert_eq!(cg.pids().unwrap().max, Some(64));
    assert_eq!(cg.effective_memory_limit().unwrap(), Some(256 * MIB));
    assert_eq!(cg.effective_cpu_quota().unwrap(), Some(0.5));

    // A child that touches 64 MiB and then spins: usage and CPU time must rise.
    let before = cg.cpu_usage().unwrap().total_ns;
    let mut child = tc.spawn(
        Command::new("python3")
            .args([
                "-c",
                // One C-speed write of every byte: under a 0.5 quota on an emulated CPU (the VM
                // lane) a per-page Python loop took longer than the wait.
                "b = b'\\x01' * (64 << 20)\nprint('ready', flush=True)\nwhile True: pass",
            ])
            .stdout(Stdio::piped()),
    );
    // "ready" means the 64 MiB are written, so they are charged from then on. Waiting for the line
    // rather than polling usage against a clock: a starved emulated CPU once needed over 60 s just
    // to start Python under this quota, and that is slowness, not a failure.
    let out = child.child().stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(900))
        .expect("the child wrote its 64 MiB and said so");
    assert_eq!(line.trim(), "ready", "child output");
    let usage = cg.memory().unwrap().usage;
    assert!(usage >= 60 * MIB, "usage {usage} counts the 64 MiB written");
    assert!(usage < 256 * MIB, "usage {usage} within the limit");
    wait_for("CPU time charged", Duration::from_secs(60), || {
        (cg.cpu_usage().ok()?.total_ns > before + 100_000_000).then_some(())
    });
    assert!(cg.pids().unwrap().current >= 1);
    assert!(cg.procs().unwrap().contains(&child.pid()));
    // The pid resolves back to this cgroup.
    let h = Hierarchies::detect().unwrap();
    let mine = Cgroup::of_pid(&h, child.pid()).unwrap();
    assert_eq!(
        mine.dir(cgsight_cgroup::Controller::Memory),
        cg.dir(cgsight_cgroup::Controller::Memory)
    );
    // Under a 0.5 quota the spinning child gets throttled.
    wait_for("throttling", Duration::from_secs(60), || {
        (cg.cpu_throttling().ok()?.throttled_periods > 0).then_some(())
    });
    let _ = child.child().kill();
}

#[test]
fn kill_and_remove_leaves_nothing() {
    require_root!();
    let tc = TestCgroup::new("kill", &limits());
    let dirs = tc.managed.dirs().to_vec();
    // A shell that keeps forking sleepers.
    let child =
        tc.spawn(Command::new("sh").args(["-c", "while true; do sleep 100 & sleep 0.01; done"]));
    wait_for("several processes", Duration::from_secs(10), || {
        (tc.managed.all_procs().len() >= 3).then_some(())
    });
    tc.managed.kill_and_remove().unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{} removed", d.display());
    }
    drop(child);
    drop(tc); // second removal is a no-op
}

#[test]
fn nested_limits_take_the_minimum_of_ancestors() {
    require_root!();
    let parent = TestCgroup::new(
        "nest",
        &Resources {
            memory: Some(128 * MIB),
            ..Default::default()
        },
    );
    let h = Hierarchies::detect().unwrap();
    let child_path = format!("{}/child", parent.path);
    let child = Managed::create(
        &h,
        &child_path,
        &[
            cgsight_cgroup::Controller::Memory,
            cgsight_cgroup::Controller::Cpu,
        ],
    )
    .unwrap();
    child
        .apply(&Resources {
            memory: Some(512 * MIB),
            cpu_quota_us: Some(20_000),
            cpu_period_us: Some(100_000),
            ..Default::default()
        })
        .unwrap();
    let cg = child.cgroup();
    assert_eq!(cg.memory().unwrap().limit, Some(512 * MIB));
    assert_eq!(cg.effective_memory_limit().unwrap(), Some(128 * MIB));
    assert_eq!(cg.effective_cpu_quota().unwrap(), Some(0.2));
    // The parent's guard removes the child too.
}

#[test]
fn a_limit_below_usage_or_garbage_is_a_clear_error() {
    require_root!();
    let tc = TestCgroup::new("bad", &Resources::default());
    let err = tc
        .managed
        .apply(&Resources {
            cpuset_cpus: Some(CpuList::parse("4096").unwrap()),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("cpuset.cpus"), "{err}");
}

#[test]
fn a_vanished_cgroup_reads_as_gone() {
    require_root!();
    let tc = TestCgroup::new("gone", &Resources::default());
    let cg = tc.cgroup().clone();
    tc.managed.kill_and_remove().unwrap();
    let e = cg.memory().unwrap_err();
    assert!(e.is_gone(), "{e}");
}

/// Direct reads from a disk are charged to the container cgroup on every layout. On v1 kernels
/// 6.10+ that needs blk-throttle set up on the disk's queue, which `apply` arranges with a
/// never-binding limit on each whole disk. (Once any cgroup has set one the queue stays set up
/// until reboot, so only the rules check can fail here after the first run on a machine.)
#[test]
fn direct_disk_reads_are_counted_for_the_container() {
    require_root!();
    let tc = TestCgroup::new("io", &Resources::default());
    let cg = tc.cgroup().clone();
    if let Some(d) = cg
        .dir(cgsight_cgroup::Controller::Io)
        .filter(|d| d.version == Version::V1)
    {
        let rules = std::fs::read_to_string(d.dir.join("blkio.throttle.read_bps_device")).unwrap();
        for dev in cgsight_cgroup::manage::whole_disks(std::path::Path::new("/sys/block")) {
            assert!(
                rules.contains(&format!("{dev} 1099511627776")),
                "no never-binding limit for {dev} in {rules:?}"
            );
        }
    }
    // A file on a real disk (not tmpfs or 9p), written and synced, then read with O_DIRECT.
    let on_disk = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(p).ok()?.dev();
        let (maj, min) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
        std::path::Path::new(&format!("/sys/dev/block/{maj}:{min}"))
            .exists()
            .then(|| cgsight_testkit::TempDir::new_in(p, "io"))
    };
    let Some(tmp) =
        on_disk(&std::env::temp_dir()).or_else(|| on_disk(std::path::Path::new("/var/tmp")))
    else {
        // The VM lanes: the root is 9p, /tmp tmpfs; no disk to read from.
        eprintln!("no writable directory on a block device here: the I/O charge check is skipped");
        return;
    };
    let dir = tmp.path();
    let f = dir.join("data");
    std::fs::write(&f, vec![7u8; 4 << 20]).unwrap();
    std::fs::File::open(&f).unwrap().sync_all().unwrap();
    let before: u64 = cg.io().unwrap().iter().map(|d| d.rbytes).sum();
    let out = tc
        .spawn(Command::new("dd").arg(format!("if={}", f.display())).args([
            "of=/dev/null",
            "iflag=direct",
            "bs=64k",
        ]))
        .into_output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = wait_for("the reads charged", Duration::from_secs(30), || {
        let now: u64 = cg.io().ok()?.iter().map(|d| d.rbytes).sum();
        (now >= before + (4 << 20)).then_some(now - before)
    });
    assert!(read >= 4 << 20, "{read}");
}
