//! What confines a container beyond its namespaces: the seccomp profile, the device allow-list
//! (and `--device` nodes), and the user namespace mode. Parsed from the flags into the spec
//! (and so recorded in the state, where `inspect` and `exec` find it); the seccomp program is
//! compiled (or taken from the cache) by the supervisor before fork.

use std::path::{Path, PathBuf};

use cgsight_cgroup::devices::{self, Access, Kind, Rule};
use cgsight_seccomp::{Action, Cache, CapSet, KernelVersion, Profile, Program, Target};
use serde::{Deserialize, Serialize};

use crate::spec::SpecError;
use crate::LaunchError;

/// Which seccomp filter the container's processes run under.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum Seccomp {
    /// The built-in profile (docker's default).
    #[default]
    Default,
    /// `--security-opt seccomp=unconfined`: no filter.
    Unconfined,
    /// `--security-opt seccomp=FILE`: a docker-format profile, kept as the normalized JSON read
    /// at launch so `exec` applies exactly what `launch` did even if the file changes.
    Profile { path: PathBuf, json: String },
}

impl Seccomp {
    /// One word for `inspect`: `default`, `unconfined` or the profile's path.
    pub fn describe(&self) -> String {
        match self {
            Seccomp::Default => "default".into(),
            Seccomp::Unconfined => "unconfined".into(),
            Seccomp::Profile { path, .. } => path.display().to_string(),
        }
    }
}

/// `--userns`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Userns {
    /// The host's user namespace (docker's default).
    #[default]
    Host,
    /// A private id range (podman's `auto`).
    Auto,
}

/// A `--device`, resolved on the host when the flags were read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// As typed.
    pub spec: String,
    pub host: PathBuf,
    pub container: PathBuf,
    /// `c` or `b`.
    pub kind: char,
    pub major: u32,
    pub minor: u32,
    /// A subset of `rwm`.
    pub access: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Device {
    /// The allow rule for this node.
    pub fn rule(&self) -> Rule {
        let kind = if self.kind == 'b' {
            Kind::Block
        } else {
            Kind::Char
        };
        let access = Access::parse(&self.access).unwrap_or(Access::ALL);
        Rule::new(true, kind, Some(self.major), Some(self.minor), access)
    }
}

/// The protections of one container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Security {
    pub seccomp: Seccomp,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub userns: Userns,
    /// `--privileged`: every capability, no seccomp filter, every host device, no masked or
    /// read-only /proc and /sys paths (docker's meaning).
    #[serde(default)]
    pub privileged: bool,
}

impl Security {
    /// The capability set of the container's processes.
    pub fn caps(&self) -> u64 {
        if self.privileged {
            crate::caps::all_mask(crate::caps::last_cap())
        } else {
            crate::caps::default_mask()
        }
    }
}

fn bad(flag: &'static str, value: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        flag,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// `--security-opt` values (docker's spelling): `seccomp=unconfined|FILE`, `no-new-privileges`
/// (always on here, so accepted as is). The profile file is read and parsed now so a bad one
/// is refused before anything is created.
pub fn parse_security_opts(opts: &[String], sec: &mut Security) -> Result<(), SpecError> {
    const FLAG: &str = "--security-opt";
    for o in opts {
        let (k, v) = o.split_once(['=', ':']).unwrap_or((o.as_str(), ""));
        match k {
            "seccomp" if v == "unconfined" => sec.seccomp = Seccomp::Unconfined,
            "seccomp" if v.is_empty() => {
                return Err(bad(
                    FLAG,
                    o,
                    "expected seccomp=unconfined or seccomp=PROFILE.json",
                ))
            }
            "seccomp" => {
                let text = std::fs::read_to_string(v)
                    .map_err(|e| bad(FLAG, o, format!("cannot read the profile {v}: {e}")))?;
                let profile = Profile::from_json(&text).map_err(|e| {
                    bad(
                        FLAG,
                        o,
                        format!("the profile {v} is not a valid seccomp profile: {e}"),
                    )
                })?;
                let path = Path::new(v)
                    .canonicalize()
                    .unwrap_or_else(|_| PathBuf::from(v));
                sec.seccomp = Seccomp::Profile {
                    path,
                    json: profile.to_json(),
                };
            }
            "no-new-privileges" if matches!(v, "" | "true") => {}
            _ => {
                return Err(bad(
                    FLAG,
                    o,
                    "supported: seccomp=unconfined, seccomp=PROFILE.json, no-new-privileges",
                ))
            }
        }
    }
    Ok(())
}

/// `--device HOST[:CTR][:rwm]`, resolved against the host's node (which must exist).
pub fn parse_device(s: &str) -> Result<Device, SpecError> {
    let m = devices::resolve_device(s).map_err(|e| SpecError::Other(e.to_string()))?;
    Ok(Device {
        spec: s.to_owned(),
        host: m.host,
        container: m.container,
        kind: if m.kind == Kind::Block { 'b' } else { 'c' },
        major: m.major,
        minor: m.minor,
        access: m.access.to_string(),
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
    })
}

/// `--userns host|auto` (empty = host, as docker's `--userns=`).
pub fn parse_userns(s: &str) -> Result<Userns, SpecError> {
    match s {
        "" | "host" => Ok(Userns::Host),
        "auto" => Ok(Userns::Auto),
        _ => Err(bad("--userns", s, "expected host or auto")),
    }
}

/// The device rules the container's cgroup gets: runc's defaults plus one per `--device`;
/// everything with `--privileged`.
pub fn device_rules(sec: &Security) -> Vec<Rule> {
    if sec.privileged {
        return vec![Rule::new(true, Kind::All, None, None, Access::ALL)];
    }
    let mut rules = devices::default_rules();
    rules.extend(sec.devices.iter().map(Device::rule));
    rules
}

/// Where compiled filters are cached (`CGSIGHT_SECCOMP_DIR`, default /var/lib/cgsight/seccomp).
pub fn seccomp_cache_dir() -> PathBuf {
    std::env::var_os("CGSIGHT_SECCOMP_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/var/lib/cgsight/seccomp"), PathBuf::from)
}

/// A compiled filter and how it came.
#[derive(Debug)]
pub struct Filter {
    pub program: Program,
    /// The compiled-program cache had it (for the bench and the log).
    pub cache_hit: bool,
    /// sysinfo(2) goes to the supervisor: install with a listener and serve it.
    pub sysinfo_notify: bool,
}

/// Whether `p` allows `name` whatever the arguments, capabilities and kernel: only then may
/// the supervisor answer it instead (a rule that denies or conditions it stays as written).
fn allows_unconditionally(p: &Profile, name: &str) -> bool {
    p.rules.iter().any(|r| {
        r.action == Action::Allow
            && r.args.is_empty()
            && r.includes == Default::default()
            && r.excludes == Default::default()
            && r.names.iter().any(|n| n == name)
    })
}

/// The filter for `sec` compiled for `caps` on this kernel, from the cache when it is there.
/// `None` when unconfined. With `sysinfo_notify` (the /proc views are on), a profile that
/// allows sysinfo hands it to the supervisor instead ([`Action::Notify`]).
pub fn seccomp_program(
    sec: &Security,
    caps: u64,
    sysinfo_notify: bool,
) -> Result<Option<Filter>, LaunchError> {
    let mut profile = match &sec.seccomp {
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Default => Profile::docker_default(),
        Seccomp::Profile { path, json } => Profile::from_json(json)
            .map_err(|e| LaunchError::Seccomp(format!("profile {}: {e}", path.display())))?,
    };
    let sysinfo_notify = sysinfo_notify && allows_unconditionally(&profile, "sysinfo");
    if sysinfo_notify {
        profile.set_action("sysinfo", Action::Notify);
    }
    let kernel = KernelVersion::current()
        .map_err(|e| LaunchError::Seccomp(format!("reading the kernel version: {e}")))?;
    let target = Target {
        caps: CapSet(caps),
        kernel,
    };
    let loaded = Cache::new(seccomp_cache_dir())
        .load_or_compile(&profile, &target)
        .map_err(|e| LaunchError::Seccomp(format!("{}: {e}", sec.seccomp.describe())))?;
    // A user's profile naming syscalls this system's libseccomp does not know is refused:
    // skipping a name silently changes what the profile allows or denies (docker skips them).
    // The built-in profile only warns (names of other kernels' syscalls, never a typo).
    if !loaded.unknown_syscalls.is_empty() {
        let names = loaded.unknown_syscalls.join(", ");
        if matches!(sec.seccomp, Seccomp::Profile { .. }) {
            return Err(LaunchError::Seccomp(format!(
                "profile {}: syscalls unknown to this system's libseccomp: {names} (remove them from the profile)",
                sec.seccomp.describe()
            )));
        }
        tracing::warn!(
            "seccomp profile {}: syscalls unknown to this system skipped: {names}",
            sec.seccomp.describe()
        );
    }
    tracing::debug!(cache_hit = loaded.cache_hit, path = %loaded.path.display(), "seccomp filter");
    Ok(Some(Filter {
        program: loaded.program,
        cache_hit: loaded.cache_hit,
        sysinfo_notify,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_opts_parse_like_docker() {
        let mut s = Security::default();
        parse_security_opts(
            &["seccomp=unconfined".into(), "no-new-privileges".into()],
            &mut s,
        )
        .unwrap();
        assert_eq!(s.seccomp, Seccomp::Unconfined);
        for bad in [
            "seccomp=/nonexistent/p.json",
            "apparmor=x",
            "seccomp",
            "label=disable",
        ] {
            assert!(parse_security_opts(&[bad.into()], &mut s).is_err(), "{bad}");
        }
        assert_eq!(parse_userns("auto").unwrap(), Userns::Auto);
        assert_eq!(parse_userns("").unwrap(), Userns::Host);
        assert!(parse_userns("keep-id").is_err());
        assert!(parse_device("/nonexistent/dev").is_err());
        let d = parse_device("/dev/null:/dev/mynull:r").unwrap();
        assert_eq!(
            (d.kind, d.major, d.minor, d.access.as_str()),
            ('c', 1, 3, "r")
        );
        assert_eq!(d.rule().to_string(), "c 1:3 r");
    }

    #[test]
    fn only_an_unconditional_allow_is_handed_to_the_supervisor() {
        let p = Profile::docker_default();
        assert!(allows_unconditionally(&p, "sysinfo"));
        assert!(!allows_unconditionally(&p, "mount"));
        let mut denied = p.clone();
        denied.set_action("sysinfo", Action::Errno(1));
        assert!(!allows_unconditionally(&denied, "sysinfo"));
    }
}
