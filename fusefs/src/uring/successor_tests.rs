//! Can a successor process serve over io_uring a connection whose io_uring server was killed?
//! (Issue 13: the holder hands its /dev/fuse descriptor to each server; today only over
//! /dev/fuse.) Real kernel, root, `fuse.enable_uring` switched on for the test's length.
//!
//! This test process plays the holder: it mounts, answers INIT accepting io_uring, and keeps
//! the descriptor. Servers are this test binary re-run (`serve_child`) with the descriptor as
//! fd 3: io_uring queues on every CPU plus a /dev/fuse worker, or the /dev/fuse worker only.
//! Readers are `cat` processes, waited on through a pidfd with a bound, so a read that hangs
//! is seen as still blocked, not as a hung test; the connection is aborted at the end, which
//! ends every stuck reader.
//!
//! Server A serves a read over its rings, then takes an OPEN and never answers it (the "in
//! flight" request: a test-only hold in the queue loop), and is killed. A read is started in
//! the gap, then server B starts on the same descriptor. The test reports (and asserts) what
//! B's REGISTER returned and the fate of each read, with and without FUSE_NOTIFY_RESEND, and
//! with B on /dev/fuse only; then a server killed while stopped, and a planned hand-over (B
//! registers while A still serves).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{CpuView, IoUringMode};
use crate::devloop::DevServer;
use crate::metrics::FsMetrics;
use crate::session::{self, InitState};
use crate::tree::Tree;
use crate::{engine, resolve};

const CHILD_MODE: &str = "CGSIGHT_TEST_URING_CHILD";
const CHILD_RESEND: &str = "CGSIGHT_TEST_URING_RESEND";
const CHILD_MINOR: &str = "CGSIGHT_TEST_URING_MINOR";
const SERVING: &str = "cgsight-test-serving";
const CQE: &str = "cgsight-test-cqe";
const HELD: &str = "cgsight-test-held";
const HOLDING: &str = "cgsight-test-holding";
/// How long a read may stay blocked before it counts as hung. Only "still blocked" depends
/// on it (a read that ends is seen at once); generous so a slow machine does not turn a
/// late answer into a hang.
const HANG: Duration = Duration::from_secs(2);
/// A bound for what must happen (a server starting, a read being answered).
const MUST: Duration = Duration::from_secs(20);

/// The server's side: serves fd 3 as told by the environment, reporting each failed ring
/// completion on stdout. A no-op in a normal test run.
#[test]
fn serve_child() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
    let init = InitState {
        kernel_minor: num(CHILD_MINOR).expect("kernel minor"),
    };
    let resend = num(CHILD_RESEND) == Some(1);
    // SAFETY: the parent passed fd 3 for this process to own.
    let fd = unsafe { OwnedFd::from_raw_fd(3) };
    let hier = cgsight_cgroup::Hierarchies::detect().expect("cgroup layout");
    let metrics = Arc::new(FsMetrics::default());
    let engine = Arc::new(engine::Engine::new(
        resolve::Resolver::new(hier),
        CpuView::Quota,
        metrics.clone(),
    ));
    let tree = Arc::new(Tree::new(engine));
    let _rings = (mode == "uring").then(|| {
        let (pending, launcher) = super::prepare(IoUringMode::On)
            .expect("io_uring queues")
            .expect("io_uring on")
            .split();
        // The holder accepted io_uring at INIT already.
        pending.start();
        launcher
            .launch(fd.try_clone().expect("dup"), tree.clone(), metrics)
            .expect("launching the queues")
    });
    let _dev = DevServer::start(fd, init, 1, resend, tree).expect("/dev/fuse worker");
    // "hold" on stdin: the queues keep the OPEN requests they get unanswered (not all: the
    // RELEASE of an earlier read, sent late, must not be the one held).
    std::thread::spawn(|| {
        for l in std::io::stdin().lines().map_while(Result::ok) {
            if l == "hold" {
                super::serve::HOLD.store(crate::abi::OPEN, Ordering::SeqCst);
                println!("{HELD}");
            }
        }
    });
    println!("{SERVING}");
    let (mut failed, mut held) = (0, 0);
    loop {
        tell(
            &super::serve::FAILED,
            &mut failed,
            |(qid, registered, res)| {
                format!("{CQE} queue={qid} registered={registered} result={res}")
            },
        );
        tell(&super::serve::HELD, &mut held, |(qid, opcode, pid)| {
            format!("{HOLDING} queue={qid} opcode={opcode} pid={pid}")
        });
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Prints the records of `log` past the first `told`, one line each.
fn tell<T: Copy>(log: &std::sync::Mutex<Vec<T>>, told: &mut usize, line: impl Fn(T) -> String) {
    let new: Vec<T> = log.lock().unwrap_or_else(|e| e.into_inner())[*told..].to_vec();
    for r in &new {
        println!("{}", line(*r));
    }
    *told += new.len();
}

/// Switches `fuse.enable_uring` on, and back to what it was.
struct EnableUring(String);

impl EnableUring {
    fn on() -> EnableUring {
        let was = std::fs::read_to_string(super::PARAM).expect("enable_uring");
        std::fs::write(super::PARAM, "Y").expect("switching enable_uring on");
        EnableUring(was.trim().to_owned())
    }
}

impl Drop for EnableUring {
    fn drop(&mut self) {
        if self.0 != "Y" {
            let _ = std::fs::write(super::PARAM, &self.0);
        }
    }
}

/// The holder's part: the mount, its descriptor, the servers and readers; on drop kills
/// them, aborts the connection (which ends readers stuck in it) and unmounts.
struct Conn {
    mp: PathBuf,
    fd: Option<OwnedFd>,
    conn: Option<u32>,
    init: InitState,
    servers: Vec<Child>,
    readers: Vec<Child>,
    /// How the readers that ended did (they are reaped).
    ended: std::collections::HashMap<usize, String>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        for c in self.servers.iter_mut().chain(self.readers.iter_mut()) {
            let _ = c.kill();
        }
        if let Some(conn) = self.conn {
            crate::mount::abort_connection(conn);
        }
        let _ = nix::mount::umount2(&self.mp, nix::mount::MntFlags::MNT_DETACH);
        self.fd = None;
        for c in self.servers.iter_mut().chain(self.readers.iter_mut()) {
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir(&self.mp);
    }
}

/// Mounts a fresh connection accepting io_uring; None when the kernel does not offer it.
fn mount() -> Option<Conn> {
    static N: AtomicU32 = AtomicU32::new(0);
    let mp = std::env::temp_dir().join(format!(
        "cgsight-test-uring-succ-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&mp).expect("mount point");
    let fd = session::mount(&mp).expect("mounting");
    // The connection number from mountinfo (a stat would be a FUSE request).
    let conn = cgsight_cgroup::mountinfo::read_self().ok().and_then(|m| {
        cgsight_cgroup::mountinfo::top_mount_at(&m, &mp)
            .and_then(|e| e.dev.split_once(':')?.1.parse().ok())
    });
    let mut c = Conn {
        mp,
        fd: None,
        conn,
        init: InitState { kernel_minor: 0 },
        servers: Vec::new(),
        readers: Vec::new(),
        ended: Default::default(),
    };
    let (init, uring) = session::answer_init_offering(fd.as_fd(), true).expect("INIT");
    c.fd = Some(fd);
    c.init = init;
    uring.then_some(c)
}

/// A started server: its pid, stdin and stdout lines.
struct Server {
    pid: i32,
    stdin: std::process::ChildStdin,
    lines: Receiver<String>,
}

impl Server {
    /// Waits (bounded) for a line ending in `what`; returns it.
    fn expect(&self, what: &str) -> String {
        let end = Instant::now() + MUST;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // The harness may have printed "test NAME ... " on the same line.
                Ok(l) if l.ends_with(what) => return l,
                Ok(_) => continue,
                Err(e) => panic!("server {} did not say {what}: {e}", self.pid),
            }
        }
    }
}

impl Conn {
    /// Starts a server on the held descriptor and waits until it reports serving.
    fn serve(&mut self, mode: &str, resend: bool) -> Server {
        let fd = self.fd.as_ref().expect("descriptor").as_raw_fd();
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([
            "--exact",
            "uring::successor_tests::serve_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MODE, mode)
        .env(CHILD_RESEND, if resend { "1" } else { "0" })
        .env(CHILD_MINOR, self.init.kernel_minor.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
        // SAFETY: only async-signal-safe calls between fork and exec; the descriptor goes
        // to 3 through a number above it (dup2 clears close-on-exec).
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let a = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if a < 0 || libc::dup2(a, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("starting a server");
        let out = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        let pid = child.id() as i32;
        self.servers.push(child);
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let s = Server { pid, stdin, lines };
        s.expect(SERVING);
        s
    }

    /// Starts `cat` of the mount's /proc/uptime, on `cpu` if given (the kernel queues a
    /// request on the ring of the CPU its caller runs on).
    fn read(&mut self, cpu: Option<usize>) -> usize {
        let mut cmd = Command::new("cat");
        cmd.arg(self.mp.join("proc/uptime"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(cpu) = cpu {
            // SAFETY: sched_setaffinity on a stack value is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("cat");
        self.readers.push(child);
        self.readers.len() - 1
    }

    /// How reader `i` ended, waiting at most `bound`: "ok", the error cat printed, or
    /// "blocked" (still waiting for its answer).
    fn outcome(&mut self, i: usize, bound: Duration) -> String {
        if let Some(o) = self.ended.get(&i) {
            return o.clone();
        }
        let o = self.wait_reader(i, bound);
        if o != "blocked" {
            self.ended.insert(i, o.clone());
        }
        o
    }

    fn wait_reader(&mut self, i: usize, bound: Duration) -> String {
        let c = &mut self.readers[i];
        if !exits_within(c.id() as i32, bound) {
            return "blocked".into();
        }
        let status = c.wait().expect("wait");
        if status.success() {
            return "ok".into();
        }
        let mut err = String::new();
        if let Some(mut e) = c.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        // `cat: PATH: Message` → the message.
        err.rsplit(": ")
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

/// Whether process `pid` (our child) exits within `bound`, through a pidfd (no polling).
fn exits_within(pid: i32, bound: Duration) -> bool {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    assert!(raw >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor we own.
    let pfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let end = Instant::now() + bound;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let ms = nix::poll::PollTimeout::try_from(left).unwrap_or(nix::poll::PollTimeout::MAX);
        let mut fds = [nix::poll::PollFd::new(
            pfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, ms) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// Completions the kernel posted on the io_uring instances of `pid` (the CqTail counters
/// of /proc/PID/fdinfo): a request put on a ring entry posts one, answered or not.
fn ring_completions(pid: i32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l == Path::new("anon_inode:[io_uring]"))
        })
        .filter_map(|fd| {
            let p = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
            let info = std::fs::read_to_string(p).ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("CqTail:"))?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// What one successor scenario showed: each read's outcome ("ok", "blocked" or cat's
/// error message), in the order observed.
#[derive(Debug)]
struct Seen {
    /// B's failed ring completions (REGISTER answers included), as reported by B.
    b_failed: Vec<String>,
    /// Completions on B's rings after the reads (0 for a /dev/fuse server).
    b_completions: u64,
    /// (what, outcome, seconds since B served).
    reads: Vec<(&'static str, String, f64)>,
}

/// Two CPUs this process may run on: where the gap read runs, and another one if any.
fn two_cpus() -> (usize, Option<usize>) {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).expect("affinity");
    let mut cpus = (0..nix::sched::CpuSet::count()).filter(|&i| set.is_set(i).unwrap_or(false));
    (cpus.next().expect("a CPU"), cpus.next())
}

/// What a read is expected to end with: "ok", "blocked", or cat's message for ECONNABORTED.
fn expected(b_mode: &str, what: &str) -> String {
    let aborted = std::io::Error::from_raw_os_error(libc::ECONNABORTED).to_string();
    let aborted = aborted
        .split(" (os error")
        .next()
        .unwrap_or_default()
        .to_owned();
    match what {
        // Only an abort of the whole connection ends what the dead server had taken:
        // neither a new REGISTER nor FUSE_NOTIFY_RESEND (which re-queues /dev/fuse
        // requests only) brings it back.
        "in flight, after an abort" => aborted,
        "in flight" | "gap, before B" => "blocked".into(),
        // A request queued on a CPU's ring while nobody had an entry there waits until an
        // entry of that queue commits a reply and fetches the next: a new REGISTER alone
        // does not hand it out, nor does traffic on another CPU.
        "gap, after the other CPU's read" => "blocked".into(),
        // Once io_uring was in use the kernel queues every request on the rings: a server
        // on /dev/fuse alone gets none of them.
        _ if b_mode == "dev" => "blocked".into(),
        _ => "ok".into(),
    }
}

/// One run: server A over io_uring takes a request and is killed before answering it; a read
/// starts in the gap (on CPU g); then server B in `b_mode` ("uring" or "dev"), sending RESEND
/// or not, gets a read on another CPU, then one on CPU g; last, the connection is aborted.
fn scenario(b_mode: &str, resend: bool) -> Option<Seen> {
    let (g, other) = two_cpus();
    let mut c = mount()?;
    let mut a = c.serve("uring", false);
    let warm = c.read(None);
    assert_eq!(c.outcome(warm, MUST), "ok", "A serves a read");
    assert!(
        ring_completions(a.pid) > 0,
        "A answered over its rings, not /dev/fuse"
    );
    // A takes the next OPEN and never answers it. (Stopping A instead does not do:
    // the kernel copies a request into the ring entry in the server thread's own context,
    // so a stopped server's thread never sees it.)
    writeln!(a.stdin, "hold").expect("telling A to hold");
    a.expect(HELD);
    let in_flight = c.read(None);
    let cat = c.readers[in_flight].id();
    let held = a.expect(&format!(" pid={cat}"));
    eprintln!("A holds a request of the in-flight reader: {held}");
    let a_child = c.servers.first_mut().expect("A");
    a_child.kill().expect("SIGKILL A");
    a_child.wait().expect("reaping A");
    let gap = c.read(Some(g));
    let mut reads = vec![("gap, before B", c.outcome(gap, HANG), 0.0)];
    let b = c.serve(b_mode, resend);
    let t0 = Instant::now();
    let mut seen = |c: &mut Conn, what, i| {
        // Waiting long only for what should end keeps a slow machine from failing the test.
        let bound = if expected(b_mode, what) == "blocked" {
            HANG
        } else {
            MUST
        };
        let o = c.outcome(i, bound);
        reads.push((what, o, t0.elapsed().as_secs_f64()));
    };
    if let Some(cpu) = other {
        let fresh = c.read(Some(cpu));
        seen(&mut c, "fresh, other CPU", fresh);
        seen(&mut c, "gap, after the other CPU's read", gap);
    }
    let fresh = c.read(Some(g));
    seen(&mut c, "fresh, gap's CPU", fresh);
    seen(&mut c, "gap, after its CPU's read", gap);
    seen(&mut c, "in flight", in_flight);
    let b_completions = ring_completions(b.pid);
    if let Some(conn) = c.conn {
        crate::mount::abort_connection(conn);
    }
    seen(&mut c, "in flight, after an abort", in_flight);
    Some(Seen {
        b_failed: failed_cqes(&b),
        b_completions,
        reads,
    })
}

/// The failed ring completions B reported so far.
fn failed_cqes(b: &Server) -> Vec<String> {
    b.lines
        .try_iter()
        .filter_map(|l| l.find(CQE).map(|at| l[at..].to_owned()))
        .collect()
}

/// A planned hand-over: B registers while A still serves, then A is killed idle (nothing
/// taken); reads on both CPUs go to B.
fn upgrade() -> Option<Seen> {
    let (g, other) = two_cpus();
    let mut c = mount()?;
    let a = c.serve("uring", false);
    let b = c.serve("uring", false);
    let a_child = c.servers.first_mut().expect("A");
    a_child.kill().expect("SIGKILL A");
    a_child.wait().expect("reaping A");
    let before = ring_completions(b.pid);
    let t0 = Instant::now();
    let mut reads = Vec::new();
    for (what, cpu) in [("fresh, gap's CPU", Some(g)), ("fresh, other CPU", other)] {
        if cpu.is_some() {
            let r = c.read(cpu);
            reads.push((what, c.outcome(r, MUST), t0.elapsed().as_secs_f64()));
        }
    }
    drop(a);
    Some(Seen {
        b_failed: failed_cqes(&b),
        b_completions: ring_completions(b.pid) - before,
        reads,
    })
}

/// A server stopped (SIGSTOP) gets a request on its ring, then is killed: the kernel had
/// given the request to a ring entry but not yet copied it to the server (that happens in the
/// server thread's own context). Returns how the read did while A was stopped, and after.
fn killed_while_stopped() -> Option<(String, String)> {
    let mut c = mount()?;
    let a = c.serve("uring", false);
    let pid = nix::unistd::Pid::from_raw(a.pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP A");
    let r = c.read(None);
    let stopped = c.outcome(r, HANG);
    let a_child = c.servers.first_mut().expect("A");
    a_child.kill().expect("SIGKILL A");
    a_child.wait().expect("reaping A");
    Some((stopped, c.outcome(r, MUST)))
}

#[test]
fn a_successor_after_a_killed_io_uring_server() {
    if !nix::unistd::geteuid().is_root() || !Path::new(super::PARAM).exists() {
        eprintln!("skipped: needs root and a kernel with FUSE over io_uring");
        return;
    }
    let _on = EnableUring::on();
    for (mode, resend) in [("uring", false), ("uring", true), ("dev", true)] {
        let Some(seen) = scenario(mode, resend) else {
            eprintln!("skipped: the kernel did not offer FUSE over io_uring at INIT");
            return;
        };
        eprintln!(
            "successor B={mode} resend={resend} after A was killed holding a request: {seen:#?}"
        );
        // REGISTER on a connection whose rings' owner died is accepted: no error completion.
        assert_eq!(seen.b_failed, Vec::<String>::new(), "B={mode}");
        assert_eq!(
            seen.b_completions > 0,
            mode == "uring",
            "B={mode} served over rings"
        );
        let got: Vec<(&str, &str)> = seen.reads.iter().map(|r| (r.0, r.1.as_str())).collect();
        let want: Vec<(&str, String)> = seen
            .reads
            .iter()
            .map(|r| (r.0, expected(mode, r.0)))
            .collect();
        let want: Vec<(&str, &str)> = want.iter().map(|w| (w.0, w.1.as_str())).collect();
        assert_eq!(got, want, "B={mode} resend={resend}");
    }
    let (stopped, killed) = killed_while_stopped().expect("io_uring offered above");
    eprintln!(
        "a read given to a stopped server's ring: {stopped:?}; once it is killed: {killed:?}"
    );
    let canceled = std::io::Error::from_raw_os_error(libc::ECANCELED).to_string();
    let canceled = canceled.split(" (os error").next().unwrap_or_default();
    assert_eq!(stopped, "blocked", "a stopped server answers nothing");
    // Either, from run to run: the request fails with ECANCELED as its server dies, or (when
    // the dying thread still copied it out) it hangs like any request a server had taken.
    assert!(
        killed == canceled || killed == "blocked",
        "a request on a killed server's ring: {killed}"
    );
    let seen = upgrade().expect("io_uring offered above");
    eprintln!("planned hand-over (B registers while A serves, then A is killed idle): {seen:#?}");
    assert_eq!(
        seen.b_failed,
        Vec::<String>::new(),
        "a second server's REGISTER"
    );
    assert!(seen.reads.iter().all(|r| r.1 == "ok"), "reads go to B");
    assert!(
        seen.b_completions >= seen.reads.len() as u64,
        "over B's rings"
    );
}
