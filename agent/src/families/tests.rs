//! Fixture tests of the family tables and the encoder: a renamed family, a changed type or unit,
//! a dropped or added label, or any change to the exposition of fixed rows fails here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cgsight_cgroup::cpu::{CpuLimits, CpuUsage, PerCpu, Throttling};
use cgsight_cgroup::io::IoDevice;
use cgsight_cgroup::memory::{MemCounters, Memory, MemoryStat, Swap};
use cgsight_cgroup::pids::Pids;
use cgsight_cgroup::pressure::{Pressure, Psi, PsiLine};
use cgsight_cgroup::Version;

use super::*;
use crate::exposition::label_prefix;
use crate::process::Process;

/// (name, type, unit, labels after the container labels) of every family, in output order.
const EXPECTED: &[(&str, &str, &str, &[&str])] = &[
    (
        "container_cpu_usage_seconds_total",
        "counter",
        "seconds",
        &["cpu"],
    ),
    (
        "container_cpu_user_seconds_total",
        "counter",
        "seconds",
        &[],
    ),
    (
        "container_cpu_system_seconds_total",
        "counter",
        "seconds",
        &[],
    ),
    ("container_cpu_cfs_periods_total", "counter", "", &[]),
    (
        "container_cpu_cfs_throttled_periods_total",
        "counter",
        "",
        &[],
    ),
    (
        "container_cpu_cfs_throttled_seconds_total",
        "counter",
        "seconds",
        &[],
    ),
    ("container_memory_usage_bytes", "gauge", "bytes", &[]),
    ("container_memory_working_set_bytes", "gauge", "bytes", &[]),
    ("container_memory_rss", "gauge", "bytes", &[]),
    ("container_memory_cache", "gauge", "bytes", &[]),
    ("container_memory_swap", "gauge", "bytes", &[]),
    ("container_memory_mapped_file", "gauge", "bytes", &[]),
    ("container_memory_max_usage_bytes", "gauge", "bytes", &[]),
    ("container_memory_failcnt", "counter", "", &[]),
    (
        "container_memory_failures_total",
        "counter",
        "",
        &["failure_type", "scope"],
    ),
    ("container_oom_events_total", "counter", "", &[]),
    ("container_spec_memory_limit_bytes", "gauge", "bytes", &[]),
    (
        "container_spec_memory_swap_limit_bytes",
        "gauge",
        "bytes",
        &[],
    ),
    ("container_spec_cpu_period", "gauge", "microseconds", &[]),
    ("container_spec_cpu_quota", "gauge", "microseconds", &[]),
    ("container_spec_cpu_shares", "gauge", "", &[]),
    ("container_spec_cpuset_cpus_count", "gauge", "", &[]),
    ("container_spec_pids_max", "gauge", "", &[]),
    ("container_processes", "gauge", "", &[]),
    ("container_threads", "gauge", "", &[]),
    ("container_threads_max", "gauge", "", &[]),
    (
        "container_fs_reads_bytes_total",
        "counter",
        "bytes",
        &["device"],
    ),
    (
        "container_fs_writes_bytes_total",
        "counter",
        "bytes",
        &["device"],
    ),
    ("container_fs_reads_total", "counter", "", &["device"]),
    ("container_fs_writes_total", "counter", "", &["device"]),
    ("container_fs_usage_bytes", "gauge", "bytes", &["device"]),
    ("container_fs_limit_bytes", "gauge", "bytes", &["device"]),
    (
        "container_network_receive_bytes_total",
        "counter",
        "bytes",
        &["interface"],
    ),
    (
        "container_network_receive_packets_total",
        "counter",
        "",
        &["interface"],
    ),
    (
        "container_network_receive_errors_total",
        "counter",
        "",
        &["interface"],
    ),
    (
        "container_network_receive_packets_dropped_total",
        "counter",
        "",
        &["interface"],
    ),
    (
        "container_network_transmit_bytes_total",
        "counter",
        "bytes",
        &["interface"],
    ),
    (
        "container_network_transmit_packets_total",
        "counter",
        "",
        &["interface"],
    ),
    (
        "container_network_transmit_errors_total",
        "counter",
        "",
        &["interface"],
    ),
    (
        "container_network_transmit_packets_dropped_total",
        "counter",
        "",
        &["interface"],
    ),
    (
        "container_pressure_cpu_waiting_seconds_total",
        "counter",
        "seconds",
        &[],
    ),
    (
        "container_pressure_cpu_stalled_seconds_total",
        "counter",
        "seconds",
        &[],
    ),
    (
        "container_pressure_memory_waiting_seconds_total",
        "counter",
        "seconds",
        &[],
    ),
    (
        "container_pressure_memory_stalled_seconds_total",
        "counter",
        "seconds",
        &[],
    ),
    (
        "container_pressure_io_waiting_seconds_total",
        "counter",
        "seconds",
        &[],
    ),
    (
        "container_pressure_io_stalled_seconds_total",
        "counter",
        "seconds",
        &[],
    ),
    ("container_start_time_seconds", "gauge", "seconds", &[]),
    ("container_last_seen", "gauge", "seconds", &[]),
    ("container_info", "gauge", "", &["runtime"]),
    ("machine_cpu_cores", "gauge", "", &[]),
    ("machine_memory_bytes", "gauge", "bytes", &[]),
    ("cgsight_scrape_duration_seconds", "gauge", "seconds", &[]),
    ("cgsight_scrape_errors_total", "counter", "", &["kind"]),
    ("cgsight_build_info", "gauge", "", &["version"]),
    ("cgsight_agent_kept_open_files", "gauge", "", &[]),
    ("cgsight_agent_open_per_read_cgroups", "gauge", "", &[]),
    ("process_cpu_seconds_total", "counter", "seconds", &[]),
    ("process_open_fds", "gauge", "", &[]),
    ("process_max_fds", "gauge", "", &[]),
    ("process_virtual_memory_bytes", "gauge", "bytes", &[]),
    ("process_resident_memory_bytes", "gauge", "bytes", &[]),
    ("process_start_time_seconds", "gauge", "seconds", &[]),
];

/// Families whose series carry no container labels.
const UNPREFIXED: &[&str] = &["machine_", "cgsight_", "process_"];

fn type_str(t: Type) -> &'static str {
    match t {
        Type::Counter => "counter",
        Type::Gauge => "gauge",
    }
}

fn table() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
)> {
    let c = CONTAINER
        .iter()
        .map(|f| (f.name, type_str(f.kind), f.unit, f.labels));
    let a = AGENT
        .iter()
        .map(|f| (f.name, type_str(f.kind), f.unit, f.labels));
    c.chain(a).collect()
}

#[test]
fn every_family_has_its_name_type_unit_and_labels() {
    let got = table();
    for (g, want) in got.iter().zip(EXPECTED) {
        assert_eq!(g, want);
    }
    assert_eq!(got.len(), EXPECTED.len(), "families added or removed");
}

#[test]
fn units_agree_with_name_suffixes() {
    for (name, _, unit, _) in table() {
        let base = name.strip_suffix("_total").unwrap_or(name);
        for u in ["bytes", "seconds"] {
            if base.ends_with(&format!("_{u}")) {
                assert_eq!(unit, u, "{name}");
            }
        }
        // Counters end in _total, except cAdvisor's historical failcnt.
        if type_str_of(name) == "counter" && name != "container_memory_failcnt" {
            assert!(name.ends_with("_total"), "{name}");
        }
    }
}

fn type_str_of(name: &str) -> &'static str {
    table()
        .into_iter()
        .find(|f| f.0 == name)
        .map_or("", |f| f.1)
}

fn memory(usage: u64, raw: &[(&str, u64)], v: Version) -> (Memory, MemCounters) {
    let text: String = raw.iter().map(|(k, n)| format!("{k} {n}\n")).collect();
    let counters = MemCounters::parse(std::path::Path::new("memory.stat"), v, &text).unwrap();
    let m = Memory {
        usage,
        limit: Some(512 << 20),
        peak: Some(usage + 4096),
        failcnt: Some(3),
        oom: None,
        swap: Some(Swap {
            usage: 8192,
            limit: Some(1 << 30),
            memsw_limit: None,
        }),
        stat: MemoryStat {
            version: Some(v),
            raw: Default::default(),
        },
    };
    (m, counters)
}

fn psi(some: u64, full: Option<u64>) -> Option<Psi> {
    let line = |t| PsiLine {
        total_us: t,
        ..Default::default()
    };
    Some(Psi {
        some: line(some),
        full: full.map(line),
    })
}

/// The root on v1 (per-CPU usage, no limits, an unlimited pids.max) and a container on v2
/// (throttled, PSI without cpu `full`) whose name needs escaping.
fn fixture() -> (Vec<Stats>, Vec<String>) {
    let root = Stats {
        cpu: Some(CpuUsage {
            total_ns: 9_000_000_000,
            user_ns: 6_000_000_000,
            system_ns: 3_000_000_000,
            per_cpu: Some(vec![
                PerCpu {
                    cpu: 0,
                    user_ns: 4_000_000_000,
                    system_ns: 1_000_000_000,
                },
                PerCpu {
                    cpu: 1,
                    user_ns: 2_000_000_000,
                    system_ns: 2_000_000_000,
                },
            ]),
        }),
        limits: Some(CpuLimits {
            quota_us: None,
            period_us: 100_000,
            shares: Some(1024),
            weight: None,
        }),
        mem: Some(memory(
            1 << 30,
            &[
                ("total_inactive_file", 1 << 20),
                ("rss", 100 << 20),
                ("cache", 200 << 20),
                ("mapped_file", 4096),
                ("pgfault", 10),
                ("total_pgfault", 30),
                ("pgmajfault", 1),
            ],
            Version::V1,
        )),
        cpuset_count: Some(4),
        pids: Some(Pids {
            current: 300,
            max: Some(u64::MAX),
        }),
        procs: Some(120),
        io: Some(vec![IoDevice {
            major: 8,
            minor: 0,
            rbytes: 1000,
            wbytes: 2000,
            rios: 10,
            wios: 20,
            ..Default::default()
        }]),
        oom: Some(0),
        psi: None,
        net: Some(Arc::new(vec![crate::netdev::Iface {
            name: "eth0".into(),
            rx_bytes: 1,
            rx_packets: 2,
            rx_errors: 3,
            rx_dropped: 4,
            tx_bytes: 5,
            tx_packets: 6,
            tx_errors: 7,
            tx_dropped: 8,
        }])),
        ..Default::default()
    };
    let web = Stats {
        cpu: Some(CpuUsage {
            total_ns: 1_500_000_000,
            user_ns: 1_000_000_000,
            system_ns: 500_000_000,
            per_cpu: None,
        }),
        limits: Some(CpuLimits {
            quota_us: Some(50_000),
            period_us: 100_000,
            shares: None,
            weight: Some(100),
        }),
        throttling: Some(Throttling {
            periods: 40,
            throttled_periods: 5,
            throttled_ns: 250_000_000,
        }),
        mem: Some(memory(
            64 << 20,
            &[
                ("inactive_file", 4 << 20),
                ("anon", 32 << 20),
                ("file", 16 << 20),
                ("file_mapped", 8192),
                ("pgfault", 7),
                ("pgmajfault", 2),
            ],
            Version::V2,
        )),
        cpuset_count: Some(2),
        pids: Some(Pids {
            current: 3,
            max: Some(64),
        }),
        procs: Some(2),
        io: Some(vec![IoDevice {
            major: 253,
            minor: 1,
            rbytes: 5,
            wbytes: 6,
            rios: 7,
            wios: 8,
            ..Default::default()
        }]),
        oom: Some(1),
        psi: Some(Pressure {
            cpu: psi(1_000_000, None),
            memory: psi(250_000, Some(125_000)),
            io: psi(3, Some(2)),
        }),
        net: None,
    };
    let prefixes = vec![
        label_prefix(&[("id", "/"), ("name", ""), ("image", "")]),
        label_prefix(&[
            ("id", "/cgsight/abc"),
            ("name", "we\"b\\1"),
            ("image", "nginx:1"),
        ]),
    ];
    (vec![root, web], prefixes)
}

fn golden_body() -> String {
    let (stats, prefixes) = fixture();
    let rows = [
        Row {
            prefix: &prefixes[0],
            stats: &stats[0],
            start: 1_700_000_000.0,
            runtime: "",
            root: true,
        },
        Row {
            prefix: &prefixes[1],
            stats: &stats[1],
            start: 1_700_000_123.25,
            runtime: "cgsight",
            root: false,
        },
    ];
    let devices = HashMap::from([((8, 0), "/dev/sda".to_owned())]);
    let mut out = String::new();
    encode(
        &mut out,
        &Scrape {
            rows: &rows,
            now: 1_700_000_200.75,
            cpu_cores: 4,
            mem_total: 8 << 30,
            devices: &devices,
            root_fs: Some(RootFs {
                device: "/dev/sda1",
                used: 10,
                total: 100,
            }),
        },
    );
    let errors = BTreeMap::from([("cpu", 2), ("io", 0)]);
    encode_agent(
        &mut out,
        &Agent {
            duration: 0.5,
            errors: &errors,
            version: "9.9.9",
            process: Some(&Process {
                cpu_seconds: 1.25,
                resident_bytes: 20 << 20,
                virtual_bytes: 1 << 30,
                start_time: 1_700_000_100.5,
                open_fds: Some(12),
                max_fds: Some(1024.0),
            }),
            kept_files: 27,
            open_per_read_cgroups: 0,
        },
    );
    out
}

#[test]
fn fixed_rows_encode_to_the_golden_exposition() {
    let got = golden_body();
    // CGSIGHT_BLESS=1 rewrites the golden file after a deliberate change (review the diff, then
    // rerun: this run still compares against the compiled-in old file).
    if std::env::var_os("CGSIGHT_BLESS").is_some() {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/src/families/golden.prom");
        std::fs::write(p, &got).unwrap();
    }
    let want = include_str!("golden.prom");
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "line {}", i + 1);
    }
    assert_eq!(got.lines().count(), want.lines().count(), "line count");
    assert!(got == want, "line endings differ");
}

/// Every family of the table has samples in the golden body, each with exactly the container
/// labels (unless unprefixed) followed by the family's declared labels.
#[test]
fn golden_samples_carry_exactly_the_declared_labels() {
    let body = golden_body();
    for (name, _, _, labels) in table() {
        let container: &[&str] = if UNPREFIXED.iter().any(|p| name.starts_with(p)) {
            &[]
        } else {
            &["id", "name", "image"]
        };
        let want: Vec<&str> = container.iter().chain(labels).copied().collect();
        let mut n = 0;
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let (series, _) = line.rsplit_once(' ').unwrap_or((line, ""));
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            if metric != name {
                continue;
            }
            n += 1;
            assert_eq!(label_names(rest), want, "{line}");
        }
        assert!(n > 0, "{name} has no samples in the fixture");
    }
}

/// Label names of `k="v",…}` (values may hold escaped quotes and commas).
fn label_names(s: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = s;
    while let Some((k, v)) = rest.split_once("=\"") {
        names.push(k.trim_start_matches(','));
        let mut end = 0;
        let mut esc = false;
        for (i, c) in v.char_indices() {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        rest = v.get(end + 1..).unwrap_or("");
    }
    names
}

#[test]
fn without_rows_or_root_filesystem_only_headers_and_machine_series_remain() {
    let devices = HashMap::new();
    let mut out = String::new();
    encode(
        &mut out,
        &Scrape {
            rows: &[],
            now: 0.0,
            cpu_cores: 1,
            mem_total: 2,
            devices: &devices,
            root_fs: None,
        },
    );
    let samples: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(samples, ["machine_cpu_cores 1", "machine_memory_bytes 2"]);
    assert!(!out.contains("container_fs_usage_bytes"));
    assert_eq!(out.matches("# TYPE ").count(), CONTAINER.len() - 2);
}
