//! End-to-end tests of `cgsight launch -t/-i`, `-d` + `logs`, and exit codes on signals, on the
//! real kernel (root). The tty tests drive the launcher through a real pty, as a terminal would.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use cgsight_testkit::{require_root, unique_name, wait_for, ChildGuard, TempDir};

/// Generous bound on waiting for output; reached only if the launcher is broken.
const PATIENCE: Duration = Duration::from_secs(30);

/// The test's side of a terminal: a pty master, plus a slave fd kept to read the termios the
/// launcher sets on "its" terminal.
struct Term {
    master: OwnedFd,
    slave: OwnedFd,
    seen: Vec<u8>,
}

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Term {
    fn new(rows: u16, cols: u16) -> Term {
        let (mut m, mut s) = (-1, -1);
        let ws = winsize(rows, cols);
        // SAFETY: openpty with valid out pointers and a valid winsize; no name/termios wanted.
        let r =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned two fresh fds we now own.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        for fd in [m, s] {
            // SAFETY: fcntl on our own fds.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        Term {
            master,
            slave,
            seen: Vec::new(),
        }
    }

    /// Spawns cgsight with the slave as its controlling terminal and stdio.
    fn spawn(&self, args: &[&str]) -> ChildGuard {
        let stdio = || Stdio::from(self.slave.try_clone().expect("dup slave"));
        let mut cmd = command(args);
        cmd.env("CGSIGHT_FS_MOUNTPOINT", views_mountpoint())
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio());
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        ChildGuard::new(cmd.spawn().expect("spawning cgsight"))
    }

    fn termios(&self) -> libc::termios {
        // SAFETY: tcgetattr into a zeroed termios on our fd.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(self.slave.as_raw_fd(), &mut t), 0);
            t
        }
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ with a valid winsize on our master.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    fn type_in(&self, s: &str) {
        let mut f = std::fs::File::from(self.master.try_clone().expect("dup master"));
        f.write_all(s.as_bytes()).expect("writing to the pty");
    }

    /// Reads until `pat` appears in the output since the last match; returns that output.
    fn expect(&mut self, pat: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(i) = find(&self.seen, pat.as_bytes()) {
                let upto = i + pat.len();
                let out = String::from_utf8_lossy(&self.seen[..upto]).into_owned();
                self.seen.drain(..upto);
                return out;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{pat:?} never appeared; output so far: {:?}",
                String::from_utf8_lossy(&self.seen)
            );
            let mut pfd = libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32) };
            if n <= 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            // SAFETY: reading into a valid buffer from our fd.
            let r =
                unsafe { libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            assert!(
                r > 0,
                "pty closed before {pat:?}; output: {:?}",
                String::from_utf8_lossy(&self.seen)
            );
            self.seen.extend_from_slice(&buf[..r as usize]);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn same_termios(a: &libc::termios, b: &libc::termios) -> bool {
    a.c_iflag == b.c_iflag
        && a.c_oflag == b.c_oflag
        && a.c_cflag == b.c_cflag
        && a.c_lflag == b.c_lflag
        && a.c_cc == b.c_cc
}

#[test]
fn tty_is_a_pty_with_size_input_resize_and_exit_code() {
    require_root!();
    let n = unique_name("tty");
    let _g = Ctr::named(&n);
    let mut term = Term::new(33, 101);
    let before = term.termios();
    assert_ne!(before.c_lflag & libc::ICANON, 0, "test pty starts cooked");
    // Markers are built from pieces so the pty's echo of typed text never matches them.
    let script = "tty; echo size=$(stty size); test -t 0 && echo is-tty=yes; \
                  echo ready1; read x; echo got:$x; \
                  echo ready2; read y; echo size2=$(stty size); exit 3";
    let mut g = term.spawn(&[
        "launch",
        "--rm",
        "-t",
        "-i",
        "--no-proc-views",
        "--name",
        &n,
        "--",
        "sh",
        "-c",
        script,
    ]);
    let out = term.expect("ready1");
    let tty = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("/dev/"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        tty.starts_with("/dev/pts/") && tty["/dev/pts/".len()..].parse::<u32>().is_ok(),
        "tty inside: {out:?}"
    );
    assert!(out.contains("size=33 101"), "stty size inside: {out:?}");
    assert!(out.contains("is-tty=yes"), "test -t 0: {out:?}");

    // While the container runs, the launcher's terminal is raw (the container's pty does the
    // line discipline).
    let during = term.termios();
    assert_eq!(during.c_lflag & (libc::ICANON | libc::ECHO), 0, "not raw");

    term.type_in("hello-there\n");
    let out = term.expect("ready2");
    assert!(out.contains("got:hello-there"), "typed input: {out:?}");

    // A terminal resize: the kernel signals the launcher's foreground group; the explicit
    // SIGWINCH is what a terminal emulator's shell would also see.
    term.resize(47, 123);
    // SAFETY: signalling our child.
    unsafe { libc::kill(g.pid(), libc::SIGWINCH) };
    term.type_in("go\n");
    let out = term.expect("size2=");
    let out = out + &term.expect("\n");
    assert!(out.contains("size2=47 123"), "size after resize: {out:?}");

    let st = g.wait_timeout(PATIENCE);
    assert_eq!(st.code(), Some(3), "exit code");
    let after = term.termios();
    assert!(
        same_termios(&before, &after),
        "termios not restored: lflag {:#o} -> {:#o}",
        before.c_lflag,
        after.c_lflag
    );
    no_container_named(&n);
}

#[test]
fn tty_without_interactive_still_runs() {
    require_root!();
    let n = unique_name("tty-noi");
    let _g = Ctr::named(&n);
    let mut term = Term::new(24, 80);
    let before = term.termios();
    let mut g = term.spawn(&[
        "launch",
        "--rm",
        "-t",
        "--no-proc-views",
        "--name",
        &n,
        "--",
        "sh",
        "-c",
        "test -t 1 && echo out-is-tty; echo size=$(stty size)",
    ]);
    let out = term.expect("size=");
    let out = out + &term.expect("\n");
    assert!(out.contains("out-is-tty"), "{out:?}");
    assert!(out.contains("size=24 80"), "{out:?}");
    assert_eq!(g.wait_timeout(PATIENCE).code(), Some(0));
    assert!(same_termios(&before, &term.termios()), "termios restored");
    no_container_named(&n);
}

#[test]
fn interactive_without_tty_pipes_stdin() {
    require_root!();
    let n = unique_name("stdin");
    let _g = Ctr::named(&n);
    let mut child = command(&[
        "launch",
        "--rm",
        "-i",
        "--no-proc-views",
        "--name",
        &n,
        "--",
        "cat",
    ])
    .env("CGSIGHT_FS_MOUNTPOINT", views_mountpoint())
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawning cgsight");
    let mut input = child.stdin.take().expect("stdin");
    let payload: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let writer = {
        let p = payload.clone();
        std::thread::spawn(move || {
            let _ = input.write_all(p.as_bytes());
            // Dropping closes the pipe: cat sees EOF and the container exits.
        })
    };
    let o = child.wait_with_output().expect("waiting for cgsight");
    writer.join().expect("writer thread");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o) == payload, "stdout differs from stdin");
    no_container_named(&n);

    // Without -i the command's stdin is /dev/null, whatever ours is: data waiting on our stdin
    // must not reach cat (an empty, closed pipe alone would give "" even if it were forwarded).
    let mut child = command(&["launch", "--rm", "--no-proc-views", "--", "cat"])
        .env("CGSIGHT_FS_MOUNTPOINT", views_mountpoint())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running cgsight");
    let mut stdin = child.stdin.take().expect("stdin pipe");
    // Fits in the pipe buffer, so this does not block whether or not anyone reads it; a broken
    // pipe only means cgsight already exited without reading it.
    match stdin.write_all(b"must-not-arrive\n") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing stdin: {e}"),
        _ => {}
    }
    drop(stdin);
    let o = child.wait_with_output().expect("waiting for cgsight");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
}

#[test]
fn detached_logs_follow_ps_and_rm() {
    require_root!();
    let n = unique_name("logs");
    let _g = Ctr::named(&n);
    let sync = TempDir::new("logs-sync");
    let vol = format!("{}:/sync", sync.path().display());
    // Lines over time, paced by files the test creates (no sleeps on our side).
    let script = "echo line-one; while [ ! -e /sync/go ]; do sleep 0.05; done; echo line-two; \
                  while [ ! -e /sync/end ]; do sleep 0.05; done; echo line-three";
    let o = cgsight(&[
        "launch",
        "-d",
        "--no-proc-views",
        "--name",
        &n,
        "-v",
        &vol,
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    assert_eq!(id.len(), 64, "launch -d prints the id: {id:?}");

    wait_for("line-one in logs", PATIENCE, || {
        let o = cgsight(&["logs", &n]);
        (o.status.success() && stdout(&o).contains("line-one")).then_some(())
    });
    let o = cgsight(&["logs", &n]);
    assert_eq!(stdout(&o), "line-one\n");
    let ps = stdout(&cgsight(&["ps"]));
    let row = ps.lines().find(|l| l.contains(&n)).unwrap_or_default();
    assert!(row.contains("running"), "ps:\n{ps}");

    let follow = Command::new(BIN)
        .args(["logs", "-f", &n])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("logs -f");
    let mut follow = ChildGuard::new(follow);
    std::fs::write(sync.path().join("go"), "").unwrap();
    wait_for("line-two in logs", PATIENCE, || {
        stdout(&cgsight(&["logs", &n]))
            .contains("line-two")
            .then_some(())
    });
    // `logs -f` is still following: the container runs.
    assert!(follow.child().try_wait().unwrap().is_none(), "logs -f quit");
    std::fs::write(sync.path().join("end"), "").unwrap();
    let st = follow.wait_timeout(PATIENCE);
    assert!(st.success(), "logs -f: {st:?}");
    let o = follow.into_output();
    assert_eq!(stdout(&o), "line-one\nline-two\nline-three\n", "logs -f");

    let v = inspect(&n).expect("inspect");
    assert_eq!(v["status"], "exited", "{v}");
    assert_eq!(v["ExitCode"], 0, "{v}");
    assert_eq!(v["OOMKilled"], false, "{v}");
    assert!(!stdout(&cgsight(&["ps"])).contains(&n), "ps lists exited");
    let ps = stdout(&cgsight(&["ps", "-a"]));
    let row = ps.lines().find(|l| l.contains(&n)).unwrap_or_default();
    assert!(row.contains("exited (0)"), "ps -a:\n{ps}");

    assert!(cgsight(&["rm", &n]).status.success());
    assert_gone(&id);
}

/// `stop -t 1`: an init that forwards TERM gives 143; a bare pid 1 ignores TERM (the kernel
/// protects a namespace's init from signals it has no handler for) and is killed: 137.
#[test]
fn stop_gives_143_or_137_and_inspect_reports_it() {
    require_root!();
    for (init, want) in [(true, 143), (false, 137)] {
        let n = unique_name("stop");
        let _g = Ctr::named(&n);
        let mut args = vec!["launch", "-d", "--no-proc-views", "--name", &n];
        if init {
            args.push("--init");
        }
        args.extend_from_slice(&["--", "sleep", "infinity"]);
        let o = cgsight(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let id = stdout(&o).trim().to_owned();
        let o = cgsight(&["stop", "-t", "1", &n]);
        assert!(o.status.success(), "stop: {}", stderr(&o));
        let v = inspect(&n).expect("inspect");
        assert_eq!(v["status"], "exited", "{v}");
        assert_eq!(v["ExitCode"], want, "init={init}: {v}");
        assert_eq!(v["exit_code"], want, "{v}");
        assert_eq!(v["OOMKilled"], false, "{v}");
        let ps = stdout(&cgsight(&["ps", "-a"]));
        let row = ps.lines().find(|l| l.contains(&n)).unwrap_or_default();
        assert!(row.contains(&format!("exited ({want})")), "ps -a:\n{ps}");
        assert!(cgsight(&["rm", &n]).status.success());
        assert_gone(&id);
    }
}

#[test]
fn death_by_signal_is_128_plus_n() {
    require_root!();
    // Under --init the command is not pid 1, so it can signal itself to death.
    let o = cgsight(&[
        "launch",
        "--rm",
        "--init",
        "--no-proc-views",
        "--",
        "sh",
        "-c",
        "kill -USR1 $$",
    ]);
    assert_eq!(o.status.code(), Some(138), "{}", stderr(&o));
    // Without --init the command is the namespace's pid 1, which the kernel shields from
    // signals it has no handler for (as under docker): it survives its own USR1.
    let o = cgsight(&[
        "launch",
        "--rm",
        "--no-proc-views",
        "--",
        "sh",
        "-c",
        "kill -USR1 $$; echo survived",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "survived\n");
    // A bare pid 1 dies of a fault (a forced signal): SIGSEGV = 11.
    let o = cgsight(&[
        "launch",
        "--rm",
        "--no-proc-views",
        "--",
        "python3",
        "-c",
        "import ctypes; ctypes.string_at(0)",
    ]);
    assert_eq!(o.status.code(), Some(139), "{}", stderr(&o));
}

/// `-t -i` fed from a pipe: at the end of our stdin the command must see end of input (the
/// pty's EOF character), not wait forever.
#[test]
fn tty_with_piped_stdin_ends_at_eof() {
    require_root!();
    let n = unique_name("tty-pipe");
    let _g = Ctr::named(&n);
    let mut child = command(&[
        "launch",
        "--rm",
        "-t",
        "-i",
        "--no-proc-views",
        "--name",
        &n,
        "--",
        "sh",
        "-c",
        "while read l; do echo got:$l; done; echo end-of-input",
    ])
    .env("CGSIGHT_FS_MOUNTPOINT", views_mountpoint())
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawning cgsight");
    // The last line has no newline: its EOF flushes it, a second ends the input.
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(b"one\ntwo").expect("writing stdin");
    drop(input);
    let mut g = ChildGuard::new(child);
    let st = g.wait_timeout(PATIENCE);
    let o = g.into_output();
    assert_eq!(st.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o).replace('\r', "");
    assert!(out.contains("got:one\n"), "{out:?}");
    assert!(out.contains("end-of-input"), "{out:?}");
    no_container_named(&n);
}
