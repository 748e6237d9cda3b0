//! A private Prometheus for a test: its own config and storage in a temp dir, on a port it
//! chose itself; stopped and its storage removed on drop.

use std::process::{Command, Stdio};

use crate::fs::TempDir;
use crate::http::{try_get, urlencode};
use crate::process::{spawn_listening, ChildGuard};

pub struct Prometheus {
    // Declared before the directory: the server stops before its storage is removed.
    child: ChildGuard,
    pub port: u16,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (prometheus.yml text) listening on 127.0.0.1.
    pub fn start(tag: &str, config: &str) -> Prometheus {
        let dir = TempDir::new(tag);
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).expect("write prometheus.yml");
        let (child, port) = spawn_listening(
            Command::new("prometheus")
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("tsdb").display()
                ))
                .arg("--web.listen-address=127.0.0.1:0")
                .stdout(Stdio::null()),
            "Listening on",
        );
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// Panics if the server has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.child().try_wait() {
            panic!("prometheus exited: {st}");
        }
    }

    /// Instant query: the result vector, if the query succeeded and it is non-empty.
    pub fn query(&self, q: &str) -> Option<Vec<serde_json::Value>> {
        let r = try_get(
            self.port,
            &format!("/api/v1/query?query={}", urlencode(q)),
            &[],
        )
        .ok()?;
        if r.status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        let r = v["data"]["result"].as_array()?.clone();
        (!r.is_empty()).then_some(r)
    }
}
