//! The cAdvisor-compatible container families and the machine ones, in exposition order.

use cgsight_cgroup::cpu::Throttling;
use cgsight_cgroup::io::IoDevice;
use cgsight_cgroup::memory::{MemCounters, Memory, StatKey};
use cgsight_cgroup::pids::Pids;
use cgsight_cgroup::pressure::{Pressure, Psi};

use super::{Emit, Family, Row, Scrape, Source};
use crate::exposition::{Type, Val};
use crate::netdev::Iface;

use Type::{Counter, Gauge};

/// Values above this are "unlimited" (cAdvisor reports them as 0).
const UNLIMITED: u64 = 1 << 62;

fn ns_to_s(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn limit_or_zero(l: Option<u64>) -> u64 {
    match l {
        Some(v) if v < UNLIMITED => v,
        _ => 0,
    }
}

type RowFn = fn(&Scrape, &Row, Emit);

/// A per-container family.
const fn c(
    name: &'static str,
    kind: Type,
    unit: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
    f: RowFn,
) -> Family<Source> {
    Family {
        name,
        kind,
        unit,
        labels,
        help,
        source: Source::Container(f),
    }
}

fn cpu_usage(_: &Scrape, r: &Row, emit: Emit) {
    let Some(c) = &r.stats.cpu else { return };
    match &c.per_cpu {
        // v1 with cpuacct.usage_all: one series per CPU (as cAdvisor with percpu), never
        // together with cpu="total".
        Some(per) if !per.is_empty() => {
            // `cpu{:02}` built by hand on the stack (no String, no formatter per CPU per row).
            let mut label = [0u8; 24];
            label[..3].copy_from_slice(b"cpu");
            let mut digits = itoa::Buffer::new();
            for pc in per {
                let d = digits.format(pc.cpu).as_bytes();
                let pad = usize::from(d.len() < 2);
                label[3] = b'0';
                let n = 3 + pad + d.len();
                let l = match label.get_mut(3 + pad..n) {
                    Some(dst) => {
                        dst.copy_from_slice(d);
                        label.get(..n).and_then(|l| std::str::from_utf8(l).ok())
                    }
                    None => None,
                };
                emit(
                    &[l.unwrap_or("")],
                    ns_to_s(pc.user_ns + pc.system_ns).into(),
                );
            }
        }
        _ => emit(&["total"], ns_to_s(c.total_ns).into()),
    }
}

fn thr(r: &Row, emit: Emit, f: fn(&Throttling) -> Val) {
    if let Some(t) = &r.stats.throttling {
        emit(&[], f(t));
    }
}

fn mem(r: &Row, emit: Emit, f: fn(&Memory, &MemCounters) -> u64) {
    if let Some((m, c)) = &r.stats.mem {
        emit(&[], f(m, c).into());
    }
}

fn memory_failures(_: &Scrape, r: &Row, emit: Emit) {
    let Some((_, c)) = &r.stats.mem else { return };
    for (ft, k) in [
        ("pgfault", StatKey::Pgfault),
        ("pgmajfault", StatKey::Pgmajfault),
    ] {
        // v1: plain keys are this cgroup only, total_* include descendants; v2 is
        // hierarchical only.
        let own = c.own(k).unwrap_or(0);
        let hier = c.hierarchical(k).unwrap_or(own);
        emit(&[ft, "container"], own.into());
        emit(&[ft, "hierarchy"], hier.into());
    }
}

fn pids(r: &Row, emit: Emit, f: fn(&Pids) -> u64) {
    if let Some(p) = &r.stats.pids {
        emit(&[], f(p).into());
    }
}

fn io(s: &Scrape, r: &Row, emit: Emit, f: fn(&IoDevice) -> u64) {
    for d in r.stats.io.iter().flatten() {
        let dev = s
            .devices
            .get(&(d.major, d.minor))
            .map(String::as_str)
            .unwrap_or("");
        emit(&[dev], f(d).into());
    }
}

fn net(r: &Row, emit: Emit, f: fn(&Iface) -> u64) {
    for i in r.stats.net.iter().flat_map(|v| v.iter()) {
        emit(&[&i.name], f(i).into());
    }
}

/// PSI total in seconds: `some` (waiting) or `full` (stalled, 0 where the kernel has none).
fn psi(r: &Row, emit: Emit, which: fn(&Pressure) -> Option<&Psi>, full: bool) {
    let Some(ps) = r.stats.psi.as_ref().and_then(which) else {
        return;
    };
    let us = if full {
        ps.full.as_ref().map_or(0, |l| l.total_us)
    } else {
        ps.some.total_us
    };
    emit(&[], (us as f64 / 1e6).into());
}

const NONE: &[&str] = &[];
const DEVICE: &[&str] = &["device"];
const IFACE: &[&str] = &["interface"];

/// Container and machine families, in the order they are written (one line per family).
#[rustfmt::skip]
pub static CONTAINER: &[Family<Source>] = &[
    // CPU.
    c("container_cpu_usage_seconds_total", Counter, "seconds", &["cpu"], "Cumulative cpu time consumed in seconds.", cpu_usage),
    c("container_cpu_user_seconds_total", Counter, "seconds", NONE, "Cumulative user cpu time consumed in seconds.", |_, r, emit| {
        if let Some(c) = &r.stats.cpu {
            emit(&[], ns_to_s(c.user_ns).into());
        }
    }),
    c("container_cpu_system_seconds_total", Counter, "seconds", NONE, "Cumulative system cpu time consumed in seconds.", |_, r, emit| {
        if let Some(c) = &r.stats.cpu {
            emit(&[], ns_to_s(c.system_ns).into());
        }
    }),
    c("container_cpu_cfs_periods_total", Counter, "", NONE, "Number of elapsed enforcement period intervals.", |_, r, emit| thr(r, emit, |t| t.periods.into())),
    c("container_cpu_cfs_throttled_periods_total", Counter, "", NONE, "Number of throttled period intervals.", |_, r, emit| thr(r, emit, |t| t.throttled_periods.into())),
    c("container_cpu_cfs_throttled_seconds_total", Counter, "seconds", NONE, "Total time duration the container has been throttled.", |_, r, emit| thr(r, emit, |t| ns_to_s(t.throttled_ns).into())),
    // Memory.
    c("container_memory_usage_bytes", Gauge, "bytes", NONE, "Current memory usage in bytes, including all memory regardless of when it was accessed.", |_, r, emit| mem(r, emit, |m, _| m.usage)),
    c("container_memory_working_set_bytes", Gauge, "bytes", NONE, "Current working set in bytes.", |_, r, emit| mem(r, emit, |m, c| m.usage.saturating_sub(c.bytes(StatKey::InactiveFile)))),
    c("container_memory_rss", Gauge, "bytes", NONE, "Size of RSS in bytes.", |_, r, emit| mem(r, emit, |_, c| c.bytes(StatKey::Anon))),
    c("container_memory_cache", Gauge, "bytes", NONE, "Number of bytes of page cache memory.", |_, r, emit| mem(r, emit, |_, c| c.bytes(StatKey::File))),
    c("container_memory_swap", Gauge, "bytes", NONE, "Container swap usage in bytes.", |_, r, emit| mem(r, emit, |m, _| m.swap.as_ref().map_or(0, |s| s.usage))),
    c("container_memory_mapped_file", Gauge, "bytes", NONE, "Size of memory mapped files in bytes.", |_, r, emit| mem(r, emit, |_, c| c.bytes(StatKey::FileMapped))),
    c("container_memory_max_usage_bytes", Gauge, "bytes", NONE, "Maximum memory usage recorded in bytes.", |_, r, emit| mem(r, emit, |m, _| m.peak.unwrap_or(0))),
    c("container_memory_failcnt", Counter, "", NONE, "Number of memory usage hits limits.", |_, r, emit| mem(r, emit, |m, _| m.failcnt.unwrap_or(0))),
    c("container_memory_failures_total", Counter, "", &["failure_type", "scope"], "Cumulative count of memory allocation failures.", memory_failures),
    c("container_oom_events_total", Counter, "", NONE, "Count of out of memory events observed for the container.", |_, r, emit| {
        if let Some(o) = r.stats.oom {
            emit(&[], o.into());
        }
    }),
    // Spec.
    c("container_spec_memory_limit_bytes", Gauge, "bytes", NONE, "Memory limit for the container (0 = unlimited).", |_, r, emit| mem(r, emit, |m, _| limit_or_zero(m.limit))),
    c("container_spec_memory_swap_limit_bytes", Gauge, "bytes", NONE, "Memory swap limit for the container (0 = unlimited).", |_, r, emit| {
        mem(r, emit, |m, _| limit_or_zero(m.swap.as_ref().and_then(|s| s.memsw_limit.or(s.limit))))
    }),
    c("container_spec_cpu_period", Gauge, "microseconds", NONE, "CPU period of the container.", |_, r, emit| {
        if let Some(l) = &r.stats.limits {
            emit(&[], l.period_us.into());
        }
    }),
    c("container_spec_cpu_quota", Gauge, "microseconds", NONE, "CPU quota of the container.", |_, r, emit| {
        if let Some(q) = r.stats.limits.as_ref().and_then(|l| l.quota_us) {
            emit(&[], q.into());
        }
    }),
    c("container_spec_cpu_shares", Gauge, "", NONE, "CPU share of the container.", |_, r, emit| {
        if let Some(sh) = r.stats.limits.as_ref().and_then(|l| l.shares_v1()) {
            emit(&[], sh.into());
        }
    }),
    c("container_spec_cpuset_cpus_count", Gauge, "", NONE, "Number of CPUs in the container's effective cpuset.", |_, r, emit| {
        if let Some(n) = r.stats.cpuset_count {
            emit(&[], (n as u64).into());
        }
    }),
    c("container_spec_pids_max", Gauge, "", NONE, "Maximum number of tasks of the container (0 = unlimited).", |_, r, emit| pids(r, emit, |p| limit_or_zero(p.max))),
    // Processes.
    c("container_processes", Gauge, "", NONE, "Number of processes running inside the container.", |_, r, emit| {
        if let Some(n) = r.stats.procs {
            emit(&[], (n as u64).into());
        }
    }),
    c("container_threads", Gauge, "", NONE, "Number of threads running inside the container.", |_, r, emit| pids(r, emit, |p| p.current)),
    c("container_threads_max", Gauge, "", NONE, "Maximum number of threads allowed inside the container (0 = unlimited).", |_, r, emit| pids(r, emit, |p| limit_or_zero(p.max))),
    // Block I/O.
    c("container_fs_reads_bytes_total", Counter, "bytes", DEVICE, "Cumulative count of bytes read.", |s, r, emit| io(s, r, emit, |d| d.rbytes)),
    c("container_fs_writes_bytes_total", Counter, "bytes", DEVICE, "Cumulative count of bytes written.", |s, r, emit| io(s, r, emit, |d| d.wbytes)),
    c("container_fs_reads_total", Counter, "", DEVICE, "Cumulative count of reads completed.", |s, r, emit| io(s, r, emit, |d| d.rios)),
    c("container_fs_writes_total", Counter, "", DEVICE, "Cumulative count of writes completed.", |s, r, emit| io(s, r, emit, |d| d.wios)),
    Family { name: "container_fs_usage_bytes", kind: Gauge, unit: "bytes", labels: DEVICE, help: "Number of bytes that are consumed by the container on this filesystem.", source: Source::RootFs(|fs| fs.used) },
    Family { name: "container_fs_limit_bytes", kind: Gauge, unit: "bytes", labels: DEVICE, help: "Number of bytes that can be consumed by the container on this filesystem.", source: Source::RootFs(|fs| fs.total) },
    // Network.
    c("container_network_receive_bytes_total", Counter, "bytes", IFACE, "Cumulative count of bytes received.", |_, r, emit| net(r, emit, |i| i.rx_bytes)),
    c("container_network_receive_packets_total", Counter, "", IFACE, "Cumulative count of packets received.", |_, r, emit| net(r, emit, |i| i.rx_packets)),
    c("container_network_receive_errors_total", Counter, "", IFACE, "Cumulative count of errors encountered while receiving.", |_, r, emit| net(r, emit, |i| i.rx_errors)),
    c("container_network_receive_packets_dropped_total", Counter, "", IFACE, "Cumulative count of packets dropped while receiving.", |_, r, emit| net(r, emit, |i| i.rx_dropped)),
    c("container_network_transmit_bytes_total", Counter, "bytes", IFACE, "Cumulative count of bytes transmitted.", |_, r, emit| net(r, emit, |i| i.tx_bytes)),
    c("container_network_transmit_packets_total", Counter, "", IFACE, "Cumulative count of packets transmitted.", |_, r, emit| net(r, emit, |i| i.tx_packets)),
    c("container_network_transmit_errors_total", Counter, "", IFACE, "Cumulative count of errors encountered while transmitting.", |_, r, emit| net(r, emit, |i| i.tx_errors)),
    c("container_network_transmit_packets_dropped_total", Counter, "", IFACE, "Cumulative count of packets dropped while transmitting.", |_, r, emit| net(r, emit, |i| i.tx_dropped)),
    // Pressure (cgroup2 PSI files; absent on pure v1).
    c("container_pressure_cpu_waiting_seconds_total", Counter, "seconds", NONE, "Total time duration tasks in the container have waited due to CPU congestion.", |_, r, emit| psi(r, emit, |p| p.cpu.as_ref(), false)),
    c("container_pressure_cpu_stalled_seconds_total", Counter, "seconds", NONE, "Total time duration no tasks in the container could make progress due to CPU congestion.", |_, r, emit| psi(r, emit, |p| p.cpu.as_ref(), true)),
    c("container_pressure_memory_waiting_seconds_total", Counter, "seconds", NONE, "Total time duration tasks in the container have waited due to memory congestion.", |_, r, emit| psi(r, emit, |p| p.memory.as_ref(), false)),
    c("container_pressure_memory_stalled_seconds_total", Counter, "seconds", NONE, "Total time duration no tasks in the container could make progress due to memory congestion.", |_, r, emit| psi(r, emit, |p| p.memory.as_ref(), true)),
    c("container_pressure_io_waiting_seconds_total", Counter, "seconds", NONE, "Total time duration tasks in the container have waited due to IO congestion.", |_, r, emit| psi(r, emit, |p| p.io.as_ref(), false)),
    c("container_pressure_io_stalled_seconds_total", Counter, "seconds", NONE, "Total time duration no tasks in the container could make progress due to IO congestion.", |_, r, emit| psi(r, emit, |p| p.io.as_ref(), true)),
    // Identity and liveness.
    c("container_start_time_seconds", Gauge, "seconds", NONE, "Start time of the container since unix epoch in seconds.", |_, r, emit| emit(&[], r.start.into())),
    c("container_last_seen", Gauge, "seconds", NONE, "Last time a container was seen by the exporter.", |s, _, emit| emit(&[], s.now.floor().into())),
    c("container_info", Gauge, "", &["runtime"], "Container identity: one series per container, value 1.", |_, r, emit| emit(&[r.runtime], 1u64.into())),
    // Machine.
    Family { name: "machine_cpu_cores", kind: Gauge, unit: "", labels: NONE, help: "Number of logical CPU cores.", source: Source::Machine(|s| s.cpu_cores) },
    Family { name: "machine_memory_bytes", kind: Gauge, unit: "bytes", labels: NONE, help: "Amount of memory installed on the machine.", source: Source::Machine(|s| s.mem_total) },
];
