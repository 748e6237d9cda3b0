//! The container's /etc/hosts and /etc/resolv.conf contents, as docker writes them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use crate::error::{Error, Result};

/// docker's /etc/hosts for a bridge container: the loopback and IPv6 well-known names, then the
/// container's address with its hostname.
pub fn hosts_file(name: &str, ip: Ipv4Addr) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n{ip}\t{name}\n"
    )
}

/// docker's fallback when the host has no usable nameserver: Google's public resolvers (IPv4 only,
/// as the bridge has no IPv6).
pub const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

fn is_loopback_ns(line: &str) -> bool {
    let mut w = line.split_whitespace();
    if w.next() != Some("nameserver") {
        return false;
    }
    // Strip an IPv6 zone ("fe80::1%eth0") before parsing.
    let addr = w.next().unwrap_or("").split('%').next().unwrap_or("");
    addr.parse::<IpAddr>()
        .map(|a| a.is_loopback())
        .unwrap_or(false)
}

/// The host's resolv.conf without loopback nameservers (they would point at the container's own
/// loopback); with none left, the fallback nameservers are appended. Other lines are kept.
pub fn resolv_conf_from(host: &str) -> String {
    let mut out = String::new();
    let mut nameservers = 0;
    for line in host.lines() {
        if is_loopback_ns(line) {
            continue;
        }
        if line.split_whitespace().next() == Some("nameserver") {
            nameservers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if nameservers == 0 {
        for ns in FALLBACK_NAMESERVERS {
            out.push_str(&format!("nameserver {ns}\n"));
        }
    }
    out
}

/// Reads the host's resolv.conf; when it only names systemd-resolved's stub (127.0.0.53) the
/// upstream list in /run/systemd/resolve/resolv.conf is used, as docker does.
pub fn resolv_conf() -> Result<String> {
    resolv_conf_at(
        Path::new("/etc/resolv.conf"),
        Path::new("/run/systemd/resolve/resolv.conf"),
    )
}

pub fn resolv_conf_at(etc: &Path, resolved: &Path) -> Result<String> {
    let host = match std::fs::read_to_string(etc) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io("read", etc, e)),
    };
    let stub_only = host.lines().any(|l| l.contains("127.0.0.53"))
        && host
            .lines()
            .filter(|l| l.trim_start().starts_with("nameserver"))
            .all(is_loopback_ns);
    if stub_only {
        if let Ok(upstream) = std::fs::read_to_string(resolved) {
            return Ok(resolv_conf_from(&upstream));
        }
    }
    Ok(resolv_conf_from(&host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_names_the_container() {
        let h = hosts_file("web", Ipv4Addr::new(172, 17, 0, 2));
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("172.17.0.2\tweb\n"));
    }

    #[test]
    fn resolv_drops_loopback_and_falls_back() {
        let r = resolv_conf_from(
            "search lan\nnameserver 127.0.0.1\nnameserver 10.0.0.2\noptions ndots:2\n",
        );
        assert_eq!(r, "search lan\nnameserver 10.0.0.2\noptions ndots:2\n");
        let r = resolv_conf_from("nameserver 127.0.0.53\nnameserver ::1\n");
        assert_eq!(r, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        assert_eq!(
            resolv_conf_from(""),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        let r = resolv_conf_from("nameserver fe80::1%eth0\n");
        assert_eq!(r, "nameserver fe80::1%eth0\n");
    }

    #[test]
    fn resolv_follows_systemd_resolved_upstream() {
        let dir = std::env::temp_dir().join(format!("cgsight-test-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (etc, up) = (dir.join("etc"), dir.join("up"));
        std::fs::write(&etc, "nameserver 127.0.0.53\noptions edns0\n").unwrap();
        std::fs::write(&up, "nameserver 192.0.2.53\n").unwrap();
        assert_eq!(
            resolv_conf_at(&etc, &up).unwrap(),
            "nameserver 192.0.2.53\n"
        );
        std::fs::remove_file(&up).unwrap();
        let fallback = resolv_conf_at(&etc, &up).unwrap();
        assert_eq!(
            fallback,
            "options edns0\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert!(resolv_conf_at(&dir.join("absent"), &up)
            .unwrap()
            .contains("8.8.8.8"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
