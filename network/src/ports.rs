//! `-p [IP:]HOST:CTR[/tcp|/udp]` publications: parsing and validation.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port: traffic to `host_ip:host_port` (any local address when `host_ip` is None)
/// is DNATed to the container's `ctr_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub ctr_port: u16,
    pub proto: Proto,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.ctr_port,
            self.proto.as_str()
        )
    }
}

fn port(spec: &str, what: &str, s: &str) -> Result<u16, Error> {
    let bad = |reason: String| Error::BadPublish {
        spec: spec.to_string(),
        reason,
    };
    let n: u32 = s
        .parse()
        .map_err(|_| bad(format!("{what} port {s:?} is not a number")))?;
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad(format!("{what} port {n} is outside 1-65535"))),
    }
}

/// Parses docker's `-p` syntax for one fixed port (ranges and random host ports are not supported).
pub fn parse_publish(spec: &str) -> Result<PortMapping, Error> {
    let bad = |reason: &str| Error::BadPublish {
        spec: spec.to_string(),
        reason: reason.into(),
    };
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((p, "tcp")) => (p, Proto::Tcp),
        Some((p, "udp")) => (p, Proto::Udp),
        Some(_) => return Err(bad("protocol must be tcp or udp")),
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [host, ctr] => (None, *host, *ctr),
        [ip, host, ctr] => (Some(*ip), *host, *ctr),
        [_] => return Err(bad("a host port is required: use HOST:CONTAINER")),
        _ => return Err(bad("expected [IP:]HOST:CONTAINER[/tcp|/udp]")),
    };
    let host_ip = match ip {
        None | Some("") | Some("0.0.0.0") => None,
        Some(s) => Some(
            s.parse::<Ipv4Addr>()
                .map_err(|_| bad("host address is not IPv4"))?,
        ),
    };
    Ok(PortMapping {
        host_ip,
        host_port: port(spec, "host", host)?,
        ctr_port: port(spec, "container", ctr)?,
        proto,
    })
}

/// Rejects a list that publishes the same host port/protocol twice.
pub fn check_distinct(ports: &[PortMapping]) -> Result<(), Error> {
    for (i, p) in ports.iter().enumerate() {
        if ports
            .iter()
            .skip(i + 1)
            .any(|q| q.host_port == p.host_port && q.proto == p.proto)
        {
            return Err(Error::BadPublish {
                spec: p.to_string(),
                reason: format!(
                    "host port {}/{} is given twice",
                    p.host_port,
                    p.proto.as_str()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.ctr_port, p.proto),
            (None, 8080, 80, Proto::Tcp)
        );
        let p = parse_publish("127.0.0.1:53:5353/udp").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p.proto, Proto::Udp);
        assert_eq!(p.to_string(), "127.0.0.1:53:5353/udp");
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "70000:80",
            "80:0",
            "80",
            "a:80",
            "1:2:3:4",
            "80:80/sctp",
            "x.y:80:80",
            "",
            "0:80",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad} accepted");
        }
        let msg = parse_publish("70000:80").unwrap_err().to_string();
        assert!(msg.contains("70000") && msg.contains("1-65535"), "{msg}");
        let two = [
            parse_publish("80:80").unwrap(),
            parse_publish("80:81").unwrap(),
        ];
        assert!(check_distinct(&two).is_err());
        let ok = [
            parse_publish("80:80").unwrap(),
            parse_publish("80:80/udp").unwrap(),
        ];
        assert!(check_distinct(&ok).is_ok());
    }
}
