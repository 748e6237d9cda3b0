//! Single flag values: sizes, CPU counts, names, paths, volumes, environment entries, ids.
//! Pure parsers; each error names the flag and the value.

use std::path::{Component, Path, PathBuf};

use super::{invalid, SpecError, Volume};

/// Parses docker's size syntax: `512`, `512b`, `256k`, `256m`, `1g`, `1.5g`, `2t`, also with a
/// trailing `b`/`ib` (`256mb`, `256MiB`).
pub fn parse_size(flag: &'static str, s: &str) -> Result<u64, SpecError> {
    let err = || SpecError::Size {
        flag,
        value: s.to_owned(),
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(err());
    }
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(err()),
    };
    let v: f64 = num.parse().map_err(|_| err())?;
    let bytes = v * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// `--cpus 1.5` -> (quota, period) = (150000, 100000).
pub fn parse_cpus(s: &str, host_cpus: usize) -> Result<(u64, u64), SpecError> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| invalid("--cpus", s, "expected a number of CPUs such as 1.5"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(invalid("--cpus", s, "must be greater than 0"));
    }
    if v > host_cpus as f64 {
        return Err(invalid(
            "--cpus",
            s,
            format!("range of CPUs is from 0.01 to {host_cpus} (the host's CPUs)"),
        ));
    }
    let period = 100_000u64;
    let quota = (v * period as f64).round() as u64;
    if quota < 1000 {
        return Err(invalid("--cpus", s, "the minimum is 0.01"));
    }
    Ok((quota, period))
}

/// Container names, docker's rule.
pub fn validate_name(s: &str) -> Result<(), SpecError> {
    let mut chars = s.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && s.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "--name",
            s,
            "must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (at most 128 characters)",
        ))
    }
}

pub(super) fn validate_hostname(s: &str) -> Result<(), SpecError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "--hostname",
            s,
            "must be 1-64 characters of letters, digits, '-' and '.'",
        ))
    }
}

/// An absolute path without `..` (so a bind cannot climb out of the container's root).
pub(super) fn clean_abs(flag: &'static str, raw: &str, p: &str) -> Result<PathBuf, SpecError> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(invalid(flag, raw, format!("{p:?} is not an absolute path")));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(flag, raw, format!("{p:?} must not contain '..'")));
    }
    Ok(path.to_path_buf())
}

/// /proc and /sys hold the kernel's controls: a volume there could replace a masked file or
/// a read-only directory (runc's checkProcMount refuses the same).
pub fn under_proc_or_sys(container_path: &Path) -> bool {
    let mut c = container_path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir));
    matches!(c.next(), Some(Component::Normal(n)) if n == "proc" || n == "sys")
}

pub fn parse_volume(s: &str) -> Result<Volume, SpecError> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, ctr, mode) = match parts.as_slice() {
        [h, c] => (*h, *c, "rw"),
        [h, c, m] => (*h, *c, *m),
        _ => return Err(invalid("-v", s, "expected HOST:CONTAINER[:ro|rw]")),
    };
    let readonly = match mode {
        "ro" => true,
        "rw" => false,
        _ => {
            return Err(invalid(
                "-v",
                s,
                format!("unknown mode {mode:?} (ro or rw)"),
            ))
        }
    };
    let host = clean_abs("-v", s, host)?;
    let container = clean_abs("-v", s, ctr)?;
    if container == Path::new("/") {
        return Err(invalid("-v", s, "cannot bind over the container's /"));
    }
    if under_proc_or_sys(&container) {
        return Err(invalid("-v", s, "cannot mount on or under /proc or /sys"));
    }
    if !host.exists() {
        return Err(invalid(
            "-v",
            s,
            format!("{} does not exist", host.display()),
        ));
    }
    Ok(Volume {
        host,
        container,
        readonly,
    })
}

/// `-e K=V`; a bare `K` takes the value from the launcher's environment (docker), and is
/// dropped if unset there.
pub fn parse_env(
    s: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<(String, String)>, SpecError> {
    let (k, v) = match s.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (s, None),
    };
    if k.is_empty() || k.contains('\0') {
        return Err(invalid("-e", s, "expected KEY=VALUE with a non-empty KEY"));
    }
    Ok(v.or_else(|| lookup(k)).map(|v| (k.to_owned(), v)))
}

/// 64 random lowercase hex characters from getrandom(2).
pub fn new_id() -> std::io::Result<String> {
    let mut buf = [0u8; 32];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most buf.len() - filled bytes into buf[filled..].
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
