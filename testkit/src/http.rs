//! A minimal HTTP/1.1 GET over loopback, enough to talk to the servers tests start.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Status, lower-cased headers, and the body (de-chunked).
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET `path` from 127.0.0.1:`port` with `headers`; panics on any failure.
pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    try_get(port, path, headers).unwrap_or_else(|e| panic!("GET :{port}{path}: {e}"))
}

/// GET `path` from 127.0.0.1:`port` with `headers` (the connection is closed after it).
pub fn try_get(port: u16, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn parse(raw: &[u8]) -> io::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let (head, rest) = raw.split_at(split);
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = rest.get(4..).unwrap_or_default();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let (size, rest) = b.split_at(eol);
        let n = usize::from_str_radix(String::from_utf8_lossy(size).trim(), 16)
            .map_err(|_| bad("bad chunk size"))?;
        if n == 0 {
            break;
        }
        let chunk = rest.get(2..2 + n).ok_or_else(|| bad("truncated chunk"))?;
        out.extend_from_slice(chunk);
        b = rest.get(2 + n + 2..).unwrap_or_default();
    }
    Ok(out)
}

/// Percent-encodes everything but ASCII letters and digits (for query strings).
pub fn urlencode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn chunked_and_plain_bodies() {
        let r = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .expect("parses");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
        let r = parse(b"HTTP/1.0 401 No\r\nX-A: b\r\n\r\nbody").expect("parses");
        assert_eq!((r.status, r.text().as_str()), (401, "body"));
        assert_eq!(r.headers["x-a"], "b");
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab").is_err());
        assert!(parse(b"garbage").is_err());
    }
}
