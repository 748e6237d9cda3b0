//! Test network namespaces: every bridge, rule and packet of these tests stays inside them.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;

use nix::sched::{setns, CloneFlags};

/// A named network namespace (`ip netns add cgsight-test-…`), deleted on drop.
pub struct TestNs {
    pub name: String,
    file: File,
}

impl TestNs {
    pub fn new(tag: &str) -> TestNs {
        let name = cgsight_testkit::unique_name(tag);
        run("ip", &["netns", "add", &name]);
        let file = File::open(format!("/run/netns/{name}")).expect("open netns");
        let ns = TestNs { name, file };
        ns.sh("ip link set lo up");
        ns
    }
    pub fn file(&self) -> &File {
        &self.file
    }
    /// Runs `f` on a thread inside this namespace (sockets, netlink, nft children, /proc/sys/net
    /// all see it); a panic in `f` is re-raised here.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let fd = self.file.as_fd();
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(fd, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
    /// `sh -c cmd` inside the namespace; panics on failure, returns stdout.
    pub fn sh(&self, cmd: &str) -> String {
        run("ip", &["netns", "exec", &self.name, "sh", "-c", cmd])
    }
    /// `nft list ruleset` here.
    pub fn ruleset(&self) -> String {
        self.sh("nft list ruleset")
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Connects `host` (inside) and `outside` with a veth: `ext0` 198.18.0.1/24 in `host`, `ext1`
/// 198.18.0.2/24 in `outside` (the benchmarking range, never routed anywhere real).
pub fn link_outside(host: &TestNs, outside: &TestNs) {
    host.sh(&format!(
        "ip link add ext0 type veth peer name ext1 netns {} && ip addr add 198.18.0.1/24 dev ext0 && ip link set ext0 up",
        outside.name
    ));
    outside.sh("ip addr add 198.18.0.2/24 dev ext1 && ip link set ext1 up");
}

pub const HOST_EXT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// Accepts up to `n` connections on `l`, answering each with the peer's address; gives up when
/// none arrives for 20 s (so a failing client panics the test instead of hanging it).
pub fn serve_peer_addrs(l: TcpListener, n: usize) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    for _ in 0..n {
        let mut fds = [PollFd::new(l.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(20_000u16)).unwrap_or(0) == 0 {
            return;
        }
        let (mut s, peer) = l.accept().expect("accept");
        let _ = s.write_all(peer.ip().to_string().as_bytes());
    }
}

/// Connects to `addr` and returns what the server said (its view of our address).
pub fn ask_peer_addr(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}
