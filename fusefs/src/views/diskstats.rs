//! /proc/diskstats: the host's device names with the container's I/O counters (v1
//! blkio.throttle.*_recursive, v2 io.stat). Fields with no per-cgroup source are 0; devices the
//! container never touched are left out.

use std::fmt::Write;

use cgsight_cgroup::io::IoDevice;

pub fn render(host: &str, devs: &[IoDevice]) -> String {
    let mut out = String::new();
    for line in host.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(maj), Some(min), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let (Ok(maj), Ok(min)) = (maj.parse::<u32>(), min.parse::<u32>()) else {
            continue;
        };
        let Some(d) = devs.iter().find(|d| d.major == maj && d.minor == min) else {
            continue;
        };
        if d.rios == 0 && d.wios == 0 && d.dios == 0 && d.rbytes == 0 && d.wbytes == 0 {
            continue;
        }
        let _ = writeln!(
            out,
            "{maj:4} {min:7} {name} {} 0 {} 0 {} 0 {} 0 0 0 0 {} 0 {} 0 0 0",
            d.rios,
            d.rbytes / 512,
            d.wios,
            d.wbytes / 512,
            d.dios,
            d.dbytes / 512
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_host_counts_from_cgroup() {
        let host = " 254       0 vda 100 0 200 0 300 0 400 0 0 0 0 0 0 0 0 0 0\n 254       1 vda1 1 0 2 0 3 0 4 0 0 0 0 0 0 0 0 0 0\n   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let devs = [
            IoDevice {
                major: 254,
                minor: 0,
                rbytes: 4096,
                wbytes: 8192,
                rios: 1,
                wios: 2,
                ..Default::default()
            },
            IoDevice {
                major: 7,
                minor: 0,
                ..Default::default()
            },
        ];
        let out = render(host, &devs);
        assert_eq!(out, " 254       0 vda 1 0 8 0 2 0 16 0 0 0 0 0 0 0 0 0 0\n");
        assert_eq!(render(host, &[]), "");
    }
}
