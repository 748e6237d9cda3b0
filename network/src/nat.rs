//! nftables rules: masquerade for the subnet, DNAT for published ports, per-container cleanup.
//!
//! Rules go to Debian's `nft` as one atomic batch on stdin (`nft -f -`). The alternatives were
//! weighed: `rustables` (nf_tables netlink directly) is GPL-3.0 and `nftnl` links the GPL C
//! libnftnl, both wrong for an Apache-2.0 binary; the `nftables` crate drives this same `nft`
//! process with JSON, adding a typed schema but no speed. Attach calls nft only when ports are
//! published, so a plain `--net bridge` launch pays no process spawn.
//!
//! Layout, after docker's nftables backend with the userland proxy off: table `ip <bridge>`,
//! `prerouting`/`output` nat chains jump to `published` for local destinations (output too, so
//! 127.0.0.1 works, with `route_localnet` on the bridge), `published` looks the
//! `l4proto . dport` up in the verdict map `ports`, whose elements jump to one chain per
//! container, `ctr-<id>`, holding its DNAT rules. Cleanup by container id needs only the kernel's
//! ruleset: the elements that jump to `ctr-<id>`, then the chain.
//!
//! `route_localnet` (needed for `-p` on 127.0.0.1) also makes the host accept packets for
//! 127.0.0.0/8 that arrive on the bridge: a container with CAP_NET_RAW (docker's default) could
//! forge frames to the host's loopback-only services (CVE-2020-8558 in kube-proxy). The `input`
//! chain drops them unless they answer a connection the host made (a published port's replies).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::ports::PortMapping;
use crate::subnet::Subnet;

use std::net::Ipv4Addr;

/// Bumped when [`base_script`] changes: a bridge made by an older cgsight gets the new base
/// rules on its next launch (1: the input chain that drops forged loopback packets).
pub const RULES_VERSION: u32 = 1;

/// The table holding one bridge's rules.
pub fn table(bridge: &str) -> String {
    bridge.to_string()
}

fn chain(id: &str) -> String {
    format!("ctr-{id}")
}

/// The table, base chains and subnet rules. Idempotent: base chains are flushed and refilled in
/// the same transaction, container chains and map elements are kept.
pub fn base_script(bridge: &str, subnet: Subnet) -> String {
    let t = table(bridge);
    format!(
        "add table ip {t}
add chain ip {t} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}
add chain ip {t} output {{ type nat hook output priority -100; policy accept; }}
add chain ip {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
add chain ip {t} published
add chain ip {t} input {{ type filter hook input priority filter; policy accept; }}
add map ip {t} ports {{ type inet_proto . inet_service : verdict; }}
flush chain ip {t} prerouting
flush chain ip {t} output
flush chain ip {t} postrouting
flush chain ip {t} published
flush chain ip {t} input
add rule ip {t} input iifname \"{bridge}\" ip daddr 127.0.0.0/8 ct state != {{ established, related }} drop
add rule ip {t} prerouting fib daddr type local jump published
add rule ip {t} output fib daddr type local jump published
add rule ip {t} published meta l4proto . th dport vmap @ports
add rule ip {t} postrouting oifname != \"{bridge}\" ip saddr {subnet} masquerade
add rule ip {t} postrouting oifname \"{bridge}\" fib saddr type local masquerade
add rule ip {t} postrouting oifname \"{bridge}\" ip saddr {subnet} ct status dnat masquerade
"
    )
}

/// One container's DNAT chain and its map entries. `create element` fails on a host port that
/// is already in the map, and the batch is atomic, so a clash leaves nothing behind.
pub fn publish_script(bridge: &str, id: &str, ip: Ipv4Addr, ports: &[PortMapping]) -> String {
    let (t, c) = (table(bridge), chain(id));
    let mut s = format!("add chain ip {t} {c}\n");
    for p in ports {
        let dst = p
            .host_ip
            .map(|h| format!("ip daddr {h} "))
            .unwrap_or_default();
        let proto = p.proto.as_str();
        s += &format!(
            "add rule ip {t} {c} {dst}{proto} dport {} dnat to {ip}:{}\n",
            p.host_port, p.ctr_port
        );
    }
    for p in ports {
        s += &format!(
            "create element ip {t} ports {{ {} . {} : jump {c} }}\n",
            p.proto.as_str(),
            p.host_port
        );
    }
    s
}

/// What the kernel holds for one container: map keys `(proto, port)` jumping to its chain, and
/// whether the chain exists. Read from `nft -j list table`.
pub fn owned_by(ruleset_json: &str, id: &str) -> Result<(Vec<(String, u64)>, bool)> {
    let bad = |reason: String| Error::Nft {
        status: "parse".into(),
        stderr: reason,
    };
    let v: serde_json::Value =
        serde_json::from_str(ruleset_json).map_err(|e| bad(e.to_string()))?;
    let objs = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .ok_or_else(|| bad("no nftables array".into()))?;
    let c = chain(id);
    let mut keys = Vec::new();
    let mut has_chain = false;
    for o in objs {
        if o.pointer("/chain/name").and_then(|n| n.as_str()) == Some(&c) {
            has_chain = true;
        }
        if o.pointer("/map/name").and_then(|n| n.as_str()) != Some("ports") {
            continue;
        }
        let elems = o
            .pointer("/map/elem")
            .and_then(|e| e.as_array())
            .cloned()
            .unwrap_or_default();
        for e in elems {
            // Each element is [key, value]; key is {"concat": [proto, port]}.
            let target = e.pointer("/1/jump/target").and_then(|t| t.as_str());
            if target != Some(c.as_str()) {
                continue;
            }
            let proto = e.pointer("/0/concat/0").and_then(|p| p.as_str());
            let port = e.pointer("/0/concat/1").and_then(|p| p.as_u64());
            if let (Some(proto), Some(port)) = (proto, port) {
                keys.push((proto.to_string(), port));
            }
        }
    }
    Ok((keys, has_chain))
}

/// The batch that removes what `owned_by` found.
pub fn unpublish_script(bridge: &str, id: &str, keys: &[(String, u64)], has_chain: bool) -> String {
    let (t, c) = (table(bridge), chain(id));
    let mut s = String::new();
    for (proto, port) in keys {
        s += &format!("delete element ip {t} ports {{ {proto} . {port} }}\n");
    }
    if has_chain {
        s += &format!("flush chain ip {t} {c}\ndelete chain ip {t} {c}\n");
    }
    s
}

/// An `nft` process started with its input written; [`Pending::wait`] collects the outcome.
/// Lets attach overlap nft's start-up (milliseconds) with the netlink work.
pub struct Pending(std::process::Child);

/// Starts `nft` with `args`, feeding `stdin` (small: fits the pipe buffer, so this never blocks).
pub fn spawn(args: &[&str], stdin: &str) -> Result<Pending> {
    let spawn_err = |e: std::io::Error| Error::Nft {
        status: "spawn".into(),
        stderr: e.to_string(),
    };
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes()).map_err(spawn_err)?;
    }
    Ok(Pending(child))
}

impl Pending {
    /// Waits for `nft`; returns its stdout, or its stderr as the error.
    pub fn wait(self) -> Result<String> {
        let out = self.0.wait_with_output().map_err(|e| Error::Nft {
            status: "wait".into(),
            stderr: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(Error::Nft {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Runs `nft` with `args`, feeding `stdin`; returns stdout.
pub fn nft(args: &[&str], stdin: &str) -> Result<String> {
    spawn(args, stdin)?.wait()
}

/// Applies a batch atomically.
pub fn apply(script: &str) -> Result<()> {
    if script.is_empty() {
        return Ok(());
    }
    nft(&["-f", "-"], script).map(|_| ())
}

/// Removes one container's DNAT chain and map entries; nothing there (or no table) is fine.
/// `known`: the ports its lease records. They are removed in one batch (one `nft` start, the
/// common case); only when the kernel's rules differ from them (a release that failed half-way)
/// is the table listed to find what is there.
pub fn unpublish(bridge: &str, id: &str, known: &[PortMapping]) -> Result<()> {
    if !known.is_empty() {
        let keys: Vec<(String, u64)> = known
            .iter()
            .map(|p| (p.proto.as_str().to_owned(), u64::from(p.host_port)))
            .collect();
        if apply(&unpublish_script(bridge, id, &keys, true)).is_ok() {
            return Ok(());
        }
    }
    let listing = match nft(&["-j", "list", "table", "ip", &table(bridge)], "") {
        Ok(s) => s,
        Err(Error::Nft { stderr, .. }) if stderr.contains("No such file") => return Ok(()),
        Err(e) => return Err(e),
    };
    let (keys, has_chain) = owned_by(&listing, id)?;
    apply(&unpublish_script(bridge, id, &keys, has_chain))
}

/// Drops the whole table (tests and `network rm`).
pub fn remove_table(bridge: &str) -> Result<()> {
    match apply(&format!("delete table ip {}\n", table(bridge))) {
        Err(Error::Nft { stderr, .. }) if stderr.contains("No such file") => Ok(()),
        r => r,
    }
}
