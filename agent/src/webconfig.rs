//! `--web-config FILE` in the Prometheus exporter-toolkit format:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_ca_file: ca.crt                 # optional
//!   client_auth_type: RequireAndVerifyClientCert  # optional
//! basic_auth_users:
//!   alice: $2y$10$...                       # bcrypt hash
//! ```
//! Relative paths are resolved against the file's directory, as exporter-toolkit does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub basic_auth_users: HashMap<String, String>,
    /// Accepted for compatibility; we serve HTTP/1.1 and HTTP/2 as negotiated.
    #[serde(default)]
    pub http_server_config: Option<serde_yaml::Value>,
}

#[derive(Deserialize, Debug)]
pub struct TlsServerConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth_type: Option<String>,
    #[serde(flatten)]
    pub other: HashMap<String, serde_yaml::Value>,
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?;
        let mut c = Self::parse(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(t) = &mut c.tls_server_config {
            for p in [&mut t.cert_file, &mut t.key_file] {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
            if let Some(p) = &mut t.client_ca_file {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(c)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let c: WebConfig = serde_yaml::from_str(text).map_err(|e| Error::Invalid {
            path: path.into(),
            message: e.to_string(),
        })?;
        for (user, hash) in &c.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(Error::Invalid {
                    path: path.into(),
                    message: format!("basic_auth_users.{user}: not a bcrypt hash"),
                });
            }
        }
        if let Some(t) = &c.tls_server_config {
            match t.client_auth_type.as_deref() {
                None | Some("NoClientCert") | Some("RequireAndVerifyClientCert")
                | Some("VerifyClientCertIfGiven") => {}
                Some(other) => {
                    return Err(Error::Invalid {
                        path: path.into(),
                        message: format!("client_auth_type {other:?} is not supported (use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"),
                    })
                }
            }
        }
        Ok(c)
    }

    /// The rustls server configuration, if TLS is configured.
    pub fn rustls(&self, path: &Path) -> Result<Option<rustls::ServerConfig>, Error> {
        let Some(t) = &self.tls_server_config else {
            return Ok(None);
        };
        let inv = |message: String| Error::Invalid {
            path: path.into(),
            message,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert_file)
            .map_err(|e| inv(format!("{}: {e}", t.cert_file.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| inv(format!("{}: {e}", t.cert_file.display())))?;
        if certs.is_empty() {
            return Err(inv(format!("{}: no certificate", t.cert_file.display())));
        }
        let key = PrivateKeyDer::from_pem_file(&t.key_file)
            .map_err(|e| inv(format!("{}: {e}", t.key_file.display())))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| inv(e.to_string()))?;
        let auth = t
            .client_auth_type
            .as_deref()
            .unwrap_or(if t.client_ca_file.is_some() {
                "RequireAndVerifyClientCert"
            } else {
                "NoClientCert"
            });
        let builder = match (&t.client_ca_file, auth) {
            (_, "NoClientCert") => builder.with_no_client_auth(),
            (None, _) => return Err(inv(format!("client_auth_type {auth} needs client_ca_file"))),
            (Some(ca), _) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| inv(format!("{}: {e}", ca.display())))?
                {
                    let c = c.map_err(|e| inv(format!("{}: {e}", ca.display())))?;
                    roots
                        .add(c)
                        .map_err(|e| inv(format!("{}: {e}", ca.display())))?;
                }
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                let v = if auth == "VerifyClientCertIfGiven" {
                    v.allow_unauthenticated()
                } else {
                    v
                };
                builder.with_client_cert_verifier(v.build().map_err(|e| inv(e.to_string()))?)
            }
        };
        let mut cfg = builder
            .with_single_cert(certs, key)
            .map_err(|e| inv(format!("certificate/key: {e}")))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(cfg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toolkit_format() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let text = format!(
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\nbasic_auth_users:\n  alice: {hash}\n"
        );
        let c = WebConfig::parse(Path::new("w.yml"), &text).unwrap();
        assert_eq!(
            c.tls_server_config.as_ref().unwrap().cert_file,
            PathBuf::from("a.crt")
        );
        assert!(c.basic_auth_users["alice"].starts_with("$2"));
    }

    #[test]
    fn rejects_bad_files() {
        let p = Path::new("w.yml");
        assert!(WebConfig::parse(p, "basic_auth_users:\n  a: plaintext\n").is_err());
        assert!(WebConfig::parse(p, "nonsense_key: 1\n").is_err());
        assert!(WebConfig::parse(
            p,
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Bogus\n"
        )
        .is_err());
        assert!(WebConfig::parse(p, "").unwrap().tls_server_config.is_none());
    }
}
