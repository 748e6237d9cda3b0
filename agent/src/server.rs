//! The HTTP side: `/metrics`, `/healthz`, `/`; TLS and basic auth from `--web-config`;
//! graceful shutdown on SIGTERM/SIGINT. Collection runs on the blocking pool; scrapes that
//! arrive while one is being collected share the next result instead of queueing collections.
//!
//! A scrape that carries Prometheus's `X-Prometheus-Scrape-Timeout-Seconds` is answered before
//! that deadline: if the body is not ready by then, the collection stops at its next cgroup and
//! the answer is a 503 naming the timeout. Not a partial body: a scrape missing some containers
//! would end their series (staleness markers, broken `rate()`) as if they had stopped, and not
//! an older body, whose gauges would be stored with the new scrape's timestamp. A failed scrape
//! shows as `up == 0` with the reason on Prometheus's targets page.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::accept::RequestStarted;
use crate::auth::{BasicAuth, Verdict};
use crate::collect::{Collector, DeadlinePassed};
use crate::conns;
use crate::exposition::{self, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::webconfig::WebConfig;
use crate::{Error, Producer};

/// How the agent is run.
pub struct Config {
    pub listen: SocketAddr,
    pub web_config: Option<PathBuf>,
    pub all_cgroups: bool,
    pub state_dir: PathBuf,
    /// Extra exposition producers appended to every /metrics body (the fs daemon's metrics).
    pub extra: Vec<Producer>,
    /// A socket already bound to `listen` (handed down by `cgsight daemon`'s holder, so every
    /// server it starts keeps the address, an upgrade included); None: bind `listen`.
    pub listener: Option<std::net::TcpListener>,
}

struct Shared {
    collector: Mutex<Collector>,
    /// The last body and when its collection started.
    last: Mutex<Option<(Instant, Arc<String>)>>,
    extra: Vec<Producer>,
    auth: Option<BasicAuth>,
}

impl Shared {
    /// A body at least as fresh as `asked` (the request's arrival time), unless `deadline`
    /// passes first.
    fn body(
        &self,
        asked: Instant,
        deadline: Option<Instant>,
    ) -> Result<Arc<String>, DeadlinePassed> {
        let mut c = match self.collector.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if let Ok(last) = self.last.lock() {
            if let Some((started, body)) = last.as_ref() {
                if *started >= asked {
                    return Ok(body.clone());
                }
            }
        }
        // Waiting for the lock may have used up the time.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(DeadlinePassed);
        }
        let started = Instant::now();
        let cap = self
            .last
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|(_, b)| b.len() + b.len() / 8))
            .unwrap_or(64 * 1024);
        let mut out = String::with_capacity(cap);
        c.scrape_until(&mut out, deadline)?;
        for p in &self.extra {
            p(&mut out);
        }
        let body = Arc::new(out);
        if let Ok(mut last) = self.last.lock() {
            *last = Some((started, body.clone()));
        }
        Ok(body)
    }
}

/// Builds the router (exposed for the daemon and for tests of the HTTP layer).
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(index))
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .with_state(shared)
}

async fn auth(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Some(a) = &s.auth {
        let h = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match a.check(h).await {
            Verdict::Allowed => {}
            Verdict::Denied => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Basic realm=\"cgsight\"")],
                    "Unauthorized\n",
                )
                    .into_response()
            }
            Verdict::Busy => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    "Too many password checks in progress; retry shortly.\n",
                )
                    .into_response()
            }
        }
    }
    next.run(req).await
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><html><head><title>cgsight agent</title></head><body>\
         <h1>cgsight agent</h1><p>cAdvisor-compatible container metrics.</p>\
         <ul><li><a href=\"/metrics\">/metrics</a></li><li><a href=\"/healthz\">/healthz</a></li></ul>\
         </body></html>\n",
    )
}

/// A finished body as the bytes of a response.
struct SharedBody(Arc<String>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let asked = Instant::now();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let om = exposition::wants_openmetrics(accept);
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let timeout = scrape_timeout(&headers);
    // A tenth of the timeout is left for compressing and sending.
    let deadline = timeout.map(|t| asked + t.mul_f64(0.9));
    let work = tokio::task::spawn_blocking(move || {
        let Ok(body) = s.body(asked, deadline) else {
            return Ok(None);
        };
        let text: Bytes = if om {
            exposition::to_openmetrics(&body).into()
        } else {
            // The body shared with concurrent scrapes, sent without a copy.
            Bytes::from_owner(SharedBody(body))
        };
        if gzip {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(text.len() / 6),
                flate2::Compression::fast(),
            );
            e.write_all(&text)
                .and_then(|_| e.finish())
                .map(|b| Some((Bytes::from(b), true)))
        } else {
            Ok(Some((text, false)))
        }
    });
    let r = match deadline {
        Some(d) => tokio::time::timeout_at(d.into(), work).await,
        None => Ok(work.await),
    };
    let late = || {
        let t = timeout.map_or(0.0, |t| t.as_secs_f64());
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("collection did not finish within the scrape timeout ({t} s)\n"),
        )
            .into_response()
    };
    match r {
        Err(_) | Ok(Ok(Ok(None))) => late(),
        Ok(Ok(Ok(Some((bytes, gz))))) => {
            let mut resp = Response::new(Body::from(bytes));
            let ct = if om {
                OPENMETRICS_CONTENT_TYPE
            } else {
                TEXT_CONTENT_TYPE
            };
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            if gz {
                resp.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            resp
        }
        Ok(Ok(Err(e))) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("compressing: {e}\n"),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("collector failed: {e}\n"),
        )
            .into_response(),
    }
}

/// Prometheus's scrape timeout, when the header holds a usable number of seconds.
fn scrape_timeout(h: &HeaderMap) -> Option<Duration> {
    let v: f64 = h
        .get("x-prometheus-scrape-timeout-seconds")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (v > 0.0).then(|| Duration::try_from_secs_f64(v).ok())?
}

fn accepts_gzip(v: &str) -> bool {
    v.split(',').any(|p| {
        let mut it = p.split(';').map(str::trim);
        let enc = it.next().unwrap_or("");
        let q0 = it.any(|x| x == "q=0" || x == "q=0.0" || x == "q=0.000");
        enc.eq_ignore_ascii_case("gzip") && !q0
    })
}

/// How long the open connections have to end after shutdown begins.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves until `shutdown` resolves, then lets open connections end for up to [`DRAIN`].
pub async fn serve(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let h = cgsight_cgroup::Hierarchies::detect().map_err(Error::Cgroup)?;
    let wc = match &cfg.web_config {
        Some(p) => Some((WebConfig::load(p)?, p.clone())),
        None => None,
    };
    let tls = match &wc {
        Some((w, p)) => w.rustls(p)?,
        None => None,
    };
    let auth = wc.and_then(|(w, _)| BasicAuth::new(w.basic_auth_users));
    let shared = Arc::new(Shared {
        collector: Mutex::new(Collector::new(h, cfg.all_cgroups, cfg.state_dir.clone())),
        last: Mutex::new(None),
        extra: cfg.extra,
        auth,
    });
    let app = router(shared);
    let listener = match cfg.listener {
        Some(l) => l,
        None => std::net::TcpListener::bind(cfg.listen).map_err(|source| Error::Bind {
            addr: cfg.listen,
            source,
        })?,
    };
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Bind {
            addr: cfg.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(cfg.listen);
    // Poll the shutdown future once before announcing the address: `termination` installs its
    // signal handlers on first poll, and a SIGTERM sent as soon as the log line appears must
    // shut down gracefully, not kill the process.
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        biased;
        _ = &mut shutdown => return Ok(()),
        _ = std::future::ready(()) => {}
    }
    tracing::info!(
        "cgsight agent listening on {}://{local}/metrics",
        if tls.is_some() { "https" } else { "http" }
    );
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|source| Error::Bind {
        addr: local,
        source,
    })?;
    match tls {
        Some(t) => {
            let rc = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(t));
            let tls = axum_server::tls_rustls::RustlsAcceptor::new(rc).acceptor(RequestStarted);
            conns::serve(listener, tls, app, shutdown, DRAIN).await;
        }
        None => conns::serve(listener, RequestStarted, app, shutdown, DRAIN).await,
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
