//! The container's network, by `--net` mode: the namespace its pid 1 joins, the bridge
//! attachment (address, veth, `-p` rules) and the `/etc` files that go with it; released when
//! the container goes, by its supervisor or, after a crash, by `rm`.

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use cgsight_network::{self as net, Netns, Network, NetworkConfig, PortMapping};
use serde::{Deserialize, Serialize};

use crate::spec::{ContainerSpec, Net, Volume};
use crate::state::{Status, Store};
use crate::LaunchError;

/// What `ps` and `inspect` show of a container's network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInfo {
    /// bridge, none, host or container:NAME.
    pub mode: String,
    pub bridge: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub prefix_len: Option<u8>,
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

impl NetInfo {
    /// docker's PORTS column: `0.0.0.0:8080->80/tcp, 127.0.0.1:53->53/udp`.
    pub fn ports_text(&self) -> String {
        let shown: Vec<String> = self
            .ports
            .iter()
            .map(|p| {
                let ip = p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
                format!("{ip}:{}->{}/{}", p.host_port, p.ctr_port, p.proto.as_str())
            })
            .collect();
        shown.join(", ")
    }

    /// The address, or the mode when there is none (`host`, `none`).
    pub fn address_text(&self) -> String {
        self.ip
            .map_or_else(|| self.mode.clone(), |ip| ip.to_string())
    }
}

/// Set up before the container's pid 1 is released.
pub struct Plumbed {
    /// The namespace pid 1 joins (`None`: host, or a fresh empty one for `none`).
    pub netns: Option<OwnedFd>,
    /// `/etc/hosts` and `/etc/resolv.conf` bound into the root.
    pub files: Vec<Volume>,
    pub info: NetInfo,
    /// Whether the bridge holds a lease to release.
    pub attached: bool,
}

/// The lease and rule state: beside the containers' states, so a test or a second installation
/// with its own CGSIGHT_STATE_DIR has its own addresses.
pub fn state_dir(store: &Store) -> PathBuf {
    store.state_dir.join(".network")
}

/// `CGSIGHT_NETWORK_CONFIG`, else `/etc/cgsight/network.json` (absent: the defaults).
fn config() -> Result<NetworkConfig, LaunchError> {
    let path = std::env::var_os("CGSIGHT_NETWORK_CONFIG")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(net::DEFAULT_CONFIG_PATH), PathBuf::from);
    NetworkConfig::load(&path).map_err(neterr)
}

fn neterr(e: net::Error) -> LaunchError {
    LaunchError::Network(e.to_string())
}

fn mode_name(n: &Net) -> String {
    match n {
        Net::None => "none".into(),
        Net::Host => "host".into(),
        Net::Bridge => "bridge".into(),
        Net::Container(c) => format!("container:{c}"),
    }
}

/// The files a bridge (or joined) container gets bound over: a commit leaves their empty
/// mount points out.
pub const ETC_FILES: [&str; 2] = ["/etc/hosts", "/etc/resolv.conf"];

fn etc_files(hosts: PathBuf, resolv: PathBuf) -> Vec<Volume> {
    [(hosts, ETC_FILES[0]), (resolv, ETC_FILES[1])]
        .into_iter()
        .filter(|(h, _)| h.is_file())
        .map(|(host, ctr)| Volume {
            host,
            container: ctr.into(),
            readonly: false,
        })
        .collect()
}

/// Everything the mode needs before pid 1 runs. On failure nothing is left: a bridge
/// attachment undoes itself, and the namespace goes with its descriptor.
pub fn plumb(spec: &ContainerSpec, store: &Store) -> Result<Plumbed, LaunchError> {
    let mut info = NetInfo {
        mode: mode_name(&spec.net),
        ..NetInfo::default()
    };
    match &spec.net {
        Net::Host if spec.rootfs.is_some() || spec.image_ref.is_some() => {
            // An image's root has no idea of this host's names and resolvers: docker gives a
            // host-network container copies of the host's files (the host root has them).
            let dir = store.container_dir(&spec.id);
            let host = |p: &str| fs::read_to_string(p).ok();
            write_etc(&dir, host("/etc/hosts"), host("/etc/resolv.conf"))?;
            Ok(Plumbed {
                netns: None,
                files: etc_files(dir.join("hosts"), dir.join("resolv.conf")),
                info,
                attached: false,
            })
        }
        Net::Host | Net::None => Ok(Plumbed {
            netns: None,
            files: Vec::new(),
            info,
            attached: false,
        }),
        Net::Bridge => {
            let ns = net::new_netns().map_err(neterr)?;
            let network = Network::ensure(&config()?, &state_dir(store)).map_err(neterr)?;
            let att = network
                .attach(&spec.id, &spec.name, Netns::Fd(ns.as_fd()), &spec.ports)
                .map_err(neterr)?;
            let dir = store.container_dir(&spec.id);
            let names = if spec.name == spec.hostname {
                spec.hostname.clone()
            } else {
                format!("{} {}", spec.hostname, spec.name)
            };
            let written = write_files(&dir, &names, att.ip);
            if let Err(e) = written {
                let _ = net::release(&state_dir(store), &spec.id, net::Teardown::Delete);
                return Err(e);
            }
            info.bridge = Some(network.bridge().name.clone());
            info.ip = Some(att.ip);
            info.prefix_len = Some(att.prefix_len);
            info.gateway = Some(att.gateway);
            info.ports = att.ports;
            Ok(Plumbed {
                netns: Some(ns),
                files: etc_files(dir.join("hosts"), dir.join("resolv.conf")),
                info,
                attached: true,
            })
        }
        Net::Container(name) => {
            let other = store.find(name)?;
            let pid = match (other.status, other.pid) {
                (Status::Running, Some(p)) if !other.supervisor_dead => p,
                _ => return Err(LaunchError::NotRunning(name.clone())),
            };
            let path = format!("/proc/{pid}/ns/net");
            let ns = fs::File::open(&path).map_err(LaunchError::io(format!(
                "joining the network of {name}: open {path}"
            )))?;
            // Its address and files are ours too, as in docker.
            if let Some(theirs) = &other.network {
                info.bridge = theirs.bridge.clone();
                info.ip = theirs.ip;
                info.prefix_len = theirs.prefix_len;
                info.gateway = theirs.gateway;
            }
            let dir = store.container_dir(&other.id);
            Ok(Plumbed {
                netns: Some(ns.into()),
                files: etc_files(dir.join("hosts"), dir.join("resolv.conf")),
                info,
                attached: false,
            })
        }
    }
}

fn write_files(dir: &Path, names: &str, ip: Ipv4Addr) -> Result<(), LaunchError> {
    let resolv = net::resolv_conf().map_err(neterr)?;
    write_etc(dir, Some(net::hosts_file(names, ip)), Some(resolv))
}

/// The container's `hosts` and `resolv.conf` in its directory (a None is not written).
fn write_etc(dir: &Path, hosts: Option<String>, resolv: Option<String>) -> Result<(), LaunchError> {
    for (f, text) in [("hosts", hosts), ("resolv.conf", resolv)] {
        if let Some(text) = text {
            let p = dir.join(f);
            fs::write(&p, text).map_err(LaunchError::io(format!("writing {}", p.display())))?;
        }
    }
    Ok(())
}

/// Frees a bridge container's address, veth and rules. Idempotent, and needs only the state
/// directory: `rm` calls it after a supervisor that died.
pub fn release(store: &Store, id: &str) -> Result<(), LaunchError> {
    net::release(&state_dir(store), id, net::Teardown::Delete).map_err(neterr)
}

/// [`release`] by the supervisor whose exit drops the container's network namespace: the
/// kernel deletes the (detached) veth pair with it, off the exit path.
pub fn release_on_exit(store: &Store, id: &str) -> Result<(), LaunchError> {
    net::release(&state_dir(store), id, net::Teardown::Detach).map_err(neterr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_address_as_docker_shows_them() {
        let info = NetInfo {
            mode: "bridge".into(),
            ip: Some(Ipv4Addr::new(172, 17, 0, 2)),
            ports: ["8080:80", "127.0.0.1:53:53/udp"]
                .iter()
                .map(|p| net::parse_publish(p).unwrap())
                .collect(),
            ..NetInfo::default()
        };
        assert_eq!(
            info.ports_text(),
            "0.0.0.0:8080->80/tcp, 127.0.0.1:53->53/udp"
        );
        assert_eq!(info.address_text(), "172.17.0.2");
        let host = NetInfo {
            mode: "host".into(),
            ..NetInfo::default()
        };
        assert_eq!(
            (host.address_text(), host.ports_text()),
            ("host".into(), String::new())
        );
    }
}
