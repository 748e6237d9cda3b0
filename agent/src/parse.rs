//! Byte-wise fast paths for the text parsed for every cgroup on every scrape, in the kernel's
//! own spelling; anything else falls back to (or is left to) the cgroup crate's parsers, so
//! what is accepted and rejected does not change.

use std::path::Path;

use cgsight_cgroup::format::{flat_keyed, parse_err};
use cgsight_cgroup::pressure::{Psi, PsiLine};
use cgsight_cgroup::Error;

type Result<T> = std::result::Result<T, Error>;

/// `key value` lines as the cgroup crate's `flat_keyed`, with a byte-wise fast path for the
/// kernel's own spelling (one space, digits): memory.stat's ~45 lines are parsed for every
/// cgroup on every scrape. Any other spelling goes through `flat_keyed`.
pub fn key_values<'a>(
    p: &'a Path,
    text: &'a str,
) -> impl Iterator<Item = Result<(&'a str, u64)>> + 'a {
    text.split('\n')
        .filter(|l| !l.is_empty())
        .map(move |line| match line.split_once(' ') {
            Some((k, v)) if !k.is_empty() => match digits(v) {
                Some(n) => Ok((k, n)),
                None => slow_key_value(p, line),
            },
            _ => slow_key_value(p, line),
        })
}

fn slow_key_value<'a>(p: &'a Path, line: &'a str) -> Result<(&'a str, u64)> {
    flat_keyed(p, line)
        .next()
        .unwrap_or_else(|| Err(parse_err(p, "a `key value` line", line)))
}

/// A plain decimal u64 (no sign, no spaces), None otherwise or on overflow.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |n, c| {
        let d = c.wrapping_sub(b'0');
        (d <= 9).then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// The `total=` of each PSI line (all the families export; the averages are not parsed), or
/// None when the text is not in the kernel's spelling, for `parse_psi` to judge.
pub fn psi_totals(text: &str) -> Option<Psi> {
    let mut psi = Psi::default();
    let mut saw_some = false;
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let (kind, rest) = line.split_once(' ')?;
        let total = rest.rsplit_once("total=")?.1;
        let l = PsiLine {
            total_us: digits(total)?,
            ..Default::default()
        };
        match kind {
            "some" => {
                psi.some = l;
                saw_some = true;
            }
            "full" => psi.full = Some(l),
            _ => return None,
        }
    }
    saw_some.then_some(psi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgsight_cgroup::pressure::parse_psi;

    fn all(text: &str) -> Result<Vec<(&str, u64)>> {
        key_values(Path::new("memory.stat"), text).collect()
    }

    #[test]
    fn key_values_match_flat_keyed() {
        let p = Path::new("memory.stat");
        for text in [
            "cache 0\nrss 4096\ntotal_rss 18446744073709551615\n",
            "a  1\n\tb 2 \n\n",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        ] {
            let want: Vec<_> = flat_keyed(p, text).collect::<Result<_>>().unwrap();
            assert_eq!(all(text).unwrap(), want, "{text:?}");
        }
        for bad in [
            "a\n",
            "a -1\n",
            "a 1 2\n",
            "a 18446744073709551616\n",
            " 5\n",
        ] {
            assert!(all(bad).is_err(), "{bad:?}");
            assert!(flat_keyed(p, bad).any(|r| r.is_err()), "{bad:?}");
        }
    }

    #[test]
    fn psi_totals_match_parse_psi_totals() {
        let p = Path::new("io.pressure");
        let text = "some avg10=0.12 avg60=1.00 avg300=0.00 total=123456\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=789\n";
        let fast = psi_totals(text).unwrap();
        let slow = parse_psi(p, text).unwrap();
        assert_eq!(fast.some.total_us, slow.some.total_us);
        assert_eq!(fast.full.map(|l| l.total_us), Some(789));
        let cpu = psi_totals("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n").unwrap();
        assert_eq!((cpu.some.total_us, cpu.full), (5, None));
        // Not the kernel's spelling: left to parse_psi.
        assert!(psi_totals("full avg10=0 total=1\n").is_none());
        assert!(psi_totals("some total=x\n").is_none());
        assert!(psi_totals("").is_none());
    }
}
