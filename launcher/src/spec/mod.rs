//! Command-line values -> a validated [`ContainerSpec`]. Pure apart from the existence checks
//! of paths the user names (rootfs, volume sources), so every bad input is refused before
//! anything is created.

use std::path::PathBuf;

use cgsight_cgroup::{CpuList, Resources};
use serde::{Deserialize, Serialize};

mod values;

pub use crate::image::ImageRef;
use crate::security::{self, Security};
use cgsight_network::ports::check_distinct;
pub use cgsight_network::{parse_publish, PortMapping};
use values::{clean_abs, validate_hostname};
pub use values::{
    new_id, parse_cpus, parse_env, parse_size, parse_volume, under_proc_or_sys, validate_name,
};

/// Why a flag was refused. Each message is one line and names the flag and value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("invalid size {value:?} for {flag}: expected a number with an optional unit b, k, m, g or t (e.g. 256m)")]
    Size { flag: &'static str, value: String },
    #[error("invalid {flag} {value:?}: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
    /// A message that already names its flag (e.g. from `--device` resolution).
    #[error("{0}")]
    Other(String),
    #[error("no command given: usage `cgsight launch [OPTIONS] [--] CMD [ARGS...]`")]
    NoCommand,
}

fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        flag,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Network mode (docker's `--net`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Net {
    /// A new network namespace with only loopback, up.
    None,
    /// The host's network namespace.
    Host,
    /// A new network namespace on the `cgsight0` bridge: `eth0`, an address, NAT, `-p`.
    Bridge,
    /// The network namespace of another running container (by name or id).
    Container(String),
}

/// A `-v HOST:CTR[:ro|rw]` bind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub host: PathBuf,
    pub container: PathBuf,
    pub readonly: bool,
}

/// The flags as the user typed them (what clap hands over).
#[derive(Clone, Debug, Default)]
pub struct RawSpec {
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub memory: Option<String>,
    pub memory_swap: Option<String>,
    pub cpus: Option<String>,
    pub cpu_shares: Option<String>,
    pub cpuset_cpus: Option<String>,
    pub pids_limit: Option<String>,
    pub rootfs: Option<PathBuf>,
    pub env: Vec<String>,
    pub volumes: Vec<String>,
    pub workdir: Option<String>,
    pub net: Option<String>,
    /// `-p [IP:]HOST:CTR[/tcp|/udp]` values.
    pub publish: Vec<String>,
    pub tty: bool,
    pub interactive: bool,
    pub init: bool,
    pub rm: bool,
    pub detach: bool,
    pub no_proc_views: bool,
    /// Refuse to start when the views cannot be served, instead of the host's files.
    pub require_proc_views: bool,
    /// Descriptors 3..3+N passed to the command (every other one is closed).
    pub preserve_fds: u32,
    /// `--security-opt` values.
    pub security_opts: Vec<String>,
    /// `--device HOST[:CTR][:rwm]` values.
    pub devices: Vec<String>,
    pub userns: Option<String>,
    /// `--privileged`.
    pub privileged: bool,
    pub command: Vec<String>,
    /// The image to run on instead of the host root (resolved by the CLI).
    pub image_ref: Option<ImageRef>,
    /// `-u USER[:GROUP]` (or the image's User).
    pub user: Option<String>,
    /// The signal `stop` sends first (the image's StopSignal; default SIGTERM).
    pub stop_signal: Option<String>,
}

/// Limits as given by the user (before host-dependent defaults such as docker's swap = 2×memory).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub memory: Option<u64>,
    /// Docker's `--memory-swap` (memory + swap). `Some(None)` = unlimited (`-1`).
    pub memory_swap: Option<Option<u64>>,
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub pids_max: Option<u64>,
}

/// A validated container description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub id: String,
    pub name: String,
    pub hostname: String,
    /// `None`: the host `/` as the overlay's lower layer.
    pub rootfs: Option<PathBuf>,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub volumes: Vec<Volume>,
    pub workdir: Option<PathBuf>,
    pub net: Net,
    /// Published ports (bridge mode only).
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    pub tty: bool,
    pub interactive: bool,
    pub init: bool,
    pub rm: bool,
    pub detach: bool,
    pub proc_views: bool,
    /// `--require-proc-views`: no views, no container.
    #[serde(default)]
    pub views_required: bool,
    pub limits: Limits,
    /// Descriptors 3..3+N passed to the command (every other one is closed).
    #[serde(default)]
    pub preserve_fds: u32,
    /// Seccomp, devices, user namespace.
    #[serde(default)]
    pub security: Security,
    /// The image whose layers are the overlay's lower layers (`None`: rootfs or host root).
    #[serde(default)]
    pub image_ref: Option<ImageRef>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

impl ContainerSpec {
    /// The `image` field of the state: the image reference, "host" or the rootfs path.
    pub fn image(&self) -> String {
        if let Some(i) = &self.image_ref {
            return i.reference.clone();
        }
        self.rootfs
            .as_ref()
            .map_or_else(|| "host".to_owned(), |p| p.display().to_string())
    }

    /// The cgroup path every launched container lives in (the shared contract).
    pub fn cgroup_path(&self) -> String {
        format!("/cgsight/{}", self.id)
    }

    /// The limits to write, with docker's default swap (memory+swap = 2×memory) when swap
    /// accounting exists. Docker's choice is kept: on a host without swap the OOM behaviour is
    /// the same as memory+swap = memory, and on a host with swap it matches `docker run`.
    pub fn resources(&self, swap_accounting: bool) -> Resources {
        let l = &self.limits;
        let memory_swap = match (l.memory, l.memory_swap) {
            (_, Some(s)) => Some(s),
            (Some(m), None) if swap_accounting => Some(Some(m.saturating_mul(2))),
            _ => None,
        };
        Resources {
            memory: l.memory,
            memory_swap,
            cpu_quota_us: l.cpu_quota_us,
            cpu_period_us: l.cpu_period_us,
            cpu_shares: l.cpu_shares,
            cpuset_cpus: l.cpuset_cpus.as_deref().and_then(CpuList::parse),
            cpuset_mems: None,
            pids_max: l.pids_max,
        }
    }
}

/// `--net`: bridge (the default, as in docker), none, host or container:NAME.
fn parse_net(v: Option<&str>) -> Result<Net, SpecError> {
    match v {
        None | Some("bridge") | Some("default") => Ok(Net::Bridge),
        Some("none") => Ok(Net::None),
        Some("host") => Ok(Net::Host),
        Some(o) => match o.strip_prefix("container:") {
            Some(n) if !n.is_empty() => Ok(Net::Container(n.to_owned())),
            _ => Err(invalid(
                "--net",
                o,
                "expected bridge, none, host or container:NAME",
            )),
        },
    }
}

/// Builds the spec. `host_cpus` are the host's online CPUs.
pub fn build(
    raw: &RawSpec,
    id: &str,
    host_cpus: &CpuList,
    lookup_env: impl Fn(&str) -> Option<String>,
) -> Result<ContainerSpec, SpecError> {
    if raw.command.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let short = &id[..id.len().min(12)];
    let name = match &raw.name {
        Some(n) => {
            validate_name(n)?;
            n.clone()
        }
        None => format!("c-{short}"),
    };
    let hostname = match &raw.hostname {
        Some(h) => {
            validate_hostname(h)?;
            h.clone()
        }
        None => short.to_owned(),
    };
    let mut limits = Limits::default();
    if let Some(m) = &raw.memory {
        let v = parse_size("--memory", m)?;
        if v < 6 << 20 {
            return Err(invalid("--memory", m, "the minimum memory limit is 6m"));
        }
        limits.memory = Some(v);
    }
    if let Some(s) = &raw.memory_swap {
        if s.trim() == "-1" {
            limits.memory_swap = Some(None);
        } else {
            let v = parse_size("--memory-swap", s)?;
            match limits.memory {
                None => {
                    return Err(invalid(
                        "--memory-swap",
                        s,
                        "needs --memory too (it is memory plus swap)",
                    ))
                }
                Some(m) if v < m => {
                    return Err(invalid(
                        "--memory-swap",
                        s,
                        "must be at least --memory (it is memory plus swap)",
                    ))
                }
                _ => {}
            }
            limits.memory_swap = Some(Some(v));
        }
    }
    if let Some(c) = &raw.cpus {
        let (q, p) = parse_cpus(c, host_cpus.len())?;
        limits.cpu_quota_us = Some(q);
        limits.cpu_period_us = Some(p);
    }
    if let Some(s) = &raw.cpu_shares {
        let v: u64 = s
            .trim()
            .parse()
            .map_err(|_| invalid("--cpu-shares", s, "expected an integer from 2 to 262144"))?;
        if !(2..=262_144).contains(&v) {
            return Err(invalid(
                "--cpu-shares",
                s,
                "expected an integer from 2 to 262144",
            ));
        }
        limits.cpu_shares = Some(v);
    }
    if let Some(s) = &raw.cpuset_cpus {
        // The kernel's list parser is lenient about empty items; a typo must not silently
        // become a different set.
        if s.split(',').any(|item| item.trim().is_empty()) {
            return Err(invalid("--cpuset-cpus", s, "an item of the list is empty"));
        }
        let l = CpuList::parse(s)
            .ok_or_else(|| invalid("--cpuset-cpus", s, "expected a CPU list such as 0-1 or 0,2"))?;
        if l.is_empty() {
            return Err(invalid("--cpuset-cpus", s, "the list is empty"));
        }
        if !l.is_subset_of(host_cpus) {
            return Err(invalid(
                "--cpuset-cpus",
                s,
                format!("the host's online CPUs are {host_cpus}"),
            ));
        }
        limits.cpuset_cpus = Some(l.to_string());
    }
    if let Some(s) = &raw.pids_limit {
        let v: i64 = s.trim().parse().map_err(|_| {
            invalid(
                "--pids-limit",
                s,
                "expected a positive integer, or -1 for unlimited",
            )
        })?;
        limits.pids_max = match v {
            -1 => None,
            v if v > 0 => Some(v as u64),
            _ => {
                return Err(invalid(
                    "--pids-limit",
                    s,
                    "expected a positive integer, or -1 for unlimited",
                ))
            }
        };
    }
    let rootfs = match &raw.rootfs {
        None => None,
        Some(p) => {
            let shown = p.display().to_string();
            if !p.is_dir() {
                return Err(invalid("--rootfs", &shown, "no such directory"));
            }
            Some(
                p.canonicalize()
                    .map_err(|e| invalid("--rootfs", &shown, e.to_string()))?,
            )
        }
    };
    if raw.image_ref.is_some() && rootfs.is_some() {
        return Err(invalid(
            "--rootfs",
            "with an IMAGE",
            "give either --rootfs or an image",
        ));
    }
    if let Some(u) = &raw.user {
        if u.is_empty() || u.contains('\0') || u.starts_with(':') {
            return Err(invalid("--user", u, "expected USER[:GROUP] or UID[:GID]"));
        }
    }
    let mut env = Vec::new();
    for e in &raw.env {
        if let Some(kv) = parse_env(e, &lookup_env)? {
            env.push(kv);
        }
    }
    let volumes = raw
        .volumes
        .iter()
        .map(|v| parse_volume(v))
        .collect::<Result<Vec<_>, _>>()?;
    let workdir = match &raw.workdir {
        Some(w) => Some(clean_abs("-w", w, w)?),
        None => None,
    };
    let net = parse_net(raw.net.as_deref())?;
    let ports = raw
        .publish
        .iter()
        .map(|p| parse_publish(p).map_err(|e| SpecError::Other(format!("-p: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if !ports.is_empty() && net != Net::Bridge {
        // docker ignores them silently; a port the user expects to be reachable is not.
        return Err(invalid(
            "-p",
            &raw.publish.join(" "),
            "published ports need --net bridge (the default)",
        ));
    }
    check_distinct(&ports).map_err(|e| SpecError::Other(format!("-p: {e}")))?;
    if raw.detach && (raw.tty || raw.interactive) {
        // A detached supervisor has no terminal to proxy; runc refuses the same combination.
        return Err(invalid(
            "-d",
            "-t/-i",
            "a detached container cannot have -t or -i",
        ));
    }
    let mut sec = Security::default();
    security::parse_security_opts(&raw.security_opts, &mut sec)?;
    sec.devices = raw
        .devices
        .iter()
        .map(|d| security::parse_device(d))
        .collect::<Result<_, _>>()?;
    if let Some(u) = &raw.userns {
        sec.userns = security::parse_userns(u)?;
    }
    if raw.privileged {
        if sec.userns == security::Userns::Auto {
            // Every capability and device of the host would be given to an unprivileged id
            // range that cannot use them; docker refuses the same pair.
            return Err(invalid(
                "--privileged",
                "--userns auto",
                "a privileged container runs in the host's user namespace",
            ));
        }
        // docker: privileged containers run without a filter, whatever profile is named.
        sec.seccomp = security::Seccomp::Unconfined;
        sec.privileged = true;
    }
    Ok(ContainerSpec {
        id: id.to_owned(),
        name,
        hostname,
        rootfs,
        command: raw.command.clone(),
        env,
        volumes,
        workdir,
        net,
        ports,
        tty: raw.tty,
        interactive: raw.interactive,
        init: raw.init,
        rm: raw.rm,
        detach: raw.detach,
        proc_views: !raw.no_proc_views,
        views_required: raw.require_proc_views && !raw.no_proc_views,
        limits,
        preserve_fds: raw.preserve_fds,
        security: sec,
        image_ref: raw.image_ref.clone(),
        user: raw.user.clone(),
        stop_signal: raw.stop_signal.clone(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn volumes_on_proc_and_sys_and_empty_cpu_items_are_refused() {
        for v in [
            "/tmp:/proc",
            "/tmp:/proc/sys/x",
            "/tmp:/sys",
            "/tmp:/sys/fs/cgroup:ro",
        ] {
            assert!(super::parse_volume(v).is_err(), "{v}");
        }
        assert!(super::parse_volume("/tmp:/procx").is_ok());
        for c in ["0,,1", ",0", "0,", " "] {
            let mut r = raw(&["true"]);
            r.cpuset_cpus = Some(c.into());
            assert!(super::build(&r, "id", &cpus2(), |_| None).is_err(), "{c:?}");
        }
    }

    use super::*;

    fn cpus2() -> CpuList {
        CpuList::parse("0-1").unwrap()
    }
    fn raw(cmd: &[&str]) -> RawSpec {
        RawSpec {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn sizes() {
        assert_eq!(parse_size("-m", "256m"), Ok(256 << 20));
        assert_eq!(parse_size("-m", "1g"), Ok(1 << 30));
        assert_eq!(parse_size("-m", "512k"), Ok(512 << 10));
        assert_eq!(parse_size("-m", "1048576"), Ok(1 << 20));
        assert_eq!(parse_size("-m", "100b"), Ok(100));
        assert_eq!(parse_size("-m", "1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("-m", "256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("-m", "256mb"), Ok(256 << 20));
        for bad in ["12x", "", "m", "-1", "1..2m", ".5g", "1gg", "1 2"] {
            assert!(parse_size("-m", bad).is_err(), "{bad:?} accepted");
        }
        let e = parse_size("--memory", "12x").unwrap_err().to_string();
        assert!(
            e.contains("--memory") && e.contains("12x") && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("1.5", 2), Ok((150_000, 100_000)));
        assert_eq!(parse_cpus("0.5", 2), Ok((50_000, 100_000)));
        assert_eq!(parse_cpus("2", 2), Ok((200_000, 100_000)));
        for bad in ["0", "-1", "abc", "3", "0.001", "NaN", "inf"] {
            assert!(parse_cpus(bad, 2).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "web-1", "cgsight-test-x_1.2", "A9"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", "a b", "a/b", "é"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes() {
        let v = parse_volume("/tmp:/data:ro").unwrap();
        assert_eq!(v.host, PathBuf::from("/tmp"));
        assert_eq!(v.container, PathBuf::from("/data"));
        assert!(v.readonly);
        assert!(!parse_volume("/tmp:/data").unwrap().readonly);
        assert!(!parse_volume("/tmp:/data:rw").unwrap().readonly);
        for bad in [
            "/tmp",
            "/tmp:data",
            "tmp:/data",
            "/tmp:/data:rx",
            "/tmp:/",
            "/tmp:/a/../b",
            "/nonexistent-cgsight-x:/d",
            "/a:/b:ro:x",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env() {
        let look = |k: &str| (k == "HOME").then(|| "/root".to_string());
        assert_eq!(
            parse_env("A=b=c", look),
            Ok(Some(("A".into(), "b=c".into())))
        );
        assert_eq!(parse_env("A=", look), Ok(Some(("A".into(), "".into()))));
        assert_eq!(
            parse_env("HOME", look),
            Ok(Some(("HOME".into(), "/root".into())))
        );
        assert_eq!(parse_env("UNSET", look), Ok(None));
        assert!(parse_env("=x", look).is_err());
    }

    #[test]
    fn full_spec() {
        let mut r = raw(&["sh", "-c", "true"]);
        r.name = Some("web".into());
        r.memory = Some("256m".into());
        r.cpus = Some("1.5".into());
        r.cpuset_cpus = Some("1".into());
        r.pids_limit = Some("20".into());
        r.net = Some("host".into());
        r.workdir = Some("/tmp".into());
        let s = build(&r, ID, &cpus2(), |_| None).unwrap();
        assert_eq!(s.name, "web");
        assert_eq!(s.hostname, "0123456789ab");
        assert_eq!(s.limits.memory, Some(256 << 20));
        assert_eq!(s.limits.cpu_quota_us, Some(150_000));
        assert_eq!(s.limits.cpu_period_us, Some(100_000));
        assert_eq!(s.limits.cpuset_cpus.as_deref(), Some("1"));
        assert_eq!(s.limits.pids_max, Some(20));
        assert_eq!(s.net, Net::Host);
        assert_eq!(s.cgroup_path(), format!("/cgsight/{ID}"));
        assert_eq!(s.image(), "host");
        // docker's default swap: memory+swap = 2 × memory, only with swap accounting
        assert_eq!(s.resources(true).memory_swap, Some(Some(512 << 20)));
        assert_eq!(s.resources(false).memory_swap, None);
    }

    #[test]
    fn bad_specs() {
        type Case = (fn(&mut RawSpec), &'static str);
        let cases: Vec<Case> = vec![
            (|r| r.memory = Some("12x".into()), "--memory"),
            (|r| r.memory = Some("1k".into()), "--memory"),
            (|r| r.cpus = Some("0".into()), "--cpus"),
            (|r| r.cpuset_cpus = Some("0-7".into()), "--cpuset-cpus"),
            (|r| r.cpuset_cpus = Some("x".into()), "--cpuset-cpus"),
            (
                |r| r.rootfs = Some("/nonexistent-cgsight-rootfs".into()),
                "--rootfs",
            ),
            (|r| r.name = Some("bad name".into()), "--name"),
            (|r| r.pids_limit = Some("0".into()), "--pids-limit"),
            (|r| r.net = Some("bridged".into()), "--net"),
            (|r| r.net = Some("container:".into()), "--net"),
            (|r| r.publish = vec!["70000:80".into()], "-p"),
            (
                |r| r.publish = vec!["8080:80".into(), "8080:81".into()],
                "-p",
            ),
            (
                |r| {
                    r.net = Some("none".into());
                    r.publish = vec!["8080:80".into()]
                },
                "-p",
            ),
            (|r| r.workdir = Some("rel".into()), "-w"),
            (|r| r.hostname = Some("a_b".into()), "--hostname"),
            (|r| r.cpu_shares = Some("1".into()), "--cpu-shares"),
            (
                |r| {
                    r.memory = Some("256m".into());
                    r.memory_swap = Some("128m".into())
                },
                "--memory-swap",
            ),
            (|r| r.memory_swap = Some("1g".into()), "--memory-swap"),
        ];
        for (f, flag) in cases {
            let mut r = raw(&["true"]);
            f(&mut r);
            let e = build(&r, ID, &cpus2(), |_| None).unwrap_err().to_string();
            assert!(e.contains(flag) && !e.contains('\n'), "{flag}: {e}");
        }
        assert_eq!(
            build(&raw(&[]), ID, &cpus2(), |_| None),
            Err(SpecError::NoCommand)
        );
        let mut r = raw(&["true"]);
        r.memory = Some("256m".into());
        r.memory_swap = Some("-1".into());
        assert_eq!(
            build(&r, ID, &cpus2(), |_| None)
                .unwrap()
                .limits
                .memory_swap,
            Some(None)
        );
    }

    #[test]
    fn network_modes_and_ports() {
        let with = |net: Option<&str>, p: &[&str]| {
            let mut r = raw(&["true"]);
            r.net = net.map(Into::into);
            r.publish = p.iter().map(|s| s.to_string()).collect();
            build(&r, ID, &cpus2(), |_| None).unwrap()
        };
        assert_eq!(with(None, &[]).net, Net::Bridge, "docker's default");
        assert_eq!(with(Some("none"), &[]).net, Net::None);
        assert_eq!(
            with(Some("container:web"), &[]).net,
            Net::Container("web".into())
        );
        let s = with(None, &["127.0.0.1:8080:80/udp", "9000:90"]);
        let shown: Vec<String> = s.ports.iter().map(|p| p.to_string()).collect();
        assert_eq!(shown, ["127.0.0.1:8080:80/udp", "9000:90/tcp"]);
    }

    #[test]
    fn ids() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
        assert_ne!(a, b);
    }
}
