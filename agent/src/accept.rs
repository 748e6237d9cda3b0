//! Connections that never send a request are closed: hyper's HTTP/1 header read timeout (which
//! needs a timer, which [`configure`] gives it) covers a request whose header never completes and
//! an idle keep-alive connection; the version sniffing before it (HTTP/1 or an HTTP/2 preface)
//! has no timeout, so [`RequestStarted`] waits for the first bytes with one, before TLS or HTTP
//! see the connection. TLS handshakes have axum-server's own 10 s timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use axum_server::accept::Accept;
use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpStream;

/// How long a client has to send a complete request header; also how long a keep-alive
/// connection may idle between requests, so it outlasts the common 15 s scrape interval and
/// Prometheus keeps reusing its connection (no TLS handshake per scrape).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(20);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Sets the header read timeout and HTTP/2 keep-alive pings on the connection builder
/// ([`crate::conns`]).
pub fn configure<E>(b: &mut Builder<E>) {
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(HEADER_TIMEOUT))
        .keep_alive_timeout(HEADER_TIMEOUT);
}

/// Hands a connection on once its first bytes show which protocol it speaks; drops it (closing
/// the socket) when they do not arrive within [`HEADER_TIMEOUT`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestStarted;

impl<S: Send + 'static> Accept<TcpStream, S> for RequestStarted {
    type Stream = TcpStream;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(TcpStream, S)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        Box::pin(async move {
            match tokio::time::timeout(HEADER_TIMEOUT, first_bytes(&stream)).await {
                Ok(Ok(())) => Ok((stream, service)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the header timeout",
                )),
            }
        })
    }
}

/// Resolves once the peer has sent something that is not a strict prefix of the HTTP/2 preface
/// (HTTP/1, TLS, the whole preface) or has closed its side. Peeking leaves the bytes in place.
async fn first_bytes(s: &TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 24];
    loop {
        let n = s.peek(&mut buf).await?;
        let seen = buf.get(..n).unwrap_or(&[]);
        if n == 0 || n >= H2_PREFACE.len() || !H2_PREFACE.starts_with(seen) {
            return Ok(());
        }
        // Part of a preface: peek returns at once while those bytes sit unread, so poll.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
