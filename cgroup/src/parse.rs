//! Small, allocation-light parsers for the formats cgroup files use. They run on every FUSE read
//! and every scrape, so they avoid regexes and intermediate collections.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The kernel's "unlimited" for v1 page-counter limits: `PAGE_COUNTER_MAX * PAGE_SIZE` rounded,
/// printed as 9223372036854771712 on 64-bit with 4 KiB pages. Anything at or above 2^62 is
/// treated as unlimited, as cAdvisor does, so other page sizes work too.
const UNLIMITED_FLOOR: u64 = 1 << 62;

pub(crate) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a file that may legitimately be absent (e.g. `memory.peak` on older kernels).
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub(crate) fn parse_err(path: &Path, what: &'static str, text: &str) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        what,
        text: text.chars().take(200).collect(),
    }
}

pub(crate) fn u64_of(path: &Path, what: &'static str, text: &str) -> Result<u64> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| parse_err(path, what, text))
}

pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    let text = read(path)?;
    u64_of(path, "an unsigned integer", &text)
}

pub(crate) fn read_u64_opt(path: &Path) -> Result<Option<u64>> {
    match read_opt(path)? {
        Some(text) => Ok(Some(u64_of(path, "an unsigned integer", &text)?)),
        None => Ok(None),
    }
}

/// Parses a limit in any of its spellings: `max` (v2), `-1` (v1 quota, pids), a v1 page-counter
/// maximum, or a number. `None` means unlimited.
pub fn limit_of(path: &Path, text: &str) -> Result<Option<u64>> {
    let t = text.trim();
    if t == "max" || t == "-1" {
        return Ok(None);
    }
    let v = u64_of(path, "a limit", t)?;
    Ok(if v >= UNLIMITED_FLOOR { None } else { Some(v) })
}

pub(crate) fn read_limit(path: &Path) -> Result<Option<u64>> {
    let text = read(path)?;
    limit_of(path, &text)
}

/// Iterates `key value` lines (memory.stat, cpu.stat, memory.events, cpuacct.stat).
pub(crate) fn flat_keyed<'a>(
    path: &'a Path,
    text: &'a str,
) -> impl Iterator<Item = Result<(&'a str, u64)>> + 'a {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(move |line| {
            let mut it = line.split_ascii_whitespace();
            match (it.next(), it.next(), it.next()) {
                (Some(k), Some(v), None) => v
                    .parse::<u64>()
                    .map(|v| (k, v))
                    .map_err(|_| parse_err(path, "a `key value` line", line)),
                _ => Err(parse_err(path, "a `key value` line", line)),
            }
        })
}

pub(crate) fn join(dir: &Path, file: &str) -> PathBuf {
    dir.join(file)
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
        assert!(limit_of(p, "").is_err());
    }

    #[test]
    fn flat_keyed_rejects_garbage() {
        let p = Path::new("memory.stat");
        let ok: Vec<_> = flat_keyed(p, "a 1\nb 2\n").collect::<Result<_>>().unwrap();
        assert_eq!(ok, vec![("a", 1), ("b", 2)]);
        assert!(flat_keyed(p, "a 1\nb two\n").any(|r| r.is_err()));
        assert!(flat_keyed(p, "a 1 2\n").any(|r| r.is_err()));
    }
}
