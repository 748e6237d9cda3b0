//! A byte-wise fast path for the PSI text parsed for every cgroup on every scrape, in the
//! kernel's own spelling; anything else is left to the cgroup crate's parser, so what is
//! accepted and rejected does not change. (`key value` files take the cgroup crate's
//! `flat_keyed`, fast itself.)

use cgsight_cgroup::format::digits;
use cgsight_cgroup::pressure::{Psi, PsiLine};

/// The `total=` of each PSI line (all the families export; the averages are not parsed), or
/// None when the text is not in the kernel's spelling, for `parse_psi` to judge.
pub fn psi_totals(text: &str) -> Option<Psi> {
    let mut psi = Psi::default();
    let mut saw_some = false;
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let (kind, rest) = line.split_once(' ')?;
        // The kernel prints total= last.
        let total = rest.rsplit_once(' ')?.1.strip_prefix("total=")?;
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
    use std::path::Path;

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
