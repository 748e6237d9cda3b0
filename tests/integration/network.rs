//! Bridge networking, end to end. Every test runs the launcher inside a network namespace it
//! makes (the "lab", with its own loopback and an external address), beside a second one
//! playing the outside world, linked by a veth pair; so the bridge, the NAT rules and all the
//! traffic stay in the two, and both vanish on drop. Each lab has its own state directory, so
//! its leases are its own.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cgsight_testkit::{require_root, unique_name, wait_for, TempDir};

use crate::agent::{start_agent, value};
use crate::support::{join_netns, stderr, stdout, BIN};

/// How a command ended and what it said: the exit status too, since a process killed by a
/// signal says nothing.
fn why(o: &Output) -> String {
    use std::os::unix::process::ExitStatusExt;
    let mut s = format!("{}: {}", o.status, stderr(o));
    if o.status.signal().is_some() {
        // Who sent it, if it was the kernel (the OOM killer says so in its log).
        let log = Command::new("dmesg")
            .output()
            .map(|d| stdout(&d))
            .unwrap_or_default();
        let last: Vec<&str> = log.lines().rev().take(8).collect();
        s += &format!(
            "\nkernel log, last lines:\n{}",
            last.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    s
}

/// The lab's address on the link to the outside (TEST-NET-1, never routed anywhere).
const LAB_IP: &str = "192.0.2.1";
const OUTSIDE_IP: &str = "192.0.2.2";

struct Lab {
    ns: String,
    outside: String,
    ns_file: File,
    dir: TempDir,
    /// `CGSIGHT_NETWORK_CONFIG`, when a test wants one.
    config: Option<std::path::PathBuf>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let ns = unique_name(tag);
        let outside = format!("{ns}-out");
        ip(&["netns", "add", &ns]);
        // From here on, drop removes whatever was made.
        let lab = Lab {
            ns_file: File::open(format!("/run/netns/{ns}")).expect("open the lab netns"),
            ns,
            outside,
            dir: TempDir::new_in(std::path::Path::new("/var/tmp"), "net"),
            config: None,
        };
        ip(&["netns", "add", &lab.outside]);
        for n in [&lab.ns, &lab.outside] {
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n",
            &lab.ns,
            "link",
            "add",
            "ext0",
            "type",
            "veth",
            "peer",
            "name",
            "ext0",
            "netns",
            &lab.outside,
        ]);
        for (n, a) in [(&lab.ns, LAB_IP), (&lab.outside, OUTSIDE_IP)] {
            ip(&["-n", n, "addr", "add", &format!("{a}/24"), "dev", "ext0"]);
            ip(&["-n", n, "link", "set", "ext0", "up"]);
        }
        lab
    }

    /// `cgsight ARGS` inside the lab, with the lab's own state.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("CGSIGHT_STATE_DIR", self.dir.path().join("state"))
            .env("CGSIGHT_ROOT_DIR", self.dir.path().join("root"));
        if let Some(cfg) = &self.config {
            c.env("CGSIGHT_NETWORK_CONFIG", cfg);
        }
        // The lab keeps the descriptor open for its life.
        join_netns(&mut c, self.ns_file.as_raw_fd());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running cgsight")
    }

    /// `launch -d --no-proc-views --name NAME FLAGS -- CMD`, asserted to start.
    fn start(&self, name: &str, flags: &[&str], cmd: &[&str]) -> String {
        let mut a = vec!["launch", "-d", "--no-proc-views", "--name", name];
        a.extend_from_slice(flags);
        a.push("--");
        a.extend_from_slice(cmd);
        let o = self.run(&a);
        assert!(o.status.success(), "launch {name}: {}", why(&o));
        stdout(&o).trim().to_owned()
    }

    fn inspect(&self, name: &str) -> serde_json::Value {
        let o = self.run(&["inspect", name]);
        assert!(o.status.success(), "inspect {name}: {}", why(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("inspect JSON");
        v.get(0).cloned().unwrap_or(v)
    }

    fn ip_of(&self, name: &str) -> String {
        let v = self.inspect(name);
        v["network"]["ip"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no address: {v}"))
            .to_owned()
    }

    /// `PROG ARGS` in the lab (`outside`: in the outside namespace).
    fn exec_in(&self, outside: bool, prog: &str, args: &[&str]) -> Command {
        let ns = if outside { &self.outside } else { &self.ns };
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}")).arg(prog).args(args);
        c
    }

    fn leases(&self) -> usize {
        let p = self.dir.path().join("state/.network/state.json");
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["leases"].as_array().map_or(0, Vec::len)
    }

    fn links(&self) -> Vec<String> {
        let o = self
            .exec_in(false, "ip", &["-br", "link"])
            .output()
            .expect("ip");
        let mut v: Vec<String> = stdout(&o)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect();
        v.sort();
        v
    }

    fn ruleset(&self) -> String {
        let o = self
            .exec_in(false, "nft", &["list", "ruleset"])
            .output()
            .expect("nft");
        stdout(&o)
    }

    /// Everything a finished test must find: no lease, no veth but the bridge, `ruleset` as given.
    fn assert_clean(&self, ruleset: &str) {
        assert_eq!(self.leases(), 0, "no address lease left");
        // An exiting container's veth pair is deleted by the kernel with its network namespace,
        // after the launcher returns: wait for it (the bound is a safety stop).
        let want = ["cgsight0", "ext0", "lo"];
        wait_for("no veth left", Duration::from_secs(60), || {
            (self.links() == want).then_some(())
        });
        assert_eq!(self.ruleset(), ruleset, "no NAT rule left");
    }

    /// A first container makes the bridge and the base NAT table: the state later checks compare
    /// against.
    fn baseline(&self) -> String {
        let o = self.run(&["launch", "--rm", "--no-proc-views", "--", "true"]);
        assert!(o.status.success(), "first launch: {}", why(&o));
        self.ruleset()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Ok(o) = self.cmd(&["ps", "-a", "-q"]).output() {
            for id in stdout(&o).split_whitespace() {
                let _ = self.cmd(&["rm", "-f", id]).output();
            }
        }
        for n in [&self.ns, &self.outside] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// HTTP GET from the lab's own namespace: (status, body).
fn fetch(lab: &Lab, url: &str) -> Option<(String, String)> {
    let o = lab
        .exec_in(
            false,
            "curl",
            &["-s", "-m", "5", "-w", "\n%{http_code}", url],
        )
        .output()
        .ok()?;
    let text = stdout(&o);
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.to_owned(), body.to_owned()))
}

const SERVE: &str = "mkdir -p /srv && echo hello-from-a > /srv/index.html && cd /srv && \
                     exec python3 -m http.server 80";

#[test]
fn containers_reach_each_other_and_published_ports_reach_them() {
    require_root!();
    let lab = Lab::new("net-serve");
    lab.start(
        "a",
        &["-p", "8080:80", "-p", "127.0.0.1:8081:80"],
        &["sh", "-c", SERVE],
    );
    let a = lab.ip_of("a");
    let url = format!("http://{a}/");
    wait_for("a serving on its address", Duration::from_secs(60), || {
        fetch(&lab, &url).filter(|(c, _)| c == "200")
    });
    // Another container, by address.
    let o = lab.run(&[
        "launch",
        "--rm",
        "--no-proc-views",
        "--",
        "curl",
        "-s",
        "-m",
        "10",
        &url,
    ]);
    assert_eq!(
        stdout(&o).trim(),
        "hello-from-a",
        "b fetched a: {}",
        stderr(&o)
    );
    // The lab's loopback, its external address, and from the outside world.
    for u in [
        "http://127.0.0.1:8080/",
        "http://127.0.0.1:8081/",
        &format!("http://{LAB_IP}:8080/"),
    ] {
        let got = fetch(&lab, u);
        assert_eq!(
            got.map(|(c, b)| (c, b.trim().to_owned())),
            Some(("200".into(), "hello-from-a".into())),
            "{u}"
        );
    }
    let o = lab
        .exec_in(
            true,
            "curl",
            &["-s", "-m", "5", &format!("http://{LAB_IP}:8080/")],
        )
        .output()
        .expect("curl");
    assert_eq!(stdout(&o).trim(), "hello-from-a", "from outside");
    // 127.0.0.1:8081 is published on loopback only: not on the external address.
    let o = lab
        .exec_in(
            true,
            "curl",
            &["-s", "-m", "3", &format!("http://{LAB_IP}:8081/")],
        )
        .output()
        .expect("curl");
    assert!(!o.status.success(), "8081 is bound to 127.0.0.1 only");
    // ps and inspect show the address and the ports.
    let ps = stdout(&lab.run(&["ps"]));
    assert!(
        ps.contains("0.0.0.0:8080->80/tcp") && ps.contains(&a),
        "{ps}"
    );
    let v = lab.inspect("a");
    assert_eq!(v["NetworkSettings"]["IPAddress"], a.as_str(), "{v}");
}

#[test]
fn outbound_connections_leave_from_the_nat_address() {
    require_root!();
    let lab = Lab::new("net-nat");
    // The outside world accepts one connection and says who it came from.
    let script = "import socket\ns=socket.socket()\ns.bind(('0.0.0.0',9100))\ns.listen()\n\
                  print('listening',flush=True)\nc,a=s.accept()\nprint(a[0],flush=True)";
    let mut server = lab
        .exec_in(true, "python3", &["-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("outside server");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("listening")
    );
    let connect = format!(
        "import socket; socket.create_connection(('{OUTSIDE_IP}', 9100), timeout=10).close()"
    );
    let o = lab.run(&[
        "launch",
        "--rm",
        "--no-proc-views",
        "--",
        "python3",
        "-c",
        &connect,
    ]);
    assert!(o.status.success(), "connect out: {}", why(&o));
    let peer = lines.next().and_then(Result::ok);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(
        peer.as_deref(),
        Some(LAB_IP),
        "masqueraded to the lab's address"
    );
}

#[test]
fn parallel_launches_get_distinct_addresses_and_rm_frees_everything() {
    require_root!();
    let lab = Lab::new("net-par");
    let base = lab.baseline();
    let names: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    std::thread::scope(|s| {
        for n in &names {
            let lab = &lab;
            s.spawn(move || {
                lab.start(
                    n,
                    &[
                        "-p",
                        &format!("{}:80", 9000 + n[1..].parse::<u16>().unwrap_or(0)),
                    ],
                    &["sleep", "300"],
                )
            });
        }
    });
    let mut ips: Vec<String> = names.iter().map(|n| lab.ip_of(n)).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 20, "20 distinct addresses: {ips:?}");
    assert_eq!(lab.leases(), 20);
    std::thread::scope(|s| {
        for n in &names {
            let lab = &lab;
            s.spawn(move || {
                let o = lab.run(&["rm", "-f", n]);
                assert!(o.status.success(), "rm {n}: {}", why(&o));
            });
        }
    });
    lab.assert_clean(&base);
}

/// The supervisor's own cleanup, with no `rm`: its pid namespace is dead by then, and the `nft`
/// that removes the rules must still start (it failed with ENOMEM, leaving the port taken).
#[test]
fn a_container_that_exits_gives_its_address_and_ports_back() {
    require_root!();
    let lab = Lab::new("net-exit");
    let base = lab.baseline();
    for _ in 0..2 {
        let o = lab.run(&[
            "launch",
            "--rm",
            "--no-proc-views",
            "-p",
            "8085:80",
            "--",
            "true",
        ]);
        assert!(o.status.success(), "{}", why(&o));
        assert!(!stderr(&o).contains("WARN"), "{}", stderr(&o));
    }
    let name = "kept";
    let o = lab.run(&[
        "launch",
        "--no-proc-views",
        "--name",
        name,
        "-p",
        "8085:80",
        "--",
        "true",
    ]);
    assert!(o.status.success(), "{}", why(&o));
    assert_eq!(
        lab.inspect(name)["status"],
        "exited",
        "a stopped container gives its address back too, as docker's do"
    );
    lab.assert_clean(&base);
    let o = lab.run(&["rm", name]);
    assert!(o.status.success(), "{}", why(&o));
}

#[test]
fn rm_after_a_killed_supervisor_frees_the_address_veth_and_rules() {
    require_root!();
    let lab = Lab::new("net-crash");
    let base = lab.baseline();
    lab.start("c", &["-p", "8090:80"], &["sleep", "300"]);
    let v = lab.inspect("c");
    let sup = v["supervisor_pid"].as_i64().expect("supervisor pid") as i32;
    let pid = v["pid"].as_i64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the supervisor");
    // The container dies with it (parent-death signal); its lease and rules stay until rm.
    wait_for("the container gone", Duration::from_secs(30), || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    assert_eq!(lab.leases(), 1, "the lease outlives a killed supervisor");
    let o = lab.run(&["rm", "c"]);
    assert!(o.status.success(), "rm: {}", why(&o));
    lab.assert_clean(&base);
}

#[test]
fn none_has_only_loopback_and_container_mode_shares_the_network() {
    require_root!();
    let lab = Lab::new("net-modes");
    let o = lab.run(&[
        "launch",
        "--rm",
        "--no-proc-views",
        "--net",
        "none",
        "--",
        "ip",
        "-br",
        "link",
    ]);
    let text = stdout(&o);
    let links: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(links, ["lo"], "{}", stderr(&o));
    lab.start("a", &[], &["sleep", "300"]);
    let a = lab.ip_of("a");
    let o = lab.run(&[
        "launch",
        "--rm",
        "--no-proc-views",
        "--net",
        "container:a",
        "--",
        "ip",
        "-br",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(
        stdout(&o).contains(&format!("{a}/")),
        "shares a's eth0: {}{}",
        stdout(&o),
        stderr(&o)
    );
    // A container it depends on that is not running is a clear error.
    let o = lab.run(&[
        "launch",
        "--rm",
        "--no-proc-views",
        "--net",
        "container:nosuch",
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn the_agent_counts_the_bytes_through_eth0() {
    require_root!();
    let lab = Lab::new("net-bytes");
    // Receives 10 MiB, sends 10 MiB back, and stays (the agent reads a live member's eth0).
    let script = "import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',9200))\ns.listen()\n\
                  c,_=s.accept()\nn=0\nwhile n < 10<<20:\n  d=c.recv(1<<16)\n  n+=len(d)\n  \
                  if not d: break\nc.sendall(b'x'*(10<<20))\nc.close()\ntime.sleep(600)";
    let id = lab.start("a", &[], &["python3", "-c", script]);
    let a = lab.ip_of("a");
    let client = format!(
        "import socket,time\nfor i in range(300):\n  try:\n    c=socket.create_connection(('{a}',9200),timeout=30); break\n  \
         except OSError: time.sleep(0.1)\nc.sendall(b'y'*(10<<20))\nn=0\nwhile True:\n  d=c.recv(1<<16)\n  \
         if not d: break\n  n+=len(d)\nprint(n)"
    );
    let o = lab
        .exec_in(false, "python3", &["-c", &client])
        .output()
        .expect("client");
    assert_eq!(
        stdout(&o).trim(),
        (10u64 << 20).to_string(),
        "{}",
        stderr(&o)
    );
    let agent = start_agent(&[]);
    let text = crate::agent::scrape(agent.port);
    let cg = format!("/cgsight/{id}");
    for fam in [
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
    ] {
        let v = value(&text, fam, &cg).unwrap_or(0.0);
        assert!(v >= (10u64 << 20) as f64, "{fam} {v} for {cg}");
    }
}

#[test]
fn bad_network_input_is_refused_and_leaves_nothing() {
    require_root!();
    let mut lab = Lab::new("net-bad");
    let base = lab.baseline();
    lab.start("a", &["-p", "8080:80"], &["sleep", "300"]);
    let cases: [&[&str]; 4] = [
        &["-p", "70000:80"],
        &["-p", "8080:80"],
        &["--net", "bogus"],
        &["--net", "none", "-p", "8081:80"],
    ];
    for flags in cases {
        let mut a = vec!["launch", "--rm", "--no-proc-views", "--name", "b"];
        a.extend_from_slice(flags);
        a.extend_from_slice(&["--", "true"]);
        let o = lab.run(&a);
        assert_eq!(o.status.code(), Some(125), "{flags:?}: {}", stderr(&o));
        assert_eq!(
            stderr(&o).trim().lines().count(),
            1,
            "{flags:?}: {}",
            stderr(&o)
        );
        let ps = stdout(&lab.run(&["ps", "-a", "-q"]));
        assert_eq!(
            ps.split_whitespace().count(),
            1,
            "{flags:?}: only a is left"
        );
    }
    assert_eq!(lab.leases(), 1, "a's lease only");
    let o = lab.run(&["rm", "-f", "a"]);
    assert!(o.status.success(), "{}", why(&o));
    lab.assert_clean(&base);
    // A configured subnet that overlaps the lab's own: refused before a bridge exists.
    let fresh = Lab::new("net-overlap");
    let cfg = fresh.dir.path().join("network.json");
    std::fs::write(&cfg, r#"{"bridge": "cgsight1", "subnet": "192.0.2.0/24"}"#).expect("config");
    lab = fresh;
    lab.config = Some(cfg);
    let o = lab.run(&["launch", "--rm", "--no-proc-views", "--", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("192.0.2.0/24") && stderr(&o).trim().lines().count() == 1,
        "{}",
        stderr(&o)
    );
    assert_eq!(lab.links(), ["ext0", "lo"], "no bridge left");
    assert_eq!(lab.leases(), 0);
    assert_eq!(stdout(&lab.run(&["ps", "-a", "-q"])).trim(), "");
}

/// Sends forged UDP datagrams for 127.0.0.1:9300 out of eth0 to the gateway's MAC (argv[1] is
/// the gateway): what a container with CAP_NET_RAW (docker's default set) can do.
const FORGE: &str = r#"import socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack('!10H', b))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect((sys.argv[1], 9))
src = socket.inet_aton(u.getsockname()[0])
gw = None
for _ in range(50):
    u.send(b'arp')  # makes the kernel resolve the gateway
    for line in open('/proc/net/arp').read().splitlines()[1:]:
        f = line.split()
        if f[0] == sys.argv[1] and f[3] != '00:00:00:00:00:00':
            gw = bytes.fromhex(f[3].replace(':', ''))
    if gw:
        break
    time.sleep(0.1)
me = bytes.fromhex(open('/sys/class/net/eth0/address').read().strip().replace(':', ''))
data = b'forged'
udp = struct.pack('!HHHH', 40000, 9300, 8 + len(data), 0) + data
hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src, socket.inet_aton('127.0.0.1'))
hdr = hdr[:10] + struct.pack('!H', csum(hdr)) + hdr[12:]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('eth0', 0))
for _ in range(3):
    s.send(gw + me + b'\x08\x00' + hdr + udp)
"#;

/// Whether a forged datagram from a default container reaches a service the lab binds to its
/// loopback only.
fn forged_datagram_arrives(lab: &Lab) -> bool {
    // Prints each datagram until "end", which the test sends itself once the forger has exited:
    // no clock decides (a slow emulated launch outlasted a receive timeout).
    let listen = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                  s.bind(('127.0.0.1',9300))\ns.settimeout(600)\nprint('ready',flush=True)\n\
                  while True:\n  d=s.recv(100).decode()\n  print(d,flush=True)\n  \
                  if d=='end': break";
    let mut server = lab
        .exec_in(false, "python3", &["-c", listen])
        .stdout(Stdio::piped())
        .spawn()
        .expect("loopback service");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    let gw = lab.inspect_gateway();
    let o = lab.run(&[
        "launch",
        "--rm",
        "--no-proc-views",
        "--",
        "python3",
        "-c",
        FORGE,
        &gw,
    ]);
    assert!(o.status.success(), "forging: {}", why(&o));
    let end = lab
        .exec_in(
            false,
            "python3",
            &["-c", "import socket; socket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b'end',('127.0.0.1',9300))"],
        )
        .status()
        .expect("send end");
    assert!(end.success());
    let got: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = server.wait();
    assert_eq!(got.last().map(String::as_str), Some("end"), "{got:?}");
    got.iter().any(|l| l == "forged")
}

impl Lab {
    fn inspect_gateway(&self) -> String {
        let o = self
            .exec_in(false, "ip", &["-j", "-4", "addr", "show", "cgsight0"])
            .output()
            .expect("ip");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ip -j");
        v[0]["addr_info"][0]["local"]
            .as_str()
            .expect("bridge address")
            .to_owned()
    }
}

#[test]
fn a_container_cannot_reach_the_hosts_loopback_services() {
    require_root!();
    let lab = Lab::new("net-lo");
    lab.baseline();
    assert!(
        !forged_datagram_arrives(&lab),
        "the bridge's input rule drops it"
    );
    // The protection off: the same frame reaches the loopback-only service.
    let o = lab
        .exec_in(false, "nft", &["flush", "chain", "ip", "cgsight0", "input"])
        .output()
        .expect("nft");
    assert!(o.status.success(), "{}", why(&o));
    assert!(
        forged_datagram_arrives(&lab),
        "without the rule the attack works"
    );
}
