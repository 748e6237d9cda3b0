//! Image references (`[host[:port]/]repo[:tag][@digest]`) parsed the way docker names them.

use crate::digest::Digest;
use crate::error::{Error, Result};
use std::fmt;

pub const DEFAULT_REGISTRY: &str = "docker.io";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry host as written (`docker.io` for the default).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Reference {
            reference: s.into(),
            why: why.into(),
        };
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d)?)),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a host:port.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name.get(last_slash..).and_then(|t| t.find(':')) {
            Some(i) => {
                let at = last_slash + i;
                (
                    name.get(..at).unwrap_or(name),
                    name.get(at + 1..).map(str::to_string),
                )
            }
            None => (name, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty()
            || !repository
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._/-".contains(&b))
            || repository.split('/').any(str::is_empty)
        {
            return Err(bad("repository must be lowercase letters, digits and ._-/"));
        }
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(bad("tag must be 1-128 of letters, digits and ._-"));
            }
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host the v2 API lives on (docker.io's API is served elsewhere).
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// What to ask the registry's manifests endpoint for: the digest if pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// Plain HTTP is only for the loopback host, unless the caller says the registry is insecure.
    pub fn is_loopback(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .map_or(self.registry.as_str(), |(h, _)| h);
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_defaults_and_ports() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = Reference::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "a/b")
        );
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(r.is_loopback());
        let r = Reference::parse("localhost:5000/x").unwrap();
        assert_eq!(r.manifest_ref(), "latest");
        let d = Digest::of_bytes(b"x");
        let r = Reference::parse(&format!("quay.io/a/b@{d}")).unwrap();
        assert_eq!(r.manifest_ref(), d.to_string());
        assert!(!r.is_loopback());
        assert!(Reference::parse("Upper/case").is_err());
        assert!(Reference::parse("a:").is_err());
        assert!(Reference::parse("a//b").is_err());
    }
}
