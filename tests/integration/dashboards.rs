//! End-to-end test of the dashboards and rules against the real agent: `cgsight daemon` (fs
//! views + agent in one process, on a private mountpoint and a free port) serves containers
//! launched with `cgsight launch` running load (CPU at its quota, memory near its limit, an OOM
//! loop, readers of the views), a real Prometheus scrapes it every second and evaluates
//! dashboards/rules/*.yml, and `dashboards/tests/panel_queries.py` runs every panel and variable
//! query of our three dashboards and of the two community cAdvisor dashboards.
//!
//! Also the automated test of `cgsight daemon`: its /metrics holds container_* and cgsight_fs_*
//! families, and SIGTERM makes it exit 0 and unmount.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cgsight_cgroup::{Controller, Hierarchies, Version};
use cgsight_testkit::http::try_get;
use cgsight_testkit::{
    is_mounted, require_root, spawn_listening, tool_available, wait_for, ChildGuard, MountGuard,
    Prometheus, TempDir,
};

use crate::support::{assert_no_cgroup, boost_cgsight_cpu_weight, cpu_measurement, Ctr, BIN, REPO};

/// GET `path` from the daemon: (status, body), or None when it did not answer.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    try_get(port, path, &[]).ok().map(|r| (r.status, r.text()))
}

/// `cgsight daemon` on a private mountpoint: SIGTERM on drop, then SIGKILL and a detach of the
/// mount if it did not go by itself.
struct Daemon {
    child: ChildGuard,
    _mount: MountGuard,
    port: u16,
}

impl Daemon {
    fn start(mountpoint: &Path) -> Daemon {
        // First, so a daemon that never reports its port leaves no mount either.
        let mount = MountGuard::new(mountpoint);
        let (child, port) = spawn_listening(
            Command::new(BIN)
                .args(["daemon", "--listen", "127.0.0.1:0"])
                .arg("--mountpoint")
                .arg(mountpoint)
                .stdout(Stdio::null()),
            "listening on",
        );
        let mut d = Daemon {
            child,
            _mount: mount,
            port,
        };
        let probe = mountpoint.join("proc/uptime");
        wait_for(
            "daemon serving views and /metrics",
            Duration::from_secs(30),
            || {
                if let Ok(Some(st)) = d.child.child().try_wait() {
                    panic!("cgsight daemon exited: {st}");
                }
                (is_mounted(mountpoint)
                    && std::fs::read_to_string(&probe).is_ok()
                    && http_get(port, "/metrics").is_some_and(|(s, _)| s == 200))
                .then_some(())
            },
        );
        d
    }

    fn sigterm(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.pid().to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.sigterm();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.child().try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `major:minor` of the whole block device holding `path`, or None when it is not on a block
/// device (tmpfs, 9p, overlay of those).
fn block_device_of(path: &Path) -> Option<String> {
    let dev = std::fs::metadata(path).ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.exists() {
        return None;
    }
    // blkio throttle limits are set on whole disks, not partitions.
    let disk = if sys.join("partition").exists() {
        sys.join("..")
    } else {
        sys
    };
    Some(
        std::fs::read_to_string(disk.join("dev"))
            .ok()?
            .trim()
            .to_owned(),
    )
}

/// The `record:` names, or the `expr:` of one alert, of a rules file (its simple layout).
fn rule_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(|s| s.trim().to_owned())
        .collect()
}

fn alert_expr(text: &str, alert: &str) -> String {
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != format!("- alert: {alert}"));
    lines.next().expect("alert present");
    lines
        .find_map(|l| l.trim().strip_prefix("expr:"))
        .expect("alert expr")
        .trim()
        .to_owned()
}

/// Prometheus's scrape (and rule evaluation) interval in seconds: 1 s, or 3 s under emulation,
/// where one collection of this test's loaded containers can take longer than a second (a
/// scrape past its timeout fails, and every series of the target goes stale with it).
fn scrape_interval() -> u64 {
    if std::env::var_os("CGSIGHT_VM").is_some() {
        3
    } else {
        1
    }
}

/// How the scrapes went over the last minute, for a failure message: the target's `up`
/// samples and successes, and its slowest scrape.
fn scrape_health(prom: &Prometheus) -> String {
    [
        "count_over_time(up{job=\"cgsight\"}[1m])",
        "sum_over_time(up{job=\"cgsight\"}[1m])",
        "max_over_time(scrape_duration_seconds{job=\"cgsight\"}[1m])",
        // Whether the bodies carried samples, and whether Prometheus kept them.
        "min_over_time(scrape_samples_scraped{job=\"cgsight\"}[1m])",
        "min_over_time(scrape_samples_post_metric_relabeling{job=\"cgsight\"}[1m])",
        "count(cgsight_build_info)",
        "count(container_last_seen)",
    ]
    .iter()
    .map(|q| {
        let v = prom
            .query(q)
            .and_then(|r| r.first().map(|x| x["value"][1].to_string()))
            .unwrap_or_else(|| "none".into());
        format!("{q} = {v}")
    })
    .collect::<Vec<_>>()
    .join("; ")
}

/// What the daemon serves right now, for a failure message: does its body hold the families
/// the empty queries ask for.
fn body_summary(port: u16) -> String {
    match http_get(port, "/metrics") {
        Some((st, body)) => format!(
            "daemon /metrics now: status {st}, {} lines, build_info {}, container_last_seen {}",
            body.lines().count(),
            body.contains("cgsight_build_info"),
            body.lines()
                .filter(|l| l.starts_with("container_last_seen{"))
                .count()
        ),
        None => "daemon /metrics now: no answer".into(),
    }
}

/// One run of panel_queries.py: the JSON report, or None when it could not run.
fn panel_queries(prom: u16, args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new("python3")
        .arg(Path::new(REPO).join("dashboards/tests/panel_queries.py"))
        .args(["--url", &format!("http://127.0.0.1:{prom}")])
        .args(["--scrape-interval", &format!("{}s", scrape_interval())])
        .args(["--quiet", "--json", "-"])
        .args(args)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Queries of a report that must have data but have none: (dashboard, where, query).
/// `strict`: also queries the tool classes as node_exporter / Prometheus self-metrics (our
/// health dashboard's `scrape_*{job="cgsight"}` series exist here, so they must have data).
fn missing(
    report: &serde_json::Value,
    strict: bool,
    excepted: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for res in report["results"].as_array().into_iter().flatten() {
        for q in res["queries"].as_array().into_iter().flatten() {
            let query = q["query"].as_str().unwrap_or("");
            if (!strict && q["class"] == "excepted") || q["status"] == "data" || excepted(query) {
                continue;
            }
            let where_ = match q["kind"].as_str() {
                Some("variable") => format!("var ${}", q["variable"].as_str().unwrap_or("?")),
                _ => format!("panel {:?}", q["panel"].as_str().unwrap_or("?")),
            };
            out.push(format!(
                "{} {where_} [{}]: {query}",
                res["dashboard"].as_str().unwrap_or("?"),
                q["status"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}

#[test]
fn dashboards_and_rules_have_data_from_the_real_agent() {
    require_root!();
    let cpu_lock = cpu_measurement();
    for tool in ["prometheus", "python3", "stress-ng", "ip"] {
        assert!(
            tool_available(tool),
            "{tool} missing: run scripts/install-deps.sh"
        );
    }
    let started = Instant::now();
    let h = Hierarchies::detect().expect("cgroup hierarchies");

    let views = TempDir::new("dash-views");
    let mp = views.path().to_owned();
    let daemon = Daemon::start(&mp);

    // Prometheus: 1 s scrapes and rule evaluation (3 s emulated), our rule files, private
    // storage.
    let rules = Path::new(REPO).join("dashboards/rules");
    let cfg = format!(
        "global:\n  scrape_interval: {i}s\n  evaluation_interval: {i}s\nrule_files:\n  - {}/*.yml\n\
         scrape_configs:\n  - job_name: cgsight\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        rules.display(),
        daemon.port,
        i = scrape_interval(),
    );
    let mut prom = Prometheus::start("dash-prom", &cfg);

    // The detail container: at its CPU quota, with memory and pids limits, its own network
    // namespace, and a loop that reads the views through the daemon's mount and does direct
    // disk I/O (so the fs-daemon and disk panels have data).
    let reader = "while :; do cat /proc/meminfo /proc/stat /proc/cpuinfo /proc/uptime \
        /proc/loadavg /proc/diskstats /proc/swaps /proc/pressure/cpu \
        /sys/devices/system/cpu/online >/dev/null 2>&1; \
        dd if=/dev/zero of=/var/tmp/cgsight-io bs=64k count=4 oflag=direct 2>/dev/null; \
        dd if=/var/tmp/cgsight-io of=/dev/null bs=64k iflag=direct 2>/dev/null; sleep 0.2; done";
    let cpu = Ctr::launch(
        &mp,
        "dash-cpu",
        &[
            "--cpus",
            "0.5",
            // Ahead of its stress neighbours, so the quota is what throttles it (see below).
            "--cpu-shares",
            "262144",
            "--memory",
            "256m",
            "--pids-limit",
            "64",
            // The default bridge gives it an eth0 (loopback is left out, as by cAdvisor), so
            // the network panels have a real interface without anything done by hand.
            "--",
            "sh",
            "-c",
            &format!("stress-ng -q --cpu 1 & {reader}"),
        ],
    );
    // The memory and OOM containers get a small CPU quota: their stressors would otherwise
    // take every CPU (they have the boosted weight of /cgsight, see below), and under TCG
    // the daemon and Prometheus then starve until scrapes time out (a v1-lane failure:
    // every scrape of the last minute failed, the slowest took 9 s of a 3 s timeout).
    let mem = Ctr::launch(
        &mp,
        "dash-mem",
        &[
            "--memory",
            "128m",
            "--cpus",
            "0.25",
            "--",
            "stress-ng",
            "-q",
            "--vm",
            "1",
            "--vm-bytes",
            "100m",
            "--vm-keep",
        ],
    );
    // stress-ng restarts its OOM-killed worker, so the OOM counter keeps rising.
    let oom = Ctr::launch(
        &mp,
        "dash-oom",
        &[
            "--memory",
            "64m",
            "--cpus",
            "0.25",
            "--",
            "stress-ng",
            "-q",
            "--vm",
            "1",
            "--vm-bytes",
            "200m",
        ],
    );

    // The CPU-bound container must reach its quota (the throttling rule's input) however busy
    // the host is: its parent /cgsight competes as one group against the host's load.
    let _boost = boost_cgsight_cpu_weight(&cpu_lock);

    // Disk panels need block I/O charged to the container. On v1 kernels >= 6.10 that takes
    // blk-throttle set up on the disk's queue: the launcher's cgroup setup arranges it (a
    // never-binding limit), so nothing is done by hand here.
    let disk = block_device_of(Path::new("/var/lib/cgsight"));
    let io_mount = h.mount_for(Controller::Io);

    // Exceptions, each with its reason (printed, never silent).
    let per_cpu = h
        .mount_for(Controller::Cpuacct)
        .is_some_and(|m| m.version == Version::V1);
    let psi = h
        .unified()
        .map(|u| {
            u.dir_of(&format!("/cgsight/{}", cpu.id))
                .join("cpu.pressure")
        })
        .is_some_and(|p| p.exists());
    let mut reasons = Vec::new();
    if disk.is_none() || io_mount.is_none() {
        reasons.push("disk panels: /var/lib/cgsight (container layers) is not on a block device, or no io/blkio controller: no block I/O to count");
    }
    if !per_cpu {
        reasons.push("per-CPU panels: cgroup v2 has no per-CPU usage");
    }
    if !psi {
        reasons.push(
            "pressure panels: no PSI files for the container's cgroup (legacy v1 or PSI off)",
        );
    }
    for r in &reasons {
        eprintln!("exception: {r}");
    }
    let excepted = |q: &str| -> bool {
        ((disk.is_none() || io_mount.is_none())
            && (q.contains("container_fs_read")
                || q.contains("container_fs_write")
                || q.contains("container:fs_")))
            || (!per_cpu && q.contains("cpu=~\"cpu[0-9]+\"") && !q.contains("cpu=\"total\""))
            || (!psi && q.contains("container_pressure_"))
    };

    wait_for(
        "prometheus scraping the daemon",
        Duration::from_secs(120),
        || {
            prom.assert_running();
            prom.query("up{job=\"cgsight\"} == 1")
        },
    );

    // The daemon's own exposition: container families and fs families in one response.
    let (st, body) = http_get(daemon.port, "/metrics").expect("daemon /metrics");
    assert_eq!(st, 200);
    for family in [
        "container_cpu_usage_seconds_total{",
        "container_memory_working_set_bytes{",
        "container_oom_events_total{",
        "cgsight_fs_reads_total{",
        "cgsight_fs_read_duration_seconds_bucket{",
    ] {
        assert!(body.contains(family), "daemon /metrics lacks {family}");
    }
    assert!(body.contains("# TYPE cgsight_fs_fallbacks_total counter"));
    assert!(body.contains(&format!("name=\"{}\"", cpu.name)));

    // OOM kills: the ContainerOomKilled alert expression returns the OOM container.
    let alerts = std::fs::read_to_string(rules.join("cgsight-alerts.yml")).expect("alerts");
    let oom_expr = alert_expr(&alerts, "ContainerOomKilled");
    wait_for(
        "ContainerOomKilled for the OOM container",
        Duration::from_secs(45 * scrape_interval()),
        || {
            prom.query(&oom_expr)?
                .iter()
                .any(|r| r["metric"]["name"] == oom.name.as_str())
                .then_some(())
        },
    );
    assert!(
        prom.query(&oom_expr)
            .unwrap_or_default()
            .iter()
            .all(|r| r["metric"]["name"] != cpu.name.as_str()
                && r["metric"]["name"] != mem.name.as_str()),
        "ContainerOomKilled for a container that was not OOM-killed"
    );

    // The container at its CPU quota is throttled (the ContainerCpuThrottled rule's input).
    let throttled = format!(
        "container:cpu_cfs_throttled_ratio:rate5m{{name=\"{}\"}} > 0",
        cpu.name
    );
    wait_for(
        "throttling of the CPU-bound container",
        Duration::from_secs(30 * scrape_interval()),
        || prom.query(&throttled),
    );

    // Every recording rule has data.
    let recording =
        std::fs::read_to_string(rules.join("cgsight-recording.yml")).expect("recording rules");
    let names = rule_names(&recording);
    assert!(names.len() >= 10, "parsed only {names:?}");
    eprintln!("recording rules checked: {}", names.len());
    let mut empty = names.clone();
    let deadline = Instant::now() + Duration::from_secs(30 * scrape_interval());
    while !empty.is_empty() && Instant::now() < deadline {
        empty.retain(|n| !excepted(n) && prom.query(n).is_none());
        if !empty.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    assert!(
        empty.is_empty(),
        "recording rules without data: {empty:?} ({})",
        scrape_health(&prom)
    );

    // Every panel and variable query of our three dashboards, $container = the detail
    // container, $instance = the daemon's target (resolved from Prometheus as Grafana does).
    let container_var = format!("container={}", cpu.name);
    let mut last = vec!["panel_queries.py did not run".to_owned()];
    let mut ours = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(40 * scrape_interval());
    loop {
        if let Some(report) = panel_queries(prom.port, &["--ours", "--var", &container_var]) {
            last = missing(&report, true, &excepted);
            ours = report;
        }
        if last.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        last.is_empty(),
        "queries without data ({}; {}):\n{}",
        scrape_health(&prom),
        body_summary(daemon.port),
        last.join("\n")
    );
    let results = ours["results"]
        .as_array()
        .expect("report of our dashboards");
    assert_eq!(results.len(), 3, "three dashboards");
    for res in results {
        let queries = res["queries"].as_array().map_or(0, Vec::len);
        let with_data = res["queries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|q| q["status"] == "data")
            .count();
        eprintln!(
            "{}: {} queries (panels and variables), {} with data, variables {}",
            res["dashboard"].as_str().unwrap_or("?"),
            queries,
            with_data,
            res["variables"]
        );
        assert!(
            queries >= 15,
            "too few queries found in {}",
            res["dashboard"]
        );
    }

    // The community cAdvisor dashboards (node_exporter / Prometheus self-metrics excepted).
    let community = Path::new(REPO).join("../shared/reference/dashboards");
    if community.is_dir() {
        let dir = community.to_string_lossy().into_owned();
        let mut report = serde_json::Value::Null;
        let deadline = Instant::now() + Duration::from_secs(20 * scrape_interval());
        loop {
            if let Some(r) = panel_queries(prom.port, &["--community", "--community-dir", &dir]) {
                let done = missing(&r, false, &|_| false).is_empty();
                report = r;
                if done || Instant::now() > deadline {
                    break;
                }
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let results = report["results"].as_array().expect("community report");
        assert_eq!(results.len(), 2);
        for res in results {
            let s = &res["summary"];
            eprintln!(
                "community dashboard {}: cAdvisor-metric queries with data {}/{} ({}%), \
                 non-excepted {}/{}, excepted (node_exporter/Prometheus) {}",
                res["dashboard"].as_str().unwrap_or("?"),
                s["cadvisor"]["data"],
                s["cadvisor"]["total"],
                s["cadvisor"]["percent"],
                s["required_ok"],
                s["required"],
                s["excepted"]["total"],
            );
            assert!(s["required"].as_u64().unwrap_or(0) > 0);
        }
        let gaps = missing(&report, false, &|_| false);
        assert!(
            gaps.is_empty(),
            "community queries without data ({}):\n{}",
            scrape_health(&prom),
            gaps.join("\n")
        );
    } else {
        eprintln!(
            "note: {} absent: community dashboard check skipped",
            community.display()
        );
    }

    // Teardown in order, checking each step: containers, then the daemon by SIGTERM.
    let ids: Vec<String> = [&cpu, &mem, &oom].iter().map(|c| c.id.clone()).collect();
    for c in [&cpu, &mem, &oom] {
        c.remove();
    }
    for id in &ids {
        assert_no_cgroup(id);
    }
    drop(prom);
    let mut daemon = daemon;
    daemon.sigterm();
    let st = daemon.child.wait_timeout(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "cgsight daemon exit on SIGTERM");
    assert!(!is_mounted(&mp), "daemon left its mount on SIGTERM");
    eprintln!("dashboards e2e took {:.1?}", started.elapsed());
}
