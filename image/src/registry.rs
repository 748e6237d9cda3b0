//! A small blocking client for the registry HTTP API v2 (distribution spec): manifests, blobs,
//! monolithic uploads, Bearer-token and Basic auth.
//!
//! Why hand-written over `ureq` rather than the `oci-client` crate: oci-client is async-only
//! (reqwest + a tokio runtime around every call from this synchronous code) and pulls reqwest's
//! stack and its own auth/JWT crates in; what cgsight needs is nine requests and one challenge
//! format, and ureq is blocking, streams bodies straight to/from files, and brings rustls on the
//! ring provider, both of which were already in this workspace's lock file.

use crate::auth::{Challenge, Credentials};
use crate::digest::{Digest, HashWriter};
use crate::error::{io, Error, Result};
use crate::manifest::ACCEPT_MANIFESTS;
use crate::reference::Reference;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use ureq::http::{Method, Request, Response, StatusCode};
use ureq::{Agent, Body};

/// How to talk to one registry.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Allow plain HTTP to a host other than localhost/127.0.0.1.
    pub insecure: bool,
    /// Explicit credentials; when None, `~/.docker/config.json` is consulted.
    pub credentials: Option<Credentials>,
    /// Connect timeout; the default is 30 s.
    pub connect_timeout: Option<Duration>,
}

pub struct RegistryClient {
    agent: Agent,
    registry: String,
    base: String,
    repository: String,
    scope: String,
    credentials: Option<Credentials>,
    /// The Authorization header that last worked, reused until a 401 says otherwise.
    auth: Mutex<Option<String>>,
}

/// What to send as a request body (a file is reopened if the request is retried after auth).
enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    File(&'a Path),
}

impl RegistryClient {
    /// A client for `reference`'s repository; `push` asks the token service for push rights too.
    pub fn new(reference: &Reference, opts: &ClientOptions, push: bool) -> Result<Self> {
        let scheme = if opts.insecure || reference.is_loopback() {
            "http"
        } else {
            "https"
        };
        let credentials = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => match Credentials::default_docker_config() {
                Some(p) => Credentials::from_docker_config(&p, &reference.registry)?,
                None => None,
            },
        };
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(
                opts.connect_timeout.unwrap_or(Duration::from_secs(30)),
            ))
            // Only a registry the caller named is contacted; no proxy from the environment.
            .proxy(None)
            .build()
            .into();
        let actions = if push { "pull,push" } else { "pull" };
        Ok(RegistryClient {
            agent,
            registry: reference.registry.clone(),
            base: format!("{scheme}://{}", reference.api_host()),
            repository: reference.repository.clone(),
            scope: format!("repository:{}:{actions}", reference.repository),
            credentials,
            auth: Mutex::new(None),
        })
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.repository)
    }

    fn transport_error(&self, e: ureq::Error) -> Error {
        match e {
            ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Timeout(_) => Error::Unreachable {
                registry: self.registry.clone(),
                why: e.to_string(),
            },
            other => Error::Registry {
                registry: self.registry.clone(),
                why: other.to_string(),
            },
        }
    }

    fn send_once(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&str, &str)],
        payload: &Payload,
    ) -> Result<Response<Body>> {
        let mut b = Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(a) = self.auth.lock().ok().and_then(|g| g.clone()) {
            b = b.header("Authorization", a);
        }
        let bad = |e: ureq::http::Error| Error::Registry {
            registry: self.registry.clone(),
            why: format!("building request for {url}: {e}"),
        };
        let res = match payload {
            Payload::Empty => self.agent.run(b.body(()).map_err(bad)?),
            Payload::Bytes(d) => self.agent.run(b.body(*d).map_err(bad)?),
            Payload::File(p) => {
                let f = File::open(p).map_err(io(format!("opening {}", p.display())))?;
                self.agent.run(b.body(f).map_err(bad)?)
            }
        };
        res.map_err(|e| self.transport_error(e))
    }

    /// Sends a request; on a 401 answers the challenge once and retries.
    fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        payload: Payload,
        what: &str,
    ) -> Result<Response<Body>> {
        let res = self.send_once(&method, url, headers, &payload)?;
        if res.status() != StatusCode::UNAUTHORIZED {
            return self.check(res, what);
        }
        let challenge = res
            .headers()
            .get("www-authenticate")
            .and_then(|h| h.to_str().ok())
            .and_then(Challenge::parse);
        let header = match challenge {
            Some(c) if c.scheme == "bearer" => self.fetch_token(&c)?,
            Some(c) if c.scheme == "basic" && self.credentials.is_some() => self
                .credentials
                .as_ref()
                .map(Credentials::basic_header)
                .unwrap_or_default(),
            _ => return Err(self.unauthorized(what, 401)),
        };
        if let Ok(mut g) = self.auth.lock() {
            *g = Some(header);
        }
        let res = self.send_once(&method, url, headers, &payload)?;
        self.check(res, what)
    }

    fn unauthorized(&self, what: &str, status: u16) -> Error {
        Error::Unauthorized {
            registry: self.registry.clone(),
            what: what.into(),
            status,
        }
    }

    fn check(&self, res: Response<Body>, what: &str) -> Result<Response<Body>> {
        let s = res.status();
        if s.is_success() {
            return Ok(res);
        }
        Err(match s.as_u16() {
            401 | 403 => self.unauthorized(what, s.as_u16()),
            404 => Error::NotFound {
                registry: self.registry.clone(),
                what: what.into(),
            },
            code => {
                let mut body = res.into_body();
                let text = body
                    .with_config()
                    .limit(4096)
                    .read_to_string()
                    .unwrap_or_default();
                Error::Registry {
                    registry: self.registry.clone(),
                    why: format!("{what}: HTTP {code} {}", text.trim().replace('\n', " ")),
                }
            }
        })
    }

    /// A small body (manifest, token) read whole, refusing more than `limit` bytes.
    fn read_body(&self, res: Response<Body>, limit: u64) -> Result<Vec<u8>> {
        res.into_body()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| self.transport_error(e))
    }

    /// Gets a Bearer token from the challenge's realm, with Basic credentials if we have them.
    fn fetch_token(&self, c: &Challenge) -> Result<String> {
        let realm = c.params.get("realm").ok_or_else(|| Error::Registry {
            registry: self.registry.clone(),
            why: "Bearer challenge without realm".into(),
        })?;
        let mut url = format!("{realm}?scope={}", self.scope);
        if let Some(s) = c.params.get("service") {
            url.push_str(&format!("&service={s}"));
        }
        let mut req = self.agent.get(&url);
        if let Some(cr) = &self.credentials {
            req = req.header("Authorization", cr.basic_header());
        }
        let res = req.call().map_err(|e| self.transport_error(e))?;
        if !res.status().is_success() {
            return Err(self.unauthorized("a token", res.status().as_u16()));
        }
        let body = self.read_body(res, 1 << 20)?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| Error::Registry {
            registry: self.registry.clone(),
            why: format!("token response: {e}"),
        })?;
        let tok = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| Error::Registry {
                registry: self.registry.clone(),
                why: "token response without token".into(),
            })?;
        Ok(format!("Bearer {tok}"))
    }

    /// Fetches a manifest or index by tag or digest: (bytes, media type, digest of the bytes).
    pub fn get_manifest(&self, reference: &str) -> Result<(Vec<u8>, String, Digest)> {
        let what = format!("manifest {}:{reference}", self.repository);
        let res = self.send(
            Method::GET,
            &self.url(&format!("manifests/{reference}")),
            &[("Accept", ACCEPT_MANIFESTS)],
            Payload::Empty,
            &what,
        )?;
        let media = res
            .headers()
            .get("content-type")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = self.read_body(res, 4 << 20)?;
        let digest = Digest::of_bytes(&bytes);
        if let Ok(want) = Digest::parse(reference) {
            if want != digest {
                return Err(Error::DigestMismatch {
                    what,
                    expected: want.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        Ok((bytes, media, digest))
    }

    /// Streams blob `digest` into `out`; returns its digest and size as received (the caller
    /// verifies). More than `limit` bytes (the size the manifest gave) is an error, so a
    /// misbehaving registry cannot fill the disk.
    pub fn get_blob(
        &self,
        digest: &Digest,
        limit: Option<u64>,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(Digest, u64)> {
        let what = format!("blob {digest}");
        let res = self.send(
            Method::GET,
            &self.url(&format!("blobs/{digest}")),
            &[],
            Payload::Empty,
            &what,
        )?;
        let mut reader = res.into_body().into_reader();
        let mut w = HashWriter::new(out);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = std::io::Read::read(&mut reader, &mut buf).map_err(|e| Error::Unreachable {
                registry: self.registry.clone(),
                why: format!("reading {what}: {e}"),
            })?;
            let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                break;
            };
            w.write_all(chunk).map_err(io(format!("writing {what}")))?;
            if limit.is_some_and(|l| w.count() > l) {
                return Err(Error::Registry {
                    registry: self.registry.clone(),
                    why: format!(
                        "{what} is larger than the {} bytes its manifest gives",
                        limit.unwrap_or(0)
                    ),
                });
            }
            progress(n as u64);
        }
        let (_, d, n) = w.finish();
        Ok((d, n))
    }

    pub fn blob_exists(&self, digest: &Digest) -> Result<bool> {
        let what = format!("blob {digest}");
        match self.send(
            Method::HEAD,
            &self.url(&format!("blobs/{digest}")),
            &[],
            Payload::Empty,
            &what,
        ) {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uploads the file at `path` as blob `digest` (POST for a session, then one monolithic PUT).
    pub fn put_blob(&self, digest: &Digest, path: &Path) -> Result<()> {
        let what = format!("upload of blob {digest}");
        let res = self.send(
            Method::POST,
            &self.url("blobs/uploads/"),
            &[("Content-Length", "0")],
            Payload::Empty,
            &what,
        )?;
        let loc = res
            .headers()
            .get("location")
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| Error::Registry {
                registry: self.registry.clone(),
                why: format!("{what}: no Location in the upload answer"),
            })?;
        // The Location may be relative to the registry and may already carry a query.
        let mut url = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc.to_string()
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        self.send(
            Method::PUT,
            &url,
            &[("Content-Type", "application/octet-stream")],
            Payload::File(path),
            &what,
        )?;
        Ok(())
    }

    pub fn put_manifest(&self, tag: &str, media_type: &str, bytes: &[u8]) -> Result<()> {
        self.send(
            Method::PUT,
            &self.url(&format!("manifests/{tag}")),
            &[("Content-Type", media_type)],
            Payload::Bytes(bytes),
            &format!("manifest {}:{tag}", self.repository),
        )?;
        Ok(())
    }
}
