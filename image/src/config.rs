//! The parts of an image config a launcher uses (`image inspect`), read with `oci-spec`.

use crate::digest::Digest;
use crate::error::{format, Result};
use oci_spec::image::ImageConfiguration;
use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    pub exposed_ports: Vec<String>,
    pub os: String,
    pub architecture: String,
    pub diff_ids: Vec<Digest>,
}

pub fn parse(bytes: &[u8]) -> Result<RunConfig> {
    let c = ImageConfiguration::from_reader(bytes).map_err(|e| format("image config", e))?;
    let diff_ids = c
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<Result<Vec<_>>>()?;
    let mut rc = RunConfig {
        os: c.os().to_string(),
        architecture: c.architecture().to_string(),
        diff_ids,
        ..Default::default()
    };
    if let Some(cfg) = c.config() {
        rc.entrypoint = cfg.entrypoint().clone().unwrap_or_default();
        rc.cmd = cfg.cmd().clone().unwrap_or_default();
        rc.env = cfg.env().clone().unwrap_or_default();
        rc.working_dir = cfg.working_dir().clone().filter(|w| !w.is_empty());
        rc.user = cfg.user().clone().filter(|u| !u.is_empty());
        rc.stop_signal = cfg.stop_signal().clone();
        rc.exposed_ports = cfg.exposed_ports().clone().unwrap_or_default();
        rc.exposed_ports.sort();
    }
    Ok(rc)
}
