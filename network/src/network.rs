//! `ensure` / `attach` / `release`: the bridge, one veth + lease + DNAT chain per container.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::config::NetworkConfig;
use crate::error::{Error, Result};
use crate::ipam::{self, BridgeState, Lease};
use crate::nat;
use crate::netlink::{Prefix4, Rtnl};
use crate::netns::{self, Netns};
use crate::ports::{check_distinct, PortMapping};
use crate::subnet::{pick_free, Subnet};

/// The name of the container end of the veth, as docker names it.
pub const CONTAINER_IFNAME: &str = "eth0";

/// A bridge that exists, with its addressing; returned by [`Network::ensure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub name: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

/// What [`Network::attach`] set up for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub veth_host: String,
    pub ports: Vec<PortMapping>,
}

/// A bridge network whose state (leases) lives in `state_dir`.
#[derive(Debug, Clone)]
pub struct Network {
    state_dir: PathBuf,
    bridge: Bridge,
}

/// Container ids become interface and chain names, so keep them to safe characters.
fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::BadId(id.to_string()))
    }
}

/// The host end's name: `cg` + 12 hex digits of an FNV-1a hash of the id, so it fits IFNAMSIZ
/// and is found again from the id alone (release after a crash).
pub fn veth_name(id: &str) -> String {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("cg{:012x}", h & 0xffff_ffff_ffff)
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| Error::io("write sysctl", path, e))
}

/// Routes and addresses on the host, minus those on `own` (the bridge itself, when it exists).
fn taken_prefixes(rtnl: &mut Rtnl, own: Option<u32>) -> Result<Vec<(Ipv4Addr, u8)>> {
    let mut all: Vec<Prefix4> = rtnl.ipv4_routes()?;
    all.extend(rtnl.ipv4_addresses()?);
    Ok(all
        .into_iter()
        .filter(|p| Some(p.ifindex) != own)
        .map(|p| (p.addr, p.len))
        .collect())
}

fn choose_subnet(cfg: &NetworkConfig, taken: &[(Ipv4Addr, u8)]) -> Result<Subnet> {
    match cfg.subnet {
        Some(s) => match taken.iter().find(|&&(a, l)| l > 0 && s.overlaps(a, l)) {
            Some(&(a, l)) => Err(Error::SubnetOverlap {
                subnet: s.to_string(),
                what: "route or address",
                other: format!("{a}/{l}"),
            }),
            None => Ok(s),
        },
        None => pick_free(taken).ok_or(Error::NoFreeSubnet),
    }
}

/// Gateway address, up, sysctls, NAT table: everything after the bridge link exists.
fn configure_bridge(rtnl: &mut Rtnl, bs: &BridgeState) -> Result<()> {
    let index = rtnl.require_index(&bs.name, "create bridge")?;
    rtnl.add_address(index, bs.subnet.gateway(), bs.subnet.prefix_len())?;
    rtnl.set_up(index)?;
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    write_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", bs.name),
        "1",
    )?;
    nat::apply(&nat::base_script(&bs.name, bs.subnet))
}

impl Network {
    /// Creates the bridge if needed (subnet chosen once and kept in `state_dir`), gives it the
    /// gateway address, brings it up, enables `ip_forward` (docker does the same) and
    /// `route_localnet` on the bridge (so DNAT of 127.0.0.1 works without a userland proxy), and
    /// installs the NAT table when the bridge is new. Idempotent; serialised by the state lock.
    pub fn ensure(cfg: &NetworkConfig, state_dir: &Path) -> Result<Network> {
        cfg.validate().map_err(|reason| Error::Config {
            path: state_dir.into(),
            reason,
        })?;
        let mut locked = ipam::lock(state_dir)?;
        let mut rtnl = Rtnl::open()?;
        let existing = rtnl.link_index(&cfg.bridge)?;
        let known = locked.state.bridge.clone().filter(|b| b.name == cfg.bridge);
        let bs = match known {
            Some(b) if existing.is_some() && b.rules >= nat::RULES_VERSION => b,
            Some(mut b) if existing.is_some() => {
                // Idempotent: base chains are refilled, containers' chains and ports kept.
                nat::apply(&nat::base_script(&b.name, b.subnet))?;
                b.rules = nat::RULES_VERSION;
                locked.state.bridge = Some(b.clone());
                locked.save()?;
                b
            }
            known => {
                let taken = taken_prefixes(&mut rtnl, existing)?;
                let subnet = match known {
                    Some(b) if cfg.subnet.is_none() || cfg.subnet == Some(b.subnet) => {
                        choose_subnet(
                            &NetworkConfig {
                                subnet: Some(b.subnet),
                                ..cfg.clone()
                            },
                            &taken,
                        )?
                    }
                    _ => choose_subnet(cfg, &taken)?,
                };
                let bs = BridgeState {
                    name: cfg.bridge.clone(),
                    subnet,
                    mtu: cfg.mtu,
                    rules: nat::RULES_VERSION,
                };
                let created = rtnl.create_bridge(&bs.name, bs.mtu)?;
                if let Err(e) = configure_bridge(&mut rtnl, &bs) {
                    // Leave no half-made bridge behind; an existing one is not ours to remove.
                    if created {
                        let _ = rtnl.delete_link(&bs.name);
                    }
                    return Err(e);
                }
                locked.state.bridge = Some(bs.clone());
                locked.save()?;
                bs
            }
        };
        let bridge = Bridge {
            gateway: bs.subnet.gateway(),
            name: bs.name,
            subnet: bs.subnet,
            mtu: bs.mtu,
        };
        Ok(Network {
            state_dir: state_dir.to_path_buf(),
            bridge,
        })
    }

    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// Leases an address, creates the veth pair (host end on the bridge, `eth0` created directly
    /// in `netns`), configures `lo`, `eth0` and the default route inside, and publishes `ports`.
    /// On any failure everything done so far is undone.
    pub fn attach(
        &self,
        id: &str,
        name: &str,
        netns: Netns<'_>,
        ports: &[PortMapping],
    ) -> Result<Attachment> {
        check_id(id)?;
        check_distinct(ports)?;
        let b = &self.bridge;
        let veth = veth_name(id);
        let ip = {
            let mut locked = ipam::lock(&self.state_dir)?;
            if locked.state.lease(id).is_some() {
                return Err(Error::BadId(format!("{id} (already attached)")));
            }
            for p in ports {
                if let Some(owner) = locked.state.port_owner(p) {
                    return Err(Error::PortTaken {
                        port: p.host_port,
                        proto: p.proto.as_str(),
                        owner: owner.id.clone(),
                    });
                }
            }
            let ip = locked.state.free_ip(b.subnet)?;
            let lease = Lease {
                id: id.into(),
                name: name.into(),
                ip,
                veth: veth.clone(),
                ports: ports.to_vec(),
            };
            locked.state.leases.push(lease);
            locked.save()?;
            ip
        };
        let att = Attachment {
            ip,
            prefix_len: b.subnet.prefix_len(),
            gateway: b.gateway,
            veth_host: veth,
            ports: ports.to_vec(),
        };
        match self.plumb(id, netns, &att) {
            Ok(()) => Ok(att),
            Err(e) => {
                // The original error matters more than a failed undo.
                let _ = release(&self.state_dir, id, Teardown::Delete);
                Err(e)
            }
        }
    }

    fn plumb(&self, id: &str, netns: Netns<'_>, att: &Attachment) -> Result<()> {
        // nft takes milliseconds to start: run it while the netlink work is done, and always
        // wait for it, so that a failed attach's release finds every rule it made.
        let nft = match att.ports.is_empty() {
            true => None,
            false => Some(nat::spawn(
                &["-f", "-"],
                &nat::publish_script(&self.bridge.name, id, att.ip, &att.ports),
            )?),
        };
        let links = self.plumb_links(netns, att);
        let rules = nft.map(|p| p.wait()).transpose();
        links?;
        rules.map(|_| ())
    }

    fn plumb_links(&self, netns: Netns<'_>, att: &Attachment) -> Result<()> {
        let b = &self.bridge;
        let mut rtnl = Rtnl::open()?;
        let master = rtnl.require_index(&b.name, "attach")?;
        rtnl.create_veth(
            &att.veth_host,
            master,
            b.mtu,
            CONTAINER_IFNAME,
            netns.target(),
        )?;
        let host_index = rtnl.require_index(&att.veth_host, "attach")?;
        rtnl.set_hairpin(host_index)?;
        let (ip, len, gw) = (att.ip, att.prefix_len, att.gateway);
        netns::run_in(netns, move || {
            let mut inner = Rtnl::open()?;
            if let Some(lo) = inner.link_index("lo")? {
                inner.set_up(lo)?;
            }
            let eth = inner.require_index(CONTAINER_IFNAME, "attach")?;
            inner.add_address(eth, ip, len)?;
            inner.set_up(eth)?;
            inner.add_default_route(gw, eth)
        })
    }

    /// See [`release`].
    pub fn release(&self, id: &str) -> Result<()> {
        release(&self.state_dir, id, Teardown::Delete)
    }
}

/// How [`release`] gets rid of a container's veth pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teardown {
    /// Delete it now: the caller cannot tell whether its network namespace is still alive
    /// (`rm` after a supervisor that died).
    Delete,
    /// Take the host end off the bridge and leave the pair to the kernel, which deletes it when
    /// the container's network namespace goes (the caller holds the last reference and is about
    /// to drop it). A detached port cannot answer for the freed address, so it may be leased
    /// again at once; the delete's RCU wait leaves the exit path.
    Detach,
}

/// Undoes [`Network::attach`] from the state directory alone (works after a crashed supervisor):
/// deletes or detaches the host veth (see [`Teardown`]), removes the container's DNAT chain and
/// map entries, then the lease. Idempotent; the lease goes last so a failed release can be retried.
pub fn release(state_dir: &Path, id: &str, how: Teardown) -> Result<()> {
    check_id(id)?;
    let (lease, bridge) = {
        let locked = ipam::lock(state_dir)?;
        (locked.state.lease(id).cloned(), locked.state.bridge.clone())
    };
    let Some(lease) = lease else { return Ok(()) };
    let mut rtnl = Rtnl::open()?;
    match how {
        Teardown::Delete => rtnl.delete_link(&lease.veth)?,
        Teardown::Detach => rtnl.detach_link(&lease.veth)?,
    };
    if let (false, Some(b)) = (lease.ports.is_empty(), &bridge) {
        nat::unpublish(&b.name, id, &lease.ports)?;
    }
    let mut locked = ipam::lock(state_dir)?;
    locked.state.leases.retain(|l| l.id != id);
    locked.save()
}
