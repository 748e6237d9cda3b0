//! CPU and memory-node lists in the kernel's range syntax: `0-3,8,10-11`.

use std::fmt;
use std::path::Path;

use serde::{Serialize, Serializer};

use crate::error::Result;
use crate::parse;

/// A sorted, de-duplicated set of CPU (or NUMA node) numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuList(Vec<u32>);

/// CPU numbers above this are rejected as garbage rather than allocating a huge list.
const MAX_CPU: u32 = 1 << 16;

/// One `a-b` or `a` item of a list, checked (`a <= b <= MAX_CPU`).
fn range(part: &str) -> Option<(u32, u32)> {
    let (a, b) = match part.split_once('-') {
        Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
        None => {
            let x = part.parse::<u32>().ok()?;
            (x, x)
        }
    };
    (a <= b && b <= MAX_CPU).then_some((a, b))
}

/// The checked items of a list, in text order.
fn ranges(text: &str) -> impl Iterator<Item = Option<(u32, u32)>> + '_ {
    text.trim()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(range)
}

impl CpuList {
    pub fn parse(text: &str) -> Option<Self> {
        let mut v = Vec::new();
        for item in ranges(text) {
            let (a, b) = item?;
            v.extend(a..=b);
        }
        v.sort_unstable();
        v.dedup();
        Some(CpuList(v))
    }

    /// The number of CPUs in a list, without building it (the agent counts every cgroup's
    /// cpuset each scrape). The kernel prints ranges ascending and disjoint; any other
    /// spelling is counted through [`CpuList::parse`]. `None` when the text is not a list.
    pub fn count(text: &str) -> Option<usize> {
        let mut n = 0usize;
        let mut next = 0u32;
        for item in ranges(text) {
            let (a, b) = item?;
            if a < next {
                return Self::parse(text).map(|l| l.len());
            }
            n += (b - a) as usize + 1;
            next = b + 1;
        }
        Some(n)
    }

    pub(crate) fn parse_at(path: &Path, text: &str) -> Result<Self> {
        Self::parse(text).ok_or_else(|| parse::parse_err(path, "a CPU list", text))
    }

    pub fn from_cpus(cpus: impl IntoIterator<Item = u32>) -> Self {
        let mut v: Vec<u32> = cpus.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        CpuList(v)
    }

    /// `0..n`.
    pub fn first_n(n: u32) -> Self {
        CpuList((0..n).collect())
    }

    pub fn cpus(&self) -> &[u32] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.binary_search(&cpu).is_ok()
    }
    pub fn is_subset_of(&self, other: &CpuList) -> bool {
        self.0.iter().all(|c| other.contains(*c))
    }
}

impl fmt::Display for CpuList {
    /// Renders the compact kernel form (`0-3,8`); the empty list renders as the empty string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end = self.0[i];
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

impl Serialize for CpuList {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_agrees_with_parse() {
        for t in ["0-3,8,10-11\n", "", "\n", "3,1,2,2", "0-1,1-2", "7"] {
            assert_eq!(
                CpuList::count(t),
                CpuList::parse(t).map(|l| l.len()),
                "{t:?}"
            );
        }
        assert_eq!(CpuList::count("0-x"), None);
        assert_eq!(CpuList::count("3-1"), None);
    }

    #[test]
    fn ranges_round_trip() {
        // Cases from lxcfs's cpusetrange test, plus the empty and newline forms.
        for (text, cpus, shown) in [
            ("1,2", vec![1, 2], "1-2"),
            ("1-3,5", vec![1, 2, 3, 5], "1-3,5"),
            ("1,4-5", vec![1, 4, 5], "1,4-5"),
            ("0-3,8,10-11\n", vec![0, 1, 2, 3, 8, 10, 11], "0-3,8,10-11"),
            ("", vec![], ""),
            ("\n", vec![], ""),
            ("3,1,2,2", vec![1, 2, 3], "1-3"),
        ] {
            let l = CpuList::parse(text).unwrap();
            assert_eq!(l.cpus(), &cpus[..], "{text:?}");
            assert_eq!(l.to_string(), shown);
        }
        assert!(CpuList::parse("3-1").is_none());
        assert!(CpuList::parse("a").is_none());
        assert!(CpuList::parse("0-99999999").is_none());
        assert!(CpuList::parse("0-1").unwrap().contains(1));
        assert!(CpuList::parse("1")
            .unwrap()
            .is_subset_of(&CpuList::parse("0-1").unwrap()));
    }
}
