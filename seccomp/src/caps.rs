//! Capability sets as the launcher holds them (a bit mask by capability number) and the
//! `CAP_*` names profiles use in `includes`/`excludes`.

/// Capability names by number (linux/capability.h), 0..=40.
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A set of capabilities: bit N set = capability number N held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CapSet(pub u64);

impl CapSet {
    /// moby's default 14: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
    /// NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
    pub fn docker_default() -> Self {
        Self::from_numbers(&[0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31])
    }

    /// Every capability this crate knows by name.
    pub fn all() -> Self {
        Self::from_numbers(&(0..NAMES.len() as u32).collect::<Vec<_>>())
    }

    pub fn from_numbers(caps: &[u32]) -> Self {
        Self(
            caps.iter()
                .filter(|&&c| c < 64)
                .fold(0, |m, c| m | (1 << c)),
        )
    }

    /// Whether the named capability (`CAP_SYS_ADMIN` or `SYS_ADMIN`, any case) is held;
    /// `None` for a name this crate does not know.
    pub fn has_name(&self, name: &str) -> Option<bool> {
        let upper = name.trim().to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        let number = NAMES.iter().position(|n| *n == full)?;
        Some(self.0 & (1 << number) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_against_the_mask() {
        let d = CapSet::docker_default();
        assert_eq!(d.has_name("CAP_CHOWN"), Some(true));
        assert_eq!(d.has_name("sys_chroot"), Some(true));
        assert_eq!(d.has_name("CAP_SYS_ADMIN"), Some(false));
        assert_eq!(d.has_name("CAP_NOPE"), None);
        assert_eq!(CapSet::all().has_name("CAP_CHECKPOINT_RESTORE"), Some(true));
        assert_eq!(d.0.count_ones(), 14);
    }
}
