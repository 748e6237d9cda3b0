//! The agent's own process, for the `process_*` families every exporter serves: CPU time,
//! memory, file descriptors and start time from /proc/self.

/// One reading of the agent process.
#[derive(Clone, Debug, PartialEq)]
pub struct Process {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// Seconds since the epoch.
    pub start_time: f64,
    /// None when /proc/self/fd cannot be listed.
    pub open_fds: Option<u64>,
    /// The soft `RLIMIT_NOFILE` (infinite when unlimited); None when unreadable.
    pub max_fds: Option<f64>,
}

/// The fields of /proc/<pid>/stat the families need, in kernel units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    pub vsize: u64,
    /// Resident set, in pages.
    pub rss_pages: u64,
}

/// Parses /proc/<pid>/stat. The command name may hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat(text: &str) -> Result<Stat, String> {
    let (_, rest) = text
        .rsplit_once(')')
        .ok_or_else(|| "no ')' after the command name".to_owned())?;
    // rest starts at field 3 (state); utime is field 14.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |field: usize| -> Result<u64, String> {
        let v = fields
            .get(field - 3)
            .ok_or_else(|| format!("only {} fields", fields.len() + 2))?;
        v.parse()
            .map_err(|_| format!("field {field} is not a number: {v:?}"))
    };
    Ok(Stat {
        cpu_ticks: num(14)?.saturating_add(num(15)?),
        start_ticks: num(22)?,
        vsize: num(23)?,
        rss_pages: num(24)?,
    })
}

/// The soft limit of "Max open files" in /proc/<pid>/limits.
pub fn parse_max_fds(text: &str) -> Result<f64, String> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .ok_or_else(|| "no \"Max open files\" line".to_owned())?;
    match line.split_whitespace().next() {
        Some("unlimited") => Ok(f64::INFINITY),
        Some(v) => v
            .parse::<u64>()
            .map(|n| n as f64)
            .map_err(|_| format!("soft limit {v:?} is not a number")),
        None => Err("empty \"Max open files\" line".to_owned()),
    }
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as u64)
}

/// Descriptors open in this process. Since Linux 6.2 the size of /proc/self/fd is the count,
/// which costs one stat instead of listing the agent's thousands of kept-open files each
/// scrape; older kernels report 0 there, and the directory is listed.
fn open_fds() -> Option<u64> {
    match std::fs::metadata("/proc/self/fd") {
        Ok(m) if m.len() > 0 => Some(m.len()),
        _ => std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
    }
}

/// Reads the agent's own process; `boot_time` (seconds since the epoch) anchors the start time.
pub fn read_self(boot_time: f64) -> Result<Process, String> {
    let text =
        std::fs::read_to_string("/proc/self/stat").map_err(|e| format!("/proc/self/stat: {e}"))?;
    let st = parse_stat(&text).map_err(|e| format!("/proc/self/stat: {e}"))?;
    let ticks = sysconf(libc::_SC_CLK_TCK).unwrap_or(100) as f64;
    let page = sysconf(libc::_SC_PAGESIZE).unwrap_or(4096);
    let open_fds = open_fds();
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| parse_max_fds(&t).ok());
    Ok(Process {
        cpu_seconds: st.cpu_ticks as f64 / ticks,
        resident_bytes: st.rss_pages.saturating_mul(page),
        virtual_bytes: st.vsize,
        start_time: boot_time + st.start_ticks as f64 / ticks,
        open_fds,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_an_awkward_command_name() {
        let t = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 50 0 0 20 0 \
                 3 0 12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0\n";
        assert_eq!(
            parse_stat(t).unwrap(),
            Stat {
                cpu_ticks: 200,
                start_ticks: 12345,
                vsize: 104857600,
                rss_pages: 2560
            }
        );
        assert!(parse_stat("4242 (x) S 1 2 3").is_err());
        assert!(parse_stat("garbage").is_err());
        assert!(parse_stat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 50 0 0 20 0 3 0 1 2 3").is_err());
    }

    #[test]
    fn parses_the_soft_open_files_limit() {
        let t = "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max cpu time              unlimited            unlimited            seconds   \n\
                 Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(t), Ok(1024.0));
        assert_eq!(
            parse_max_fds("Max open files  unlimited unlimited files\n"),
            Ok(f64::INFINITY)
        );
        assert!(parse_max_fds("Max processes 1 1\n").is_err());
        assert!(parse_max_fds("Max open files  lots  1 files\n").is_err());
    }

    #[test]
    fn reads_this_process() {
        let p = read_self(0.0).unwrap();
        assert!(p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes);
        assert!(p.open_fds.is_some_and(|n| n >= 3));
        assert!(p.max_fds.is_some_and(|n| n >= 3.0));
    }
}
