//! Registry credentials (explicit `user:pass` or `~/.docker/config.json`) and the
//! `WWW-Authenticate` challenge a registry answers with.

use crate::error::{Error, Result};
use base64::Engine as _;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print the secret, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:***)", self.username)
    }
}

impl Credentials {
    /// From `user:pass` as given on a command line.
    pub fn parse(user_pass: &str) -> Result<Self> {
        let (u, p) = user_pass
            .split_once(':')
            .ok_or_else(|| Error::Credentials("expected user:password".into()))?;
        Ok(Credentials {
            username: u.into(),
            password: p.into(),
        })
    }

    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// Looks `registry` up in a docker `config.json` (`auths.<host>.auth`, base64 `user:pass`).
    /// A missing file means no credentials; a garbled one is an error rather than a silent anonymous pull.
    pub fn from_docker_config(path: &Path, registry: &str) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Credentials(format!("{}: {e}", path.display()))),
        };
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Credentials(format!("{}: {e}", path.display())))?;
        let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
            return Ok(None);
        };
        // docker writes docker.io's entry under its historic index URL.
        let keys: Vec<String> = if registry == crate::reference::DEFAULT_REGISTRY {
            vec!["https://index.docker.io/v1/".into(), registry.into()]
        } else {
            vec![
                registry.into(),
                format!("https://{registry}"),
                format!("http://{registry}"),
            ]
        };
        let Some(entry) = keys.iter().find_map(|k| auths.get(k)) else {
            return Ok(None);
        };
        let Some(b64) = entry.get("auth").and_then(|a| a.as_str()) else {
            return Ok(None);
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| Error::Credentials(format!("auths.{registry}.auth: {e}")))?;
        let s = String::from_utf8(raw)
            .map_err(|_| Error::Credentials(format!("auths.{registry}.auth is not UTF-8")))?;
        Self::parse(&s).map(Some)
    }

    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn default_docker_config() -> Option<std::path::PathBuf> {
        if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
            return Some(Path::new(&d).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker/config.json"))
    }
}

/// A parsed `WWW-Authenticate` header: the scheme and its `key="value"` parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let mut params = BTreeMap::new();
        let mut rest = rest.trim_start();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let key = key.trim().to_ascii_lowercase();
            let after = after.trim_start();
            let (value, tail) = if let Some(q) = after.strip_prefix('"') {
                let end = q.find('"')?;
                (q.get(..end)?, q.get(end + 1..)?)
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after.get(..end)?.trim(), after.get(end..)?)
            };
            params.insert(key, value.to_string());
            rest = tail.trim_start().trim_start_matches(',').trim_start();
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_commas_in_scope() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        assert_eq!(
            Challenge::parse("Basic realm=x").unwrap().params["realm"],
            "x"
        );
    }

    #[test]
    fn docker_config_lookup() {
        let dir = std::env::temp_dir().join(format!("cgsight-test-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("config.json");
        // base64("u:p:w") — the password may itself hold a colon.
        std::fs::write(&p, r#"{"auths":{"127.0.0.1:5000":{"auth":"dTpwOnc="}}}"#).unwrap();
        let c = Credentials::from_docker_config(&p, "127.0.0.1:5000")
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:w"));
        assert!(Credentials::from_docker_config(&p, "other")
            .unwrap()
            .is_none());
        std::fs::write(&p, "{garbage").unwrap();
        assert!(Credentials::from_docker_config(&p, "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
