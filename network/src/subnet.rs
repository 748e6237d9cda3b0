//! IPv4 subnets: parsing, overlap, and choosing a free one from docker's default pools.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// An IPv4 network `addr/len` with the host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    addr: Ipv4Addr,
    len: u8,
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Subnet, Error> {
        let spec = format!("{addr}/{len}");
        if len > 30 {
            return Err(Error::BadSubnet {
                spec,
                reason: "prefix longer than /30 leaves no hosts".into(),
            });
        }
        let s = Subnet { addr, len };
        if s.network() != addr {
            return Err(Error::BadSubnet {
                spec,
                reason: format!("host bits set (network is {})", s.network()),
            });
        }
        Ok(s)
    }

    fn mask(len: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
    }
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & Self::mask(self.len))
    }
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
    /// The first host address: the bridge's (docker's gateway convention).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }
    fn last(&self) -> u32 {
        u32::from(self.addr) | !Self::mask(self.len)
    }
    /// Container addresses: after the gateway, before the broadcast address.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.addr) + 2..self.last()).map(Ipv4Addr::from)
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.len) == u32::from(self.addr)
    }
    /// Two prefixes overlap when the shorter one contains the other's network address.
    pub fn overlaps(&self, addr: Ipv4Addr, len: u8) -> bool {
        let shorter = self.len.min(len);
        let m = Self::mask(shorter);
        u32::from(self.addr) & m == u32::from(addr) & m
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Subnet {
    type Err = Error;
    fn from_str(spec: &str) -> Result<Subnet, Error> {
        let bad = |reason: &str| Error::BadSubnet {
            spec: spec.to_string(),
            reason: reason.into(),
        };
        let (a, l) = spec
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("not an IPv4 address"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| bad("prefix length is not a number"))?;
        Subnet::new(addr, len)
    }
}

impl TryFrom<String> for Subnet {
    type Error = Error;
    fn try_from(s: String) -> Result<Subnet, Error> {
        s.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

/// docker's default address pools in order: 172.17.0.0/16 … 172.31.0.0/16, then 192.168.0.0/16
/// cut into /20s (`default-address-pools` of dockerd: `172.17.0.0/16` size 16, `172.18.0.0/16`
/// … size 16, `192.168.0.0/16` size 20).
pub fn default_pools() -> impl Iterator<Item = Subnet> {
    let a = (17u8..=31).map(|b| Subnet {
        addr: Ipv4Addr::new(172, b, 0, 0),
        len: 16,
    });
    let b = (0u8..16).map(|i| Subnet {
        addr: Ipv4Addr::new(192, 168, i * 16, 0),
        len: 20,
    });
    a.chain(b)
}

/// The first pool that overlaps none of `taken` (route destinations and interface addresses as
/// `(addr, len)`). Default routes (len 0) are ignored, as docker does: they overlap everything.
pub fn pick_free(taken: &[(Ipv4Addr, u8)]) -> Option<Subnet> {
    default_pools().find(|p| !taken.iter().any(|&(a, l)| l > 0 && p.overlaps(a, l)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_overlap() {
        let s: Subnet = "172.17.0.0/16".parse().unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(172, 17, 0, 1));
        assert_eq!(s.hosts().next(), Some(Ipv4Addr::new(172, 17, 0, 2)));
        assert_eq!(s.hosts().last(), Some(Ipv4Addr::new(172, 17, 255, 254)));
        assert!(s.overlaps(Ipv4Addr::new(172, 17, 5, 0), 24));
        assert!(s.overlaps(Ipv4Addr::new(172, 0, 0, 0), 8));
        assert!(!s.overlaps(Ipv4Addr::new(172, 18, 0, 0), 16));
        assert!("172.17.0.1/16".parse::<Subnet>().is_err());
        assert!("172.17.0.0/31".parse::<Subnet>().is_err());
        assert!("garbage".parse::<Subnet>().is_err());
        assert!("1.2.3.4/x".parse::<Subnet>().is_err());
    }

    #[test]
    fn picks_next_pool_past_taken_routes() {
        let taken = [
            (Ipv4Addr::UNSPECIFIED, 0),
            (Ipv4Addr::new(172, 17, 3, 0), 24),
        ];
        assert_eq!(pick_free(&taken).unwrap().to_string(), "172.18.0.0/16");
        let all172 = [(Ipv4Addr::new(172, 16, 0, 0), 12)];
        assert_eq!(pick_free(&all172).unwrap().to_string(), "192.168.0.0/20");
        let everything = [(Ipv4Addr::new(128, 0, 0, 0), 1)];
        assert_eq!(pick_free(&everything), None);
    }
}
