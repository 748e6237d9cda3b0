//! Device rules in the v1 `devices.allow` syntax, runc's default list, and the one semantics both
//! enforcers share: rules are folded, in order, into a [`Table`] exactly as the v1 kernel folds
//! writes to `devices.allow`/`devices.deny`, and the v2 program is generated from that table.

use std::fmt;

use super::DeviceError;

/// Device kind. The bit values of `Char`/`Block` are the kernel's `BPF_DEVCG_DEV_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `a`: every char and block device.
    All,
    Char,
    Block,
}

impl Kind {
    /// `BPF_DEVCG_DEV_BLOCK` = 1, `BPF_DEVCG_DEV_CHAR` = 2 (the low 16 bits of `access_type`).
    pub fn bpf_code(self) -> Option<u32> {
        match self {
            Kind::All => None,
            Kind::Block => Some(1),
            Kind::Char => Some(2),
        }
    }

    fn letter(self) -> char {
        match self {
            Kind::All => 'a',
            Kind::Char => 'c',
            Kind::Block => 'b',
        }
    }

    /// The concrete kinds a rule of this kind covers.
    fn concrete(self) -> &'static [Kind] {
        match self {
            Kind::All => &[Kind::Char, Kind::Block],
            Kind::Char => &[Kind::Char],
            Kind::Block => &[Kind::Block],
        }
    }
}

/// A subset of `rwm`. Bit values are the kernel's `BPF_DEVCG_ACC_*` (mknod 1, read 2, write 4),
/// which are also the v1 controller's internal ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Access(u8);

impl Access {
    pub const MKNOD: Access = Access(1);
    pub const READ: Access = Access(2);
    pub const WRITE: Access = Access(4);
    pub const ALL: Access = Access(7);
    pub const NONE: Access = Access(0);

    pub fn bits(self) -> u8 {
        self.0
    }
    pub fn from_bits(bits: u8) -> Access {
        Access(bits & 7)
    }
    pub fn contains(self, other: Access) -> bool {
        other.0 & !self.0 == 0
    }
    pub fn intersects(self, other: Access) -> bool {
        self.0 & other.0 != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `r`, `w`, `m` in any order, each at most once, at least one.
    pub fn parse(s: &str) -> Option<Access> {
        let mut a = 0u8;
        for ch in s.chars() {
            let bit = match ch {
                'm' => 1,
                'r' => 2,
                'w' => 4,
                _ => return None,
            };
            if a & bit != 0 {
                return None;
            }
            a |= bit;
        }
        (a != 0).then_some(Access(a))
    }
}

impl fmt::Display for Access {
    /// In the kernel's `devices.list` order: `rwm`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, ch) in [(2, 'r'), (4, 'w'), (1, 'm')] {
            if self.0 & bit != 0 {
                write!(f, "{ch}")?;
            }
        }
        Ok(())
    }
}

/// One `devices.allow`/`devices.deny` line plus which of the two files it goes to.
/// `major`/`minor` of `None` mean `*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub kind: Kind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: Access,
}

/// Majors are 12 bits and minors 20 bits in the kernel's `dev_t`; larger numbers can match nothing.
const MAX_MAJOR: u32 = (1 << 12) - 1;
const MAX_MINOR: u32 = (1 << 20) - 1;

impl Rule {
    pub const fn new(
        allow: bool,
        kind: Kind,
        major: Option<u32>,
        minor: Option<u32>,
        access: Access,
    ) -> Rule {
        Rule {
            allow,
            kind,
            major,
            minor,
            access,
        }
    }

    /// `rwm` on a single character device.
    pub const fn char_dev(major: u32, minor: u32) -> Rule {
        Rule::new(true, Kind::Char, Some(major), Some(minor), Access::ALL)
    }

    /// `a *:* rwm`: the whole device space, which switches the default instead of adding an
    /// exception (in the v1 kernel and in [`Table::fold`]).
    pub fn is_everything(&self) -> bool {
        self.kind == Kind::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == Access::ALL
    }

    /// Parses a v1 line: `c 1:3 rwm`, `b 8:* r`, `a *:* rwm`, or a lone `a` (= `a *:* rwm`).
    pub fn parse(text: &str, allow: bool) -> Result<Rule, DeviceError> {
        let bad = |why: &'static str| DeviceError::Rule {
            text: text.to_owned(),
            why,
        };
        let mut words = text.split_ascii_whitespace();
        let kind = match words.next() {
            Some("a") => Kind::All,
            Some("c") => Kind::Char,
            Some("b") => Kind::Block,
            _ => return Err(bad("the type must be a, c or b")),
        };
        let Some(numbers) = words.next() else {
            if kind == Kind::All {
                return Ok(Rule::new(allow, Kind::All, None, None, Access::ALL));
            }
            return Err(bad("expected MAJOR:MINOR after the type"));
        };
        let (maj, min) = numbers
            .split_once(':')
            .ok_or(bad("expected MAJOR:MINOR, e.g. 1:3 or 136:*"))?;
        let major = parse_number(maj, MAX_MAJOR).ok_or(bad("the major must be * or 0-4095"))?;
        let minor = parse_number(min, MAX_MINOR).ok_or(bad("the minor must be * or 0-1048575"))?;
        let access = match words.next() {
            Some(a) => Access::parse(a).ok_or(bad("the access must be a subset of rwm"))?,
            None => return Err(bad("expected the access (a subset of rwm)")),
        };
        if words.next().is_some() {
            return Err(bad("unexpected text after the access"));
        }
        Ok(Rule::new(allow, kind, major, minor, access))
    }
}

fn parse_number(s: &str, max: u32) -> Option<Option<u32>> {
    if s == "*" {
        return Some(None);
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|n| *n <= max).map(Some)
}

fn fmt_number(n: Option<u32>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match n {
        Some(n) => write!(f, "{n}"),
        None => f.write_str("*"),
    }
}

impl fmt::Display for Rule {
    /// The v1 line, as `devices.list` prints it (`c 1:3 rwm`); allow/deny is the file's job.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.kind.letter())?;
        fmt_number(self.major, f)?;
        f.write_str(":")?;
        fmt_number(self.minor, f)?;
        write!(f, " {}", self.access)
    }
}

/// runc's default list (what docker and crun containers get), with /dev/fuse explicitly denied as
/// moby does: deny everything, allow mknod of any node (useless without read/write, and needed
/// by images that create their own /dev), then the standard nodes, ptys and tun.
pub fn default_rules() -> Vec<Rule> {
    let mknod_only = Access::MKNOD;
    vec![
        Rule::new(false, Kind::All, None, None, Access::ALL),
        Rule::new(true, Kind::Char, None, None, mknod_only),
        Rule::new(true, Kind::Block, None, None, mknod_only),
        Rule::char_dev(1, 3),                                           // null
        Rule::char_dev(1, 5),                                           // zero
        Rule::char_dev(1, 7),                                           // full
        Rule::char_dev(1, 8),                                           // random
        Rule::char_dev(1, 9),                                           // urandom
        Rule::char_dev(5, 0),                                           // tty
        Rule::char_dev(5, 1),                                           // console
        Rule::char_dev(5, 2),                                           // ptmx
        Rule::new(true, Kind::Char, Some(136), None, Access::ALL),      // pts
        Rule::char_dev(10, 200),                                        // net/tun
        Rule::new(false, Kind::Char, Some(10), Some(229), Access::ALL), // fuse
    ]
}

/// One exception of a [`Table`]: always a concrete kind (`a` rules are split into `c` and `b`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    pub kind: Kind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: Access,
}

impl Exception {
    fn same_key(&self, kind: Kind, major: Option<u32>, minor: Option<u32>) -> bool {
        self.kind == kind && self.major == major && self.minor == minor
    }

    fn covers(&self, kind: Kind, major: u32, minor: u32) -> bool {
        self.kind == kind
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
    }

    /// The v1 line of this exception.
    pub fn line(&self) -> String {
        Rule::new(true, self.kind, self.major, self.minor, self.access).to_string()
    }
}

/// What a cgroup enforces: a default and the exceptions to it, in the v1 controller's model.
///
/// Semantics (the kernel's, so v1 and the v2 program agree): with a deny default, an access is
/// allowed when one exception covers the device and holds every requested bit; with an allow
/// default, it is denied when one exception covers the device and holds any requested bit.
/// Rules fold in order: `a *:* rwm` resets the default and drops the exceptions; a rule against
/// the default adds its bits to the exception with the same type:major:minor; a rule agreeing
/// with the default only takes bits back from the exception with that *same* key. So a deny of
/// `c 10:229` does not carve /dev/fuse out of an earlier `c *:* m`: the later rule wins only on
/// an identical key, as in v1, and a wider grant stays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub default_allow: bool,
    pub exceptions: Vec<Exception>,
}

impl Table {
    /// Folds `rules` onto a fresh cgroup under an unrestricted parent (allow everything).
    pub fn fold(rules: &[Rule]) -> Table {
        let mut t = Table {
            default_allow: true,
            exceptions: Vec::new(),
        };
        for r in rules {
            t.apply(r);
        }
        t
    }

    fn apply(&mut self, r: &Rule) {
        if r.is_everything() {
            self.default_allow = r.allow;
            self.exceptions.clear();
            return;
        }
        for &kind in r.kind.concrete() {
            let existing = self
                .exceptions
                .iter()
                .position(|e| e.same_key(kind, r.major, r.minor));
            match (r.allow != self.default_allow, existing) {
                (true, Some(i)) => {
                    if let Some(e) = self.exceptions.get_mut(i) {
                        e.access = Access(e.access.0 | r.access.0);
                    }
                }
                (true, None) => self.exceptions.push(Exception {
                    kind,
                    major: r.major,
                    minor: r.minor,
                    access: r.access,
                }),
                (false, Some(i)) => {
                    if let Some(e) = self.exceptions.get_mut(i) {
                        e.access = Access(e.access.0 & !r.access.0);
                        if e.access.is_empty() {
                            self.exceptions.remove(i);
                        }
                    }
                }
                (false, None) => {}
            }
        }
    }

    /// Whether `access` to the device `kind major:minor` is allowed (`kind` is Char or Block).
    pub fn permits(&self, kind: Kind, major: u32, minor: u32, access: Access) -> bool {
        let mut hits = self
            .exceptions
            .iter()
            .filter(|e| e.covers(kind, major, minor));
        if self.default_allow {
            !hits.any(|e| e.access.intersects(access))
        } else {
            hits.any(|e| e.access.contains(access))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_v1_lines() {
        for line in [
            "c 1:3 rwm",
            "b 8:* r",
            "c *:* m",
            "c 136:* rwm",
            "a *:* rwm",
            "b 7:0 rw",
        ] {
            assert_eq!(Rule::parse(line, true).unwrap().to_string(), line);
        }
        // Access is printed in the kernel's order whatever the input order.
        assert_eq!(
            Rule::parse("c 1:3 mwr", true).unwrap().to_string(),
            "c 1:3 rwm"
        );
        let a = Rule::parse("a", false).unwrap();
        assert!(a.is_everything() && !a.allow);
        assert_eq!(a.to_string(), "a *:* rwm");
        assert!(!Rule::parse("a *:* r", true).unwrap().is_everything());
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "",
            "x 1:3 rwm",
            "c",
            "c 1:3",
            "c 1-3 rwm",
            "c 1: rwm",
            "c :3 rwm",
            "c 1:3 rwx",
            "c 1:3 rr",
            "c 4096:0 r",
            "c 1:1048576 r",
            "c -1:3 r",
            "c 1:3 r extra",
            "c +1:3 r",
        ] {
            let e = Rule::parse(bad, true).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn defaults_fold_to_runc_list() {
        let t = Table::fold(&default_rules());
        assert!(!t.default_allow);
        let lines: Vec<String> = t.exceptions.iter().map(Exception::line).collect();
        assert_eq!(
            lines,
            [
                "c *:* m",
                "b *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
                "c 10:200 rwm",
            ]
        );
        let rw = Access::from_bits(Access::READ.bits() | Access::WRITE.bits());
        assert!(t.permits(Kind::Char, 1, 3, rw));
        assert!(t.permits(Kind::Char, 136, 7, rw));
        assert!(t.permits(Kind::Block, 7, 0, Access::MKNOD));
        assert!(!t.permits(Kind::Block, 7, 0, Access::READ));
        assert!(!t.permits(Kind::Char, 10, 229, Access::READ)); // fuse
        assert!(!t.permits(Kind::Char, 10, 232, Access::WRITE)); // kvm
        assert!(!t.permits(Kind::Char, 10, 237, Access::READ)); // loop-control
                                                                // mknod + read together needs one exception holding both.
        let mr = Access::from_bits(Access::MKNOD.bits() | Access::READ.bits());
        assert!(!t.permits(Kind::Char, 4, 1, mr));
    }

    #[test]
    fn fold_follows_the_v1_kernel() {
        let r = |l: &str, allow| Rule::parse(l, allow).unwrap();
        // Allow default: a deny adds an exception, a later allow of the same key removes bits.
        let t = Table::fold(&[r("c 1:3 rw", false), r("c 1:3 w", true)]);
        assert!(t.default_allow);
        assert_eq!(t.exceptions.len(), 1);
        assert!(!t.permits(Kind::Char, 1, 3, Access::READ));
        assert!(t.permits(Kind::Char, 1, 3, Access::WRITE));
        // Deny default: allows on one key merge; a deny takes bits back from that key only.
        let t = Table::fold(&[
            r("a", false),
            r("c 1:3 r", true),
            r("c 1:3 w", true),
            r("c 1:* m", true),
            r("c 1:3 w", false),
            r("c 1:5 m", false),
        ]);
        assert!(t.permits(Kind::Char, 1, 3, Access::READ));
        assert!(!t.permits(Kind::Char, 1, 3, Access::WRITE));
        assert!(t.permits(Kind::Char, 1, 5, Access::MKNOD)); // the wider c 1:* m stays
                                                             // `a` with a narrower range is split into c and b exceptions.
        let t = Table::fold(&[r("a", false), r("a 8:* r", true)]);
        assert_eq!(t.exceptions.len(), 2);
        assert!(t.permits(Kind::Block, 8, 1, Access::READ));
        assert!(t.permits(Kind::Char, 8, 1, Access::READ));
        // `a *:* rwm` resets everything before it.
        let t = Table::fold(&[r("a", false), r("c 1:3 rwm", true), r("a", true)]);
        assert_eq!(t, Table::fold(&[]));
    }
}
