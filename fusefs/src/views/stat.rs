//! /proc/stat: per-visible-CPU times from the container's cgroup.
//!
//! Counters start at the container's start (its init's start time): over the visible CPUs,
//! user + system come from the cgroup's CPU usage, steal is CPU time it wanted and did not get
//! ([`denied_ns`]: quota throttling, or waiting behind other cgroups' tasks), and idle is the
//! rest of (visible CPUs × age). So a container at its quota with a runnable thread per
//! visible CPU shows ≈0 % idle (busy + steal), one using half its quota ≈50 % idle, and an
//! idle one ≈100 %. Counters never go backwards ([`monotonic`]). btime is the reader's wall-clock boot
//! in its own time namespace ([`boottime_offset_secs`]): process start times in /proc/<pid>/stat
//! count from that namespace's boot, so `ps` adds them to this btime; processes / procs_running / procs_blocked describe the
//! container; intr, ctxt and softirq are zeroed (host-wide, nothing per cgroup to show).

use std::fmt::Write;

use cgsight_cgroup::cpu::PerCpu;

pub const NS_PER_TICK: u64 = 10_000_000;

/// One CPU line, in USER_HZ ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub user: u64,
    pub system: u64,
    pub idle: u64,
    pub steal: u64,
}

/// Busy time of one visible CPU in ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Busy {
    pub user_ns: u64,
    pub system_ns: u64,
}

/// Maps cgroup usage onto the visible CPUs. With per-CPU accounting (v1 `usage_all`), each visible CPU keeps its own usage and the usage on CPUs the
/// container does not see is spread evenly; without it (v2), user and system are spread evenly.
pub fn spread(
    visible: &[u32],
    per_cpu: Option<&[PerCpu]>,
    user_ns: u64,
    system_ns: u64,
) -> Vec<Busy> {
    let n = visible.len().max(1) as u64;
    let mut out = vec![Busy::default(); visible.len()];
    let (mut hidden_u, mut hidden_s) = (user_ns, system_ns);
    if let Some(per) = per_cpu {
        hidden_u = 0;
        hidden_s = 0;
        for c in per {
            match visible
                .iter()
                .position(|&v| v == c.cpu)
                .and_then(|i| out.get_mut(i))
            {
                Some(b) => {
                    b.user_ns += c.user_ns;
                    b.system_ns += c.system_ns;
                }
                None => {
                    hidden_u += c.user_ns;
                    hidden_s += c.system_ns;
                }
            }
        }
    }
    for b in &mut out {
        b.user_ns += hidden_u / n;
        b.system_ns += hidden_s / n;
    }
    out
}

/// Per-CPU ticks for a container `age_ns` old. No CPU is busier than its age: excess busy
/// time moves to CPUs with room (usage is accounted per CPU the task ran on, which may be more
/// CPUs than are visible). `steal_ns` (cumulative, whole container) is taken out of idle.
pub fn compute(age_ns: u64, busy: &[Busy], steal_ns: u64) -> Vec<CpuTicks> {
    let mut b: Vec<(u64, u64)> = busy.iter().map(|b| (b.user_ns, b.system_ns)).collect();
    let mut excess = 0u64;
    for (u, s) in &mut b {
        let t = *u + *s;
        if t > age_ns {
            let keep_u = (*u as u128 * age_ns as u128 / t as u128) as u64;
            excess += t - age_ns;
            *u = keep_u;
            *s = age_ns - keep_u;
        }
    }
    for (u, s) in &mut b {
        if excess == 0 {
            break;
        }
        let room = age_ns.saturating_sub(*u + *s);
        let add = room.min(excess);
        *u += add;
        excess -= add;
    }
    // Steal comes out of each CPU's idle in proportion to it, so no CPU shows more steal than
    // it had idle time and none is lost while another CPU has room.
    let idle_total: u64 = b.iter().map(|&(u, s)| age_ns.saturating_sub(u + s)).sum();
    let steal_total = steal_ns.min(idle_total);
    b.iter()
        .map(|&(u, s)| {
            let idle_ns = age_ns.saturating_sub(u + s);
            let steal = if idle_total == 0 {
                0
            } else {
                (steal_total as u128 * idle_ns as u128 / idle_total as u128) as u64
            };
            CpuTicks {
                user: u / NS_PER_TICK,
                system: s / NS_PER_TICK,
                idle: (idle_ns - steal) / NS_PER_TICK,
                steal: steal / NS_PER_TICK,
            }
        })
        .collect()
}

/// What says a container was denied CPU, each cumulative since its cgroup was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Denial {
    /// cpu.stat `throttled_time` (v1, ns) / `throttled_usec` (v2): summed over the CPUs whose
    /// run queues were throttled, so already CPU time.
    pub throttled_ns: u64,
    /// cpu.pressure `some`: wall time at least one runnable task waited for a CPU.
    pub psi_some_ns: u64,
    /// cpu.pressure `full`: wall time every runnable task waited (none ran).
    pub psi_full_ns: u64,
    /// The container's runnable threads at the last load sample.
    pub runnable: u64,
    /// Summed run-queue wait of its live threads (`/proc/<tid>/schedstat`): exact CPU time
    /// denied, but it forgets threads that exited.
    pub run_delay_ns: u64,
}

/// CPU time (ns, summed over CPUs) the container wanted and did not get, shown as steal as a
/// hypervisor shows the time a vCPU was runnable but not run. Throttling counts it directly.
/// PSI counts wall time, so it is turned into CPU time: while `some`, one CPU's worth waited;
/// while `full`, as many CPUs' worth as there are runnable threads, up to the visible CPUs
/// (exact for up to 2 visible CPUs, a lower bound beyond), and PSI weights each CPU by its
/// non-idle time, so the container's own running tasks on other CPUs dilute it. The live
/// threads' run-queue wait counts both causes exactly but forgets exited threads. Each is a
/// lower bound of the same time (throttled tasks also stall PSI and wait on the run queue), so
/// the largest is taken, not the sum.
pub fn denied_ns(d: &Denial, visible_cpus: usize) -> u64 {
    let wanting = d.runnable.clamp(1, visible_cpus.max(1) as u64);
    let contended = d
        .psi_some_ns
        .saturating_add(d.psi_full_ns.saturating_mul(wanting - 1));
    d.throttled_ns.max(contended).max(d.run_delay_ns)
}

/// Never shows a counter smaller than one shown before: `last` holds what was shown and is
/// updated. A changed CPU count keeps the CPUs that remain.
pub fn monotonic(last: &mut Vec<CpuTicks>, new: Vec<CpuTicks>) -> Vec<CpuTicks> {
    let out: Vec<CpuTicks> = new
        .iter()
        .enumerate()
        .map(|(i, n)| match last.get(i) {
            Some(l) => CpuTicks {
                user: n.user.max(l.user),
                system: n.system.max(l.system),
                idle: n.idle.max(l.idle),
                steal: n.steal.max(l.steal),
            },
            None => *n,
        })
        .collect();
    last.clone_from(&out);
    out
}

/// The container's task counts for the non-CPU lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Procs {
    /// Processes created in the container: its newest pid in its own numbering.
    pub processes: u64,
    pub running: u64,
    pub blocked: u64,
}

fn cpu_line(out: &mut String, name: &str, t: &CpuTicks) {
    let _ = writeln!(
        out,
        "{name} {} 0 {} {} 0 0 0 {} 0 0",
        t.user, t.system, t.idle, t.steal
    );
}

/// The boottime offset of a time namespace, in whole seconds (rounded), from
/// `/proc/<pid>/timens_offsets` (`boottime <secs> <nsecs>`): 0 when the file or the line is
/// missing (no time namespace) or garbled.
pub fn boottime_offset_secs(timens_offsets: &str) -> i64 {
    timens_offsets
        .lines()
        .find_map(|l| {
            let mut it = l.split_ascii_whitespace();
            if it.next()? != "boottime" {
                return None;
            }
            let secs: i64 = it.next()?.parse().ok()?;
            let nsecs: i64 = it.next()?.parse().ok()?;
            Some(secs.saturating_add((nsecs + 500_000_000).div_euclid(1_000_000_000)))
        })
        .unwrap_or(0)
}

/// `boot_offset_secs`: the reader's boottime offset ([`boottime_offset_secs`]); a namespace
/// whose clock starts later booted later by as much.
pub fn render(host: &str, cpus: &[CpuTicks], procs: &Procs, boot_offset_secs: i64) -> String {
    let mut out = String::with_capacity(256 + 48 * cpus.len());
    let mut sum = CpuTicks::default();
    for c in cpus {
        sum.user += c.user;
        sum.system += c.system;
        sum.idle += c.idle;
        sum.steal += c.steal;
    }
    cpu_line(&mut out, "cpu ", &sum);
    for (i, c) in cpus.iter().enumerate() {
        cpu_line(&mut out, &format!("cpu{i}"), c);
    }
    for line in host.lines() {
        let key = line.split_ascii_whitespace().next().unwrap_or("");
        match key {
            k if k.starts_with("cpu") => {}
            "intr" => out.push_str("intr 0\n"),
            "ctxt" => out.push_str("ctxt 0\n"),
            "softirq" => {
                out.push_str("softirq");
                for _ in 1..line.split_ascii_whitespace().count() {
                    out.push_str(" 0");
                }
                out.push('\n');
            }
            "btime" => match line
                .split_ascii_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<i64>().ok())
            {
                Some(b) => {
                    let _ = writeln!(out, "btime {}", b.saturating_sub(boot_offset_secs));
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            },
            "processes" => {
                let _ = writeln!(out, "processes {}", procs.processes);
            }
            "procs_running" => {
                let _ = writeln!(out, "procs_running {}", procs.running);
            }
            "procs_blocked" => {
                let _ = writeln!(out, "procs_blocked {}", procs.blocked);
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "cpu  100 0 50 1000 5 0 1 0 0 0\ncpu0 50 0 25 500 2 0 1 0 0 0\ncpu1 50 0 25 500 3 0 0 0 0 0\nintr 12345 1 2 3\nctxt 999\nbtime 1700000000\nprocesses 4242\nprocs_running 3\nprocs_blocked 1\nsoftirq 10 1 2 3 4 5 6 7 8 9 10\n";

    #[test]
    fn v1_per_cpu_with_hidden_cpus() {
        // cpuset 0-3, one visible (cpu 2): usage on 0, 1, 3 is poured into it
        let per = [(0, 10, 1), (1, 20, 2), (2, 30, 3), (3, 40, 4)].map(|(cpu, u, s)| PerCpu {
            cpu,
            user_ns: u,
            system_ns: s,
        });
        let b = spread(&[2], Some(&per), 0, 0);
        assert_eq!(
            b,
            vec![Busy {
                user_ns: 100,
                system_ns: 10
            }]
        );
    }

    #[test]
    fn v2_even_spread() {
        let b = spread(&[0, 1], None, 3_000, 1_000);
        assert_eq!(b[0], b[1]);
        assert_eq!(b[0].user_ns, 1_500);
    }

    #[test]
    fn full_quota_is_all_busy_and_idle_is_the_rest() {
        let s = 1_000_000_000u64;
        // 10 s old, 2 visible CPUs, used 15 s (quota 1.5): 5 s idle in total
        let t = compute(10 * s, &spread(&[0, 1], None, 14 * s, s), 0);
        let idle: u64 = t.iter().map(|c| c.idle).sum();
        let busy: u64 = t.iter().map(|c| c.user + c.system).sum();
        assert_eq!(busy, 1500);
        assert_eq!(idle, 500);
        // one CPU, busy the whole time
        let t = compute(
            10 * s,
            &[Busy {
                user_ns: 10 * s,
                system_ns: 0,
            }],
            0,
        );
        assert_eq!(
            t[0],
            CpuTicks {
                user: 1000,
                system: 0,
                idle: 0,
                steal: 0
            }
        );
    }

    #[test]
    fn excess_moves_to_cpus_with_room_and_steal_comes_out_of_idle() {
        let s = 1_000_000_000u64;
        let t = compute(
            10 * s,
            &[
                Busy {
                    user_ns: 12 * s,
                    system_ns: 0,
                },
                Busy {
                    user_ns: 2 * s,
                    system_ns: 0,
                },
            ],
            4 * s,
        );
        assert_eq!(t[0].user, 1000);
        assert_eq!(t[1].user, 400);
        assert_eq!(t[0].idle, 0);
        // all 4 s of steal land on the CPU with idle time, none on the full one
        assert_eq!(t[0].steal, 0);
        assert_eq!(t[1].steal, 400);
        assert_eq!(t[1].idle, 200);
    }

    #[test]
    fn throttled_container_at_full_quota_shows_no_idle() {
        let s = 1_000_000_000u64;
        // --cpus 1.5, 2 busy loops, 2 visible CPUs, 10 s old: 15 s used, each run queue
        // throttled a quarter of the time (5 s summed over CPUs); PSI saw 2.5 s of `some`.
        let d = Denial {
            throttled_ns: 5 * s,
            psi_some_ns: 5 * s / 2,
            psi_full_ns: 5 * s / 2,
            runnable: 2,
            run_delay_ns: 4 * s,
        };
        assert_eq!(denied_ns(&d, 2), 5 * s);
        // PSI diluted by the container's own tasks elsewhere: the threads' wait still counts
        assert_eq!(
            denied_ns(
                &Denial {
                    run_delay_ns: 6 * s,
                    ..d
                },
                2
            ),
            6 * s
        );
        let t = compute(10 * s, &spread(&[0, 1], None, 15 * s, 0), denied_ns(&d, 2));
        let idle: u64 = t.iter().map(|c| c.idle).sum();
        let steal: u64 = t.iter().map(|c| c.steal).sum();
        assert_eq!((idle, steal), (0, 500));
    }

    #[test]
    fn contended_container_shows_its_wait_as_steal_and_half_quota_half_idle() {
        let s = 1_000_000_000u64;
        // 2 loops on 2 visible CPUs, not throttled, but other cgroups left it 4.4 s of 20:
        // one loop waited 6 s while the other ran, both waited 4.8 s (some 10.8, full 4.8)
        let d = Denial {
            throttled_ns: 0,
            psi_some_ns: 108 * s / 10,
            psi_full_ns: 48 * s / 10,
            runnable: 2,
            run_delay_ns: 0,
        };
        let t = compute(
            10 * s,
            &spread(&[0, 1], None, 44 * s / 10, 0),
            denied_ns(&d, 2),
        );
        let idle: u64 = t.iter().map(|c| c.idle).sum();
        assert!(idle <= 100, "{t:?}");
        // one loop at --cpus 2 on 2 CPUs: half busy, half idle, nothing denied
        let t = compute(10 * s, &spread(&[0, 1], None, 10 * s, 0), 0);
        let idle: u64 = t.iter().map(|c| c.idle).sum();
        assert_eq!(idle, 1000);
        // the same loop on a contended host, waiting 4 s of 10: its wait is `some` and `full`
        // at once, but only one CPU's worth (one runnable thread), so the other CPU stays idle
        let d = Denial {
            throttled_ns: 0,
            psi_some_ns: 4 * s,
            psi_full_ns: 4 * s,
            runnable: 1,
            run_delay_ns: 4 * s,
        };
        assert_eq!(denied_ns(&d, 2), 4 * s);
        let t = compute(10 * s, &spread(&[0, 1], None, 6 * s, 0), denied_ns(&d, 2));
        let idle: u64 = t.iter().map(|c| c.idle).sum();
        assert_eq!(idle, 1000);
    }

    #[test]
    fn counters_never_decrease() {
        let mut last = Vec::new();
        let a = monotonic(
            &mut last,
            vec![CpuTicks {
                user: 10,
                system: 5,
                idle: 100,
                steal: 0,
            }],
        );
        assert_eq!(a[0].idle, 100);
        let b = monotonic(
            &mut last,
            vec![CpuTicks {
                user: 12,
                system: 4,
                idle: 90,
                steal: 0,
            }],
        );
        assert_eq!(
            b[0],
            CpuTicks {
                user: 12,
                system: 5,
                idle: 100,
                steal: 0
            }
        );
        // CPU count grows: the new CPU starts at its computed value
        let c = monotonic(
            &mut last,
            vec![
                CpuTicks::default(),
                CpuTicks {
                    user: 1,
                    ..Default::default()
                },
            ],
        );
        assert_eq!(c[0].user, 12);
        assert_eq!(c[1].user, 1);
    }

    #[test]
    fn renders_container_lines_and_keeps_btime() {
        let cpus = [
            CpuTicks {
                user: 10,
                system: 2,
                idle: 30,
                steal: 1,
            },
            CpuTicks {
                user: 20,
                system: 4,
                idle: 40,
                steal: 0,
            },
        ];
        let out = render(
            HOST,
            &cpus,
            &Procs {
                processes: 7,
                running: 1,
                blocked: 0,
            },
            0,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "cpu  30 0 6 70 0 0 0 1 0 0");
        assert_eq!(lines[1], "cpu0 10 0 2 30 0 0 0 1 0 0");
        assert_eq!(lines[2], "cpu1 20 0 4 40 0 0 0 0 0 0");
        assert!(out.contains("btime 1700000000\n"));
        assert!(out.contains("processes 7\nprocs_running 1\nprocs_blocked 0\n"));
        assert!(out.contains("intr 0\nctxt 0\n"));
        assert!(out.contains("softirq 0 0 0 0 0 0 0 0 0 0 0\n"));
        assert_eq!(out.lines().filter(|l| l.starts_with("cpu")).count(), 3);
    }

    #[test]
    fn btime_is_the_boot_in_the_readers_time_namespace() {
        // a container whose boottime was set back 1200.7 s booted 1201 s after the host
        let off = boottime_offset_secs(
            "monotonic           0         0\nboottime        -1201 300000000\n",
        );
        assert_eq!(off, -1201);
        let off2 = boottime_offset_secs("monotonic 0 0\nboottime -1201 600000000\n");
        assert_eq!(off2, -1200);
        let out = render(HOST, &[], &Procs::default(), off);
        assert!(out.contains("btime 1700001201\n"), "{out}");
        // no time namespace, or a garbled file: the host's btime
        assert_eq!(boottime_offset_secs(""), 0);
        assert_eq!(boottime_offset_secs("boottime x y\n"), 0);
        assert!(render(HOST, &[], &Procs::default(), 0).contains("btime 1700000000\n"));
    }
}
