//! The served-file catalogue: every file the filesystem serves, its metric label (its path
//! under the mount) and the host file it virtualizes.

/// A file the filesystem serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum File {
    Meminfo,
    Cpuinfo,
    Stat,
    Uptime,
    Loadavg,
    Diskstats,
    Swaps,
    PressureCpu,
    PressureMemory,
    PressureIo,
    CpuOnline,
    CpuPresent,
    CpuPossible,
    Vmstat,
}

impl File {
    pub const ALL: [File; 14] = [
        File::Meminfo,
        File::Cpuinfo,
        File::Stat,
        File::Uptime,
        File::Loadavg,
        File::Diskstats,
        File::Swaps,
        File::PressureCpu,
        File::PressureMemory,
        File::PressureIo,
        File::CpuOnline,
        File::CpuPresent,
        File::CpuPossible,
        File::Vmstat,
    ];

    /// The label: the path under the mount's `proc/` or `sys/devices/system/`.
    pub fn label(self) -> &'static str {
        match self {
            File::Meminfo => "meminfo",
            File::Cpuinfo => "cpuinfo",
            File::Stat => "stat",
            File::Uptime => "uptime",
            File::Loadavg => "loadavg",
            File::Diskstats => "diskstats",
            File::Swaps => "swaps",
            File::PressureCpu => "pressure/cpu",
            File::PressureMemory => "pressure/memory",
            File::PressureIo => "pressure/io",
            File::CpuOnline => "cpu/online",
            File::CpuPresent => "cpu/present",
            File::CpuPossible => "cpu/possible",
            File::Vmstat => "vmstat",
        }
    }

    /// The host file it virtualizes: served as is when there is nothing to virtualize or
    /// the view fails.
    pub fn host_path(self) -> &'static str {
        match self {
            File::Meminfo => "/proc/meminfo",
            File::Cpuinfo => "/proc/cpuinfo",
            File::Stat => "/proc/stat",
            File::Uptime => "/proc/uptime",
            File::Loadavg => "/proc/loadavg",
            File::Diskstats => "/proc/diskstats",
            File::Swaps => "/proc/swaps",
            File::PressureCpu => "/proc/pressure/cpu",
            File::PressureMemory => "/proc/pressure/memory",
            File::PressureIo => "/proc/pressure/io",
            File::CpuOnline => "/sys/devices/system/cpu/online",
            File::CpuPresent => "/sys/devices/system/cpu/present",
            File::CpuPossible => "/sys/devices/system/cpu/possible",
            File::Vmstat => "/proc/vmstat",
        }
    }

    /// Its position in [`File::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_host_paths_under_the_mount() {
        for (i, f) in File::ALL.into_iter().enumerate() {
            assert_eq!(f.index(), i);
            assert!(f.host_path().ends_with(f.label()), "{f:?}");
        }
    }
}
