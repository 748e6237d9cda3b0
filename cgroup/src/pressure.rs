//! Pressure stall information (`cpu.pressure`, `memory.pressure`, `io.pressure`). v2 only, but
//! a hybrid host's cgroup2 tree has them per cgroup even without controllers.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::parse::{self, join};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Total stall time in microseconds.
    pub total_us: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Psi {
    pub some: PsiLine,
    /// Absent for cpu on older kernels.
    pub full: Option<PsiLine>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Pressure {
    pub cpu: Option<Psi>,
    pub memory: Option<Psi>,
    pub io: Option<Psi>,
}

pub fn parse_psi(p: &Path, text: &str) -> Result<Psi> {
    let mut psi = Psi::default();
    let mut saw_some = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_ascii_whitespace();
        let kind = it.next().unwrap_or_default();
        let mut l = PsiLine::default();
        for kv in it {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| parse::parse_err(p, "a PSI field", line))?;
            let bad = || parse::parse_err(p, "a PSI value", line);
            match k {
                "avg10" => l.avg10 = v.parse().map_err(|_| bad())?,
                "avg60" => l.avg60 = v.parse().map_err(|_| bad())?,
                "avg300" => l.avg300 = v.parse().map_err(|_| bad())?,
                "total" => l.total_us = v.parse().map_err(|_| bad())?,
                _ => {}
            }
        }
        match kind {
            "some" => {
                psi.some = l;
                saw_some = true;
            }
            "full" => psi.full = Some(l),
            _ => return Err(parse::parse_err(p, "a `some`/`full` line", line)),
        }
    }
    if !saw_some {
        return Err(parse::parse_err(p, "a `some` line", text));
    }
    Ok(psi)
}

/// PSI of a cgroup2 directory; files that do not exist (PSI disabled, v1) are None.
pub fn read(dir: &Path) -> Result<Pressure> {
    let one = |name: &str| -> Result<Option<Psi>> {
        let p = join(dir, name);
        match parse::read_opt(&p) {
            Ok(Some(t)) => parse_psi(&p, &t).map(Some),
            Ok(None) => Ok(None),
            // With psi=0 on the kernel command line the files exist but reads fail EOPNOTSUPP.
            Err(crate::Error::Read { source, .. })
                if source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    };
    Ok(Pressure {
        cpu: one("cpu.pressure")?,
        memory: one("memory.pressure")?,
        io: one("io.pressure")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi() {
        let p = Path::new("cpu.pressure");
        let v = parse_psi(p, "some avg10=2.87 avg60=4.35 avg300=1.95 total=7821710\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        assert_eq!(v.some.total_us, 7821710);
        assert_eq!(v.some.avg10, 2.87);
        assert_eq!(v.full.unwrap().total_us, 0);
        assert!(parse_psi(p, "").is_err());
        assert!(parse_psi(p, "some avg10=x\n").is_err());
    }
}
