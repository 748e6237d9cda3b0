//! /sys/devices/system/cpu/cpuN/{online,topology/*,cache/indexK/*}: the host's visible CPUs
//! renumbered 0..n−1.
//!
//! View CPU i mirrors the i-th visible host CPU. IDs (core_id, physical_package_id, die_id,
//! cluster_id, a cache's id) are the host's; every CPU list or mask is the host's restricted
//! to the visible CPUs and renumbered, so siblings always point at CPUs the reader sees and
//! lscpu/hwloc count threads, cores and sockets of one consistent small machine. A host
//! without topology files (some VMs) gets one core per CPU in one package.

use std::collections::BTreeMap;
use std::fmt::Write;

use cgsight_cgroup::CpuList;

/// The files of `topology/`.
pub const TOPOLOGY_FILES: [&str; 16] = [
    "core_id",
    "physical_package_id",
    "die_id",
    "cluster_id",
    "thread_siblings",
    "thread_siblings_list",
    "core_siblings",
    "core_siblings_list",
    "core_cpus",
    "core_cpus_list",
    "package_cpus",
    "package_cpus_list",
    "die_cpus",
    "die_cpus_list",
    "cluster_cpus",
    "cluster_cpus_list",
];

/// The files of `cache/indexK/`.
pub const CACHE_FILES: [&str; 10] = [
    "level",
    "type",
    "size",
    "ways_of_associativity",
    "coherency_line_size",
    "number_of_sets",
    "physical_line_partition",
    "id",
    "shared_cpu_list",
    "shared_cpu_map",
];

/// Most cache indices mirrored (x86 has 4: L1d, L1i, L2, L3).
pub const MAX_CACHES: usize = 16;

/// A leaf under cpuN/.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    Online,
    /// An index into [`TOPOLOGY_FILES`].
    Topology(usize),
    /// A cache index and an index into [`CACHE_FILES`].
    Cache(usize, usize),
}

/// One host CPU's topology and cache files (name → trimmed content).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostCpu {
    pub topology: BTreeMap<String, String>,
    pub caches: Vec<BTreeMap<String, String>>,
}

/// The view CPUs (indices into `visible`) among a host CPU list; None if it does not parse.
fn renumber(host_list: &str, visible: &[u32]) -> Option<Vec<usize>> {
    let l = CpuList::parse(host_list.trim())?;
    Some(
        visible
            .iter()
            .enumerate()
            .filter(|(_, c)| l.cpus().contains(c))
            .map(|(i, _)| i)
            .collect(),
    )
}

/// A CPU list as the kernel prints it: ranges joined by commas.
pub fn list(cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while let Some(&start) = cpus.get(i) {
        let mut end = start;
        while cpus.get(i + 1) == Some(&(end + 1)) {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    out.push('\n');
    out
}

/// A CPU mask as the kernel prints it for `n` possible CPUs: hex, in comma-separated 32-bit
/// words, the first as wide as the CPUs above the last whole word need.
pub fn mask(cpus: &[usize], n: usize) -> String {
    let n = n.max(1);
    let words = n.div_ceil(32);
    let mut w = vec![0u32; words];
    for &c in cpus.iter().filter(|&&c| c < n) {
        if let Some(x) = w.get_mut(c / 32) {
            *x |= 1 << (c % 32);
        }
    }
    let top_bits = n - (words - 1) * 32;
    let mut out = String::new();
    for (k, x) in w.iter().enumerate().rev() {
        if k + 1 == words {
            let _ = write!(out, "{x:0width$x}", width = top_bits.div_ceil(4));
        } else {
            let _ = write!(out, ",{x:08x}");
        }
    }
    out.push('\n');
    out
}

/// A sibling set of view CPU `i` when the host has no file for it: `wide` sets (package, die,
/// core siblings, cluster) are every visible CPU, narrow ones (thread, core) the CPU itself.
fn synthesized(name: &str, i: usize, n: usize) -> Vec<usize> {
    let base = name.trim_end_matches("_list");
    if matches!(base, "thread_siblings" | "core_cpus") {
        vec![i]
    } else {
        (0..n).collect()
    }
}

/// The contents of `leaf` of view CPU `i`, or None when it does not exist (no such CPU, or
/// the host has no such cache file).
pub fn render(host: &HostCpu, visible: &[u32], i: usize, leaf: Leaf) -> Option<String> {
    let n = visible.len();
    if i >= n {
        return None;
    }
    match leaf {
        Leaf::Online => Some("1\n".to_owned()),
        Leaf::Topology(t) => {
            let name = *TOPOLOGY_FILES.get(t)?;
            if name.ends_with("_id") {
                let v = host.topology.get(name).map(String::as_str);
                return Some(match (name, v) {
                    (_, Some(v)) => format!("{v}\n"),
                    ("core_id", None) => format!("{i}\n"),
                    (_, None) => "0\n".to_owned(),
                });
            }
            let list_name = if name.ends_with("_list") {
                name.to_owned()
            } else {
                format!("{name}_list")
            };
            let cpus = host
                .topology
                .get(&list_name)
                .and_then(|l| renumber(l, visible))
                .filter(|c| c.contains(&i))
                .unwrap_or_else(|| synthesized(name, i, n));
            Some(if name.ends_with("_list") {
                list(&cpus)
            } else {
                mask(&cpus, n)
            })
        }
        Leaf::Cache(k, j) => {
            let cache = host.caches.get(k)?;
            let name = *CACHE_FILES.get(j)?;
            match name {
                "shared_cpu_list" | "shared_cpu_map" => {
                    let cpus = cache
                        .get("shared_cpu_list")
                        .and_then(|l| renumber(l, visible))
                        .filter(|c| c.contains(&i))
                        .unwrap_or_else(|| vec![i]);
                    Some(if name == "shared_cpu_list" {
                        list(&cpus)
                    } else {
                        mask(&cpus, n)
                    })
                }
                _ => cache.get(name).map(|v| format!("{v}\n")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(pairs: &[(&str, &str)], caches: &[&[(&str, &str)]]) -> HostCpu {
        let m = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        HostCpu {
            topology: m(pairs),
            caches: caches.iter().map(|c| m(c)).collect(),
        }
    }

    fn t(name: &str) -> Leaf {
        Leaf::Topology(TOPOLOGY_FILES.iter().position(|&x| x == name).expect(name))
    }

    fn c(k: usize, name: &str) -> Leaf {
        Leaf::Cache(k, CACHE_FILES.iter().position(|&x| x == name).expect(name))
    }

    #[test]
    fn lists_and_masks_print_as_the_kernel_does() {
        assert_eq!(list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8\n");
        assert_eq!(list(&[3]), "3\n");
        assert_eq!(mask(&[0, 1], 2), "3\n");
        assert_eq!(mask(&[0], 8), "01\n");
        assert_eq!(mask(&[0, 33], 40), "02,00000001\n");
        assert_eq!(mask(&[31], 32), "80000000\n");
    }

    #[test]
    fn smt_host_cpus_2_and_6_become_a_consistent_two_cpu_view() {
        // host: 8 CPUs, SMT siblings (n, n+4), one package; the container sees 2 and 6
        let h2 = host(
            &[
                ("core_id", "2"),
                ("physical_package_id", "0"),
                ("thread_siblings_list", "2,6"),
                ("core_cpus_list", "2,6"),
                ("core_siblings_list", "0-7"),
                ("package_cpus_list", "0-7"),
            ],
            &[
                &[
                    ("level", "1"),
                    ("type", "Data"),
                    ("size", "32K"),
                    ("shared_cpu_list", "2,6"),
                ],
                &[
                    ("level", "3"),
                    ("type", "Unified"),
                    ("size", "32768K"),
                    ("shared_cpu_list", "0-7"),
                ],
            ],
        );
        let vis = [2, 6];
        assert_eq!(render(&h2, &vis, 0, t("core_id")).as_deref(), Some("2\n"));
        assert_eq!(
            render(&h2, &vis, 0, t("thread_siblings_list")).as_deref(),
            Some("0-1\n")
        );
        assert_eq!(
            render(&h2, &vis, 0, t("thread_siblings")).as_deref(),
            Some("3\n")
        );
        assert_eq!(
            render(&h2, &vis, 0, t("package_cpus_list")).as_deref(),
            Some("0-1\n")
        );
        assert_eq!(render(&h2, &vis, 0, t("die_id")).as_deref(), Some("0\n"));
        assert_eq!(render(&h2, &vis, 0, c(0, "size")).as_deref(), Some("32K\n"));
        assert_eq!(
            render(&h2, &vis, 0, c(1, "shared_cpu_map")).as_deref(),
            Some("3\n")
        );
        assert_eq!(render(&h2, &vis, 0, c(1, "ways_of_associativity")), None);
        assert_eq!(render(&h2, &vis, 0, c(2, "size")), None);
        assert_eq!(render(&h2, &vis, 0, Leaf::Online).as_deref(), Some("1\n"));
        assert_eq!(render(&h2, &vis, 2, Leaf::Online), None);
    }

    #[test]
    fn hidden_siblings_drop_out_and_a_bare_host_gets_one_core_per_cpu() {
        // host CPU 0's sibling 4 is not visible: the view's CPU 0 is a core of its own
        let h0 = host(
            &[
                ("thread_siblings_list", "0,4"),
                ("core_siblings_list", "0-7"),
            ],
            &[],
        );
        let vis = [0, 1];
        assert_eq!(
            render(&h0, &vis, 0, t("thread_siblings_list")).as_deref(),
            Some("0\n")
        );
        assert_eq!(
            render(&h0, &vis, 0, t("core_siblings_list")).as_deref(),
            Some("0-1\n")
        );
        let bare = HostCpu::default();
        assert_eq!(render(&bare, &vis, 1, t("core_id")).as_deref(), Some("1\n"));
        assert_eq!(
            render(&bare, &vis, 1, t("core_cpus_list")).as_deref(),
            Some("1\n")
        );
        assert_eq!(
            render(&bare, &vis, 1, t("package_cpus")).as_deref(),
            Some("3\n")
        );
        // garbage in a host list: synthesized, never a panic
        let junk = host(&[("thread_siblings_list", "x-y")], &[]);
        assert_eq!(
            render(&junk, &vis, 1, t("thread_siblings_list")).as_deref(),
            Some("1\n")
        );
    }
}
