//! What container root loses when the net namespace is not its own, given back per namespace.
//!
//! In the launcher's order the net namespace is made before the user namespace, so it belongs
//! to host root: binding ports below 1024 and raw sockets check capabilities there, which
//! container root does not hold (measured: EACCES / EPERM). Two per-namespace sysctls restore
//! what docker's default set allows, without giving any capability: low ports for everyone,
//! and ICMP echo (`ping`) sockets for the container's groups.

use std::path::Path;

use super::{IdRange, UsernsError};

const PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
const PING_GROUPS: &str = "/proc/sys/net/ipv4/ping_group_range";

/// Run in the container child as host root, after unshare(CLONE_NEWNET) and while the host's
/// /proc is still writable (before the root is built): /proc/sys/net follows the writer's net
/// namespace. Only for a private net namespace: with the host's network this would change the
/// host's settings.
pub fn open_low_ports_and_ping(range: &IdRange) -> Result<(), UsernsError> {
    let write =
        |p: &str, v: String| std::fs::write(p, v).map_err(|e| UsernsError::io(Path::new(p), e));
    write(PORT_START, "0".into())?;
    // Host gids (the writer's view): the container's whole gid range.
    let last = u64::from(range.gid) + u64::from(range.count.max(1)) - 1;
    write(PING_GROUPS, format!("{} {last}", range.gid))
}
