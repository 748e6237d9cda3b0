//! The network's settings: bridge name, subnet, MTU, from a small JSON file.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::subnet::Subnet;

/// Where `cgsight launch` reads its network settings unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/cgsight/network.json";

/// `{"bridge": "cgsight0", "subnet": "10.88.0.0/16", "mtu": 1500}`; every key optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub bridge: String,
    /// None: the first of docker's default pools free on this host.
    pub subnet: Option<Subnet>,
    pub mtu: u32,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: "cgsight0".into(),
            subnet: None,
            mtu: 1500,
        }
    }
}

impl NetworkConfig {
    /// Reads `path`; a missing file means the defaults.
    pub fn load(path: &Path) -> Result<NetworkConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io("read network config", path, e)),
        };
        let cfg: NetworkConfig = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: path.into(),
            reason: e.to_string(),
        })?;
        cfg.validate().map_err(|reason| Error::Config {
            path: path.into(),
            reason,
        })?;
        Ok(cfg)
    }

    /// Linux interface names are 1-15 bytes without '/', ':' or whitespace; the name is also the
    /// nftables table, so keep to identifier characters.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let b = &self.bridge;
        let ok_chars = b.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if b.is_empty()
            || b.len() > 15
            || !ok_chars
            || !b.starts_with(|c: char| c.is_ascii_alphabetic())
        {
            return Err(format!(
                "bridge name {b:?}: use 1-15 of [A-Za-z0-9_], starting with a letter"
            ));
        }
        if !(576..=65535).contains(&self.mtu) {
            return Err(format!("mtu {} outside 576-65535", self.mtu));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_defaults_and_rejects_garbage() {
        let dir = std::env::temp_dir().join(format!("cgsight-test-netcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(
            NetworkConfig::load(&dir.join("absent.json")).unwrap(),
            NetworkConfig::default()
        );
        let p = dir.join("n.json");
        std::fs::write(&p, r#"{"subnet": "10.88.0.0/16"}"#).unwrap();
        assert_eq!(
            NetworkConfig::load(&p).unwrap().subnet.unwrap().to_string(),
            "10.88.0.0/16"
        );
        for bad in [
            r#"{"subnet": "10.88.0.1/16"}"#,
            r#"{"bridge": "a/b"}"#,
            "{",
            r#"{"mtu": 5}"#,
            r#"{"x":1}"#,
        ] {
            std::fs::write(&p, bad).unwrap();
            assert!(NetworkConfig::load(&p).is_err(), "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
