//! Debian's docker-registry (distribution v2) on 127.0.0.1 and a free port, for tests that
//! pull and push: nothing leaves the loopback interface.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{wait_for, ChildGuard, TempDir};

/// Debian's docker-registry (distribution v2) on 127.0.0.1 and a free port, killed on drop.
pub struct Registry {
    pub addr: String,
    /// The registry's storage root (`docker/registry/v2/blobs/sha256/<2>/<hex>/data` under it).
    pub data: PathBuf,
    _child: ChildGuard,
    _dir: TempDir,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start() -> Registry {
        let dir = TempDir::new_in(Path::new("/var/tmp"), "img-registry");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.path().join("config.yml");
        let conf = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        fs::write(&cfg, conf).unwrap();
        let log = fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (scripts/install-deps.sh)");
        let child = ChildGuard::new(child);
        wait_for("the registry to listen", Duration::from_secs(30), || {
            TcpStream::connect(&addr).ok()
        });
        Registry {
            addr,
            data: dir.path().join("data"),
            _child: child,
            _dir: dir,
        }
    }
}
