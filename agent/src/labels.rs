//! Container names and images from the runtimes' own state files (no daemon API calls):
//! cgsight's `state.json`, docker's `config.v2.json`. Cached per id; unreadable files are skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::discover::Kind;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Meta {
    pub name: String,
    pub image: String,
    /// Unix seconds the container started (cgsight's `started`, docker's State.StartedAt).
    pub started: Option<f64>,
}

#[derive(Deserialize)]
struct CgsightState {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    started: Option<f64>,
    #[serde(default)]
    created: Option<f64>,
}

/// Parses a cgsight `state.json` (extra fields tolerated).
pub fn parse_cgsight_state(text: &str) -> Option<Meta> {
    let s: CgsightState = serde_json::from_str(text).ok()?;
    Some(Meta {
        name: s.name.unwrap_or_default(),
        image: s.image.unwrap_or_default(),
        started: s.started.or(s.created),
    })
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: Option<DockerInner>,
}

#[derive(Deserialize)]
struct DockerInner {
    #[serde(rename = "Image", default)]
    image: String,
}

/// Parses docker's `/var/lib/docker/containers/<id>/config.v2.json` for the name and image.
pub fn parse_docker_config(text: &str) -> Option<Meta> {
    let c: DockerConfig = serde_json::from_str(text).ok()?;
    Some(Meta {
        name: c.name.trim_start_matches('/').to_owned(),
        image: c.config.map(|i| i.image).unwrap_or_default(),
        started: None,
    })
}

type Parser = fn(&str) -> Option<Meta>;

/// Per-id cache of container metadata.
pub struct Labeler {
    pub state_dir: PathBuf,
    pub docker_dir: PathBuf,
    cache: HashMap<String, Meta>,
}

impl Labeler {
    pub fn new(state_dir: PathBuf) -> Self {
        Labeler {
            state_dir,
            docker_dir: PathBuf::from("/var/lib/docker/containers"),
            cache: HashMap::new(),
        }
    }

    /// Metadata for a container, from the cache or its state file. `Err(())` means the file
    /// exists but could not be parsed (counted by the caller); a missing file is `Ok(default)`
    /// and is retried next scrape (the launcher may not have written it yet).
    pub fn meta(&mut self, kind: &Kind) -> Result<Meta, PathBuf> {
        let (id, file, parse): (&str, PathBuf, Parser) = match kind {
            Kind::Cgsight { id } => (
                id,
                self.state_dir.join(id).join("state.json"),
                parse_cgsight_state,
            ),
            Kind::Docker { id } => (
                id,
                self.docker_dir.join(id).join("config.v2.json"),
                parse_docker_config,
            ),
            _ => return Ok(Meta::default()),
        };
        if let Some(m) = self.cache.get(id) {
            return Ok(m.clone());
        }
        match read_small(&file) {
            None => Ok(Meta::default()),
            Some(text) => match parse(&text) {
                Some(m) => {
                    self.cache.insert(id.to_owned(), m.clone());
                    Ok(m)
                }
                None => Err(file),
            },
        }
    }

    /// Drops cached entries of containers no longer present.
    pub fn retain(&mut self, live: &std::collections::HashSet<&str>) {
        self.cache.retain(|k, _| live.contains(k.as_str()));
    }
}

fn read_small(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgsight_state_tolerates_extra_fields_and_nulls() {
        let m = parse_cgsight_state(
            r#"{"id":"x","name":"web","image":"host","started":1700000000.5,"limits":{"memory":null},"extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(m.name, "web");
        assert_eq!(m.image, "host");
        assert_eq!(m.started, Some(1700000000.5));
        let m = parse_cgsight_state(r#"{"name":"a","started":null,"created":5.0}"#).unwrap();
        assert_eq!(m.started, Some(5.0));
        assert!(parse_cgsight_state("{not json").is_none());
    }

    #[test]
    fn docker_config() {
        let m = parse_docker_config(
            r#"{"Name":"/db","Config":{"Image":"postgres:16","Env":[]},"State":{}}"#,
        )
        .unwrap();
        assert_eq!((m.name.as_str(), m.image.as_str()), ("db", "postgres:16"));
    }
}
