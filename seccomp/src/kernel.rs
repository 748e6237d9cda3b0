//! The running kernel's version, as far as profiles care (`minKernel` is MAJOR.MINOR).

use std::fmt;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl KernelVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Parses "6.18", "6.18.0-1-amd64", "4.8": the first two dot-separated numbers.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::MinKernel(text.to_owned());
        let mut parts = text.trim().splitn(3, '.');
        let major = parts.next().and_then(leading_number).ok_or_else(bad)?;
        let minor = parts.next().and_then(leading_number).ok_or_else(bad)?;
        Ok(Self { major, minor })
    }

    /// The running kernel, from /proc/sys/kernel/osrelease.
    pub fn current() -> std::io::Result<Self> {
        // uname(2), not /proc/sys/kernel/osrelease: ~1 µs instead of ~50 µs on the launch path.
        let u = nix::sys::utsname::uname()?;
        let text = u.release().to_string_lossy();
        Self::parse(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
    }
}

/// The digits a version component starts with ("18-rc1" → 18); none → not a version.
fn leading_number(s: &str) -> Option<u32> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.get(..end).filter(|d| !d.is_empty())?.parse().ok()
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_strings() {
        assert_eq!(
            KernelVersion::parse("6.18.0-1-amd64").unwrap(),
            KernelVersion::new(6, 18)
        );
        assert_eq!(
            KernelVersion::parse("4.8").unwrap(),
            KernelVersion::new(4, 8)
        );
        assert_eq!(
            KernelVersion::parse("5.19-rc1\n").unwrap(),
            KernelVersion::new(5, 19)
        );
        assert!(KernelVersion::parse("6").is_err());
        assert!(KernelVersion::parse("x.y").is_err());
        assert!(KernelVersion::parse("").is_err());
        assert!(KernelVersion::new(4, 8) < KernelVersion::new(4, 10));
    }
}
