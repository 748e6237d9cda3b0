//! The cgroup v1 enforcer: the `devices` controller's `devices.allow` and `devices.deny`.

use std::fs;
use std::io;
use std::path::Path;

use super::rules::Table;
use super::DeviceError;

/// Writes `t` to the v1 devices cgroup `dir`: first the default (`a` to `devices.deny` or
/// `devices.allow`, which also drops every inherited exception), then each exception to the
/// other file. The kernel refuses to change the default of a cgroup that has child cgroups
/// (EINVAL), and grants nothing the parent lacks (EPERM), so call this on the container's
/// fresh cgroup, before the container can create children.
pub fn write_table(dir: &Path, t: &Table) -> Result<(), DeviceError> {
    let (default_file, exception_file) = if t.default_allow {
        ("devices.allow", "devices.deny")
    } else {
        ("devices.deny", "devices.allow")
    };
    write(dir, default_file, "a")?;
    for e in &t.exceptions {
        write(dir, exception_file, &e.line())?;
    }
    Ok(())
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), DeviceError> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|source| {
        let hint = match source.raw_os_error() {
            Some(libc::EINVAL) if value == "a" && has_children(dir) => {
                " (a v1 devices cgroup with child cgroups cannot change its default: apply the rules before creating any)"
            }
            Some(libc::EPERM) => " (the parent cgroup does not grant this access)",
            _ => "",
        };
        DeviceError::Write {
            path,
            value: value.to_owned(),
            source,
            hint,
        }
    })
}

fn has_children(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        })
        .unwrap_or(false)
}

/// The exceptions of the v1 cgroup `dir` as `devices.list` shows them (`a *:* rwm` alone when
/// the default is allow).
pub fn list(dir: &Path) -> io::Result<Vec<String>> {
    let text = fs::read_to_string(dir.join("devices.list"))?;
    Ok(text.lines().map(str::to_owned).collect())
}
