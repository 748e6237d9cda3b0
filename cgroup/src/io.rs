//! Block I/O per device: v1 `blkio.throttle.io_service{d,_bytes}_recursive`, v2 `io.stat`.
//! (v1's CFQ files vanished with CFQ in Linux 5.0; the throttle files are always there.)

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::layout::Version;
use crate::parse::{self, join};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IoDevice {
    pub major: u32,
    pub minor: u32,
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
    pub dbytes: u64,
    pub dios: u64,
}

fn devnum(p: &Path, s: &str) -> Result<(u32, u32)> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| parse::parse_err(p, "a major:minor", s))?;
    match (a.parse(), b.parse()) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => Err(parse::parse_err(p, "a major:minor", s)),
    }
}

/// v2 `io.stat`: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` (unknown keys ignored).
pub fn parse_io_stat(p: &Path, text: &str) -> Result<Vec<IoDevice>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_ascii_whitespace();
        let (major, minor) = devnum(p, it.next().unwrap_or_default())?;
        let mut d = IoDevice {
            major,
            minor,
            ..Default::default()
        };
        for kv in it {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| parse::parse_err(p, "key=value", line))?;
            let slot = match k {
                "rbytes" => &mut d.rbytes,
                "wbytes" => &mut d.wbytes,
                "rios" => &mut d.rios,
                "wios" => &mut d.wios,
                "dbytes" => &mut d.dbytes,
                "dios" => &mut d.dios,
                _ => continue,
            };
            // iocost adds float-valued keys; only the integer counters above are parsed.
            *slot = v
                .parse()
                .map_err(|_| parse::parse_err(p, "a counter", line))?;
        }
        out.push(d);
    }
    Ok(out)
}

/// v1 blkio `8:0 Read 123` rows plus a final `Total N`; `bytes` picks which counters to fill.
/// Merges one v1 blkio file (`bytes`: io_service_bytes, else io_serviced) into `devs`.
pub fn merge_blkio(
    p: &Path,
    text: &str,
    bytes: bool,
    devs: &mut BTreeMap<(u32, u32), IoDevice>,
) -> Result<()> {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        match f.as_slice() {
            ["Total", _] => continue,
            [dev, op, v] => {
                let (major, minor) = devnum(p, dev)?;
                let v: u64 = v
                    .parse()
                    .map_err(|_| parse::parse_err(p, "a counter", line))?;
                let d = devs.entry((major, minor)).or_insert_with(|| IoDevice {
                    major,
                    minor,
                    ..Default::default()
                });
                let slot = match (*op, bytes) {
                    ("Read", true) => &mut d.rbytes,
                    ("Write", true) => &mut d.wbytes,
                    ("Discard", true) => &mut d.dbytes,
                    ("Read", false) => &mut d.rios,
                    ("Write", false) => &mut d.wios,
                    ("Discard", false) => &mut d.dios,
                    _ => continue,
                };
                *slot = v;
            }
            _ => return Err(parse::parse_err(p, "a `dev op value` line", line)),
        }
    }
    Ok(())
}

pub fn read(dir: &Path, v: Version) -> Result<Vec<IoDevice>> {
    match v {
        Version::V2 => {
            let p = join(dir, "io.stat");
            match parse::read_opt(&p)? {
                Some(t) => parse_io_stat(&p, &t),
                None => Ok(Vec::new()),
            }
        }
        Version::V1 => {
            let mut devs = BTreeMap::new();
            for (file, bytes) in [
                ("blkio.throttle.io_service_bytes_recursive", true),
                ("blkio.throttle.io_serviced_recursive", false),
            ] {
                let p = join(dir, file);
                let text = parse::read(&p)?;
                merge_blkio(&p, &text, bytes, &mut devs)?;
            }
            Ok(devs.into_values().collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_io_stat() {
        let p = Path::new("io.stat");
        let d = parse_io_stat(p, "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:0 rbytes=1 wbytes=0 rios=1 wios=0 dbytes=0 dios=0 cost.vrate=100.00\n").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].major, d[0].minor, d[0].wbytes, d[0].wios),
            (8, 0, 8192, 2)
        );
        assert!(parse_io_stat(p, "8:0 rbytes=x\n").is_err());
    }

    #[test]
    fn v1_blkio() {
        let p = Path::new("blkio");
        let mut m = BTreeMap::new();
        merge_blkio(p, "254:0 Read 4096\n254:0 Write 12288\n254:0 Sync 0\n254:0 Async 16384\n254:0 Discard 0\n254:0 Total 16384\nTotal 16384\n", true, &mut m).unwrap();
        merge_blkio(
            p,
            "254:0 Read 1\n254:0 Write 3\n254:0 Total 4\nTotal 4\n",
            false,
            &mut m,
        )
        .unwrap();
        let d = &m[&(254, 0)];
        assert_eq!((d.rbytes, d.wbytes, d.rios, d.wios), (4096, 12288, 1, 3));
        // An empty cgroup reports only the Total line.
        merge_blkio(p, "Total 0\n", true, &mut BTreeMap::new()).unwrap();
    }
}
