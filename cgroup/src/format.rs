//! The text formats cgroup files share, as pure parsers over text the caller already read
//! (the readers here read whole files; the FUSE views pread kept descriptors). They run on
//! every FUSE read and every scrape: no regexes, no allocation except for an error.
//!
//! Per-file formats live with their controller: `cpuacct.usage_all` in [`crate::cpu`], the
//! memory.stat key map in [`crate::memory`], PSI in [`crate::pressure`], io.stat in
//! [`crate::io`].

use std::path::Path;

use crate::error::{Error, Result};

/// The kernel's "unlimited" for v1 page-counter limits: `PAGE_COUNTER_MAX * PAGE_SIZE` rounded,
/// printed as 9223372036854771712 on 64-bit with 4 KiB pages. Anything at or above 2^62 is
/// treated as unlimited, as cAdvisor does, so other page sizes work too.
const UNLIMITED_FLOOR: u64 = 1 << 62;

/// A parse error naming `path` (only used in the message: callers without a full path pass
/// the file name) and quoting at most 200 characters of the offending text.
pub fn parse_err(path: &Path, what: &'static str, text: &str) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        what,
        text: text.chars().take(200).collect(),
    }
}

/// A single-value file (`memory.current`, `cpuacct.usage`): one unsigned integer.
pub fn u64_of(path: &Path, what: &'static str, text: &str) -> Result<u64> {
    // The kernel's spelling, digits and a newline, without the Unicode-aware trim.
    if let Some(v) = text.strip_suffix('\n').and_then(digits) {
        return Ok(v);
    }
    text.trim()
        .parse::<u64>()
        .map_err(|_| parse_err(path, what, text))
}

/// Parses a limit in any of its spellings: `max` (v2), `-1` (v1 quota, pids), a v1 page-counter
/// maximum, or a number. `None` means unlimited.
pub fn limit_of(path: &Path, text: &str) -> Result<Option<u64>> {
    let v = match text.strip_suffix('\n').and_then(digits) {
        Some(v) => v,
        None => return limit_of_trimmed(path, text.trim()),
    };
    Ok(if v >= UNLIMITED_FLOOR { None } else { Some(v) })
}

fn limit_of_trimmed(path: &Path, t: &str) -> Result<Option<u64>> {
    if t == "max" || t == "-1" {
        return Ok(None);
    }
    let v = u64_of(path, "a limit", t)?;
    Ok(if v >= UNLIMITED_FLOOR { None } else { Some(v) })
}

/// Iterates flat-keyed files: `key value` lines (memory.stat, cpu.stat, cpuacct.stat,
/// memory.events, memory.oom_control). Blank lines are skipped; any other line that is not
/// exactly a key and an unsigned integer is an error. The kernel's own spelling (one space,
/// digits) takes a byte-wise path: memory.stat's ~70 lines are parsed for every cgroup on
/// every scrape and FUSE read; any other spelling goes through the general one.
pub fn flat_keyed<'a>(
    path: &'a Path,
    text: &'a str,
) -> impl Iterator<Item = Result<(&'a str, u64)>> + 'a {
    FlatKeyed { path, rest: text }
}

struct FlatKeyed<'a> {
    path: &'a Path,
    rest: &'a str,
}

impl<'a> Iterator for FlatKeyed<'a> {
    type Item = Result<(&'a str, u64)>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.rest.is_empty() {
            if let Some((k, v, len)) = kernel_line(self.rest.as_bytes()) {
                // `len` ends at a newline or at the end: an ASCII boundary.
                let key = self.rest.get(..k)?;
                self.rest = self.rest.get(len..).unwrap_or("");
                return Some(Ok((key, v)));
            }
            let (line, rest) = self.rest.split_once('\n').unwrap_or((self.rest, ""));
            self.rest = rest;
            if let Some(r) = general_key_value(self.path, line) {
                return Some(r);
            }
        }
        None
    }
}

/// The first line of `b` in the kernel's spelling, `key digits\n`, in one pass: (key length,
/// value, bytes through the newline). None for any other spelling (or overflow).
fn kernel_line(b: &[u8]) -> Option<(usize, u64, usize)> {
    let k = b.iter().position(|c| c.is_ascii_whitespace())?;
    if k == 0 || b.get(k) != Some(&b' ') {
        return None;
    }
    let mut n = 0u64;
    let mut i = k + 1;
    loop {
        match b.get(i) {
            Some(b'\n') | None if i > k + 1 => return Some((k, n, (i + 1).min(b.len()))),
            Some(&c) if c.is_ascii_digit() => {
                n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            }
            _ => return None,
        }
        i += 1;
    }
}

/// One line as whitespace-separated `key value` (the general spelling); None for a blank line.
fn general_key_value<'a>(path: &Path, line: &'a str) -> Option<Result<(&'a str, u64)>> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() {
        return None;
    }
    let mut it = line.split_ascii_whitespace();
    match (it.next(), it.next(), it.next()) {
        (Some(k), Some(v), None) => Some(
            v.parse::<u64>()
                .map(|v| (k, v))
                .map_err(|_| parse_err(path, "a `key value` line", line)),
        ),
        _ => Some(Err(parse_err(path, "a `key value` line", line))),
    }
}

/// A plain decimal u64 (no sign, no spaces), None otherwise or on overflow.
pub fn digits(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |n, c| {
        let d = c.wrapping_sub(b'0');
        (d <= 9).then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_in_every_spelling() {
        let p = Path::new("x");
        assert_eq!(limit_of(p, "max\n").unwrap(), None);
        assert_eq!(limit_of(p, "-1\n").unwrap(), None);
        assert_eq!(limit_of(p, "9223372036854771712\n").unwrap(), None);
        assert_eq!(limit_of(p, "268435456\n").unwrap(), Some(268435456));
        assert!(limit_of(p, "12x").is_err());
        assert_eq!(limit_of(p, " 7 \n").unwrap(), Some(7));
        assert_eq!(u64_of(p, "bytes", "+7").unwrap(), 7);
        assert!(limit_of(p, "").is_err());
    }

    #[test]
    fn single_values() {
        let p = Path::new("memory.current");
        assert_eq!(u64_of(p, "bytes", "4096\n").unwrap(), 4096);
        assert!(u64_of(p, "bytes", "").is_err());
        assert!(u64_of(p, "bytes", "40 96\n").is_err());
        assert!(u64_of(p, "bytes", "-1\n").is_err());
        let e = u64_of(p, "bytes", &"9".repeat(500))
            .unwrap_err()
            .to_string();
        assert!(e.contains("memory.current") && e.len() < 300, "{e}");
    }

    #[test]
    fn flat_keyed_v1_and_v2_samples() {
        let p = Path::new("cpu.stat");
        let v2 = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 3\n";
        let ok: Vec<_> = flat_keyed(p, v2).collect::<Result<_>>().unwrap();
        assert_eq!(ok.first(), Some(&("usage_usec", 1500)));
        assert_eq!(ok.len(), 4);
        let v1 = "nr_periods 10\nnr_throttled 2\nthrottled_time 12345\n\n";
        let ok: Vec<_> = flat_keyed(p, v1).collect::<Result<_>>().unwrap();
        assert_eq!(
            ok,
            vec![
                ("nr_periods", 10),
                ("nr_throttled", 2),
                ("throttled_time", 12345)
            ]
        );
    }

    #[test]
    fn flat_keyed_rejects_garbage_and_truncation() {
        let p = Path::new("memory.stat");
        assert!(flat_keyed(p, "a 1\nb two\n").any(|r| r.is_err()));
        assert!(flat_keyed(p, "a 1 2\n").any(|r| r.is_err()));
        // Cut mid-line: a key without its value.
        assert!(flat_keyed(p, "a 1\nb").any(|r| r.is_err()));
        assert!(flat_keyed(p, "\u{fffd}\u{0}\n").any(|r| r.is_err()));
        assert_eq!(flat_keyed(p, "").count(), 0);
        for bad in ["a\n", "a -1\n", "a 18446744073709551616\n", " 5\n"] {
            assert!(flat_keyed(p, bad).any(|r| r.is_err()), "{bad:?}");
        }
    }

    #[test]
    fn flat_keyed_other_spellings_take_the_general_path() {
        let p = Path::new("memory.stat");
        assert!(flat_keyed(p, "a\tb 1\n").any(|r| r.is_err()));
        let got: Vec<_> = flat_keyed(p, "a  1\n\tb 2 \n \n\nc +3\r\nd 18446744073709551615")
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(got, vec![("a", 1), ("b", 2), ("c", 3), ("d", u64::MAX)]);
    }
}
