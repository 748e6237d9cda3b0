//! Child processes owned by a test: killed and reaped on drop. Servers are started on port 0
//! and the test learns the port they bound from their log, so no port is ever guessed (a
//! port picked free and released first can be handed to a parallel test in between).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process killed and reaped on drop.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        ChildGuard { child: Some(child) }
    }
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present")
    }
    /// Waits for exit, returning the status, within `timeout` (then kills it and panics).
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child().try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child().kill();
                panic!("child {} did not exit within {timeout:?}", self.pid());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    pub fn into_output(mut self) -> std::process::Output {
        self.child
            .take()
            .expect("child")
            .wait_with_output()
            .expect("wait")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether process `pid` has a handler installed for signal `sig` (SigCgt in its status): a
/// server that announces its port before installing its handler dies of a SIGTERM sent in
/// between, so a test of graceful shutdown waits for this first.
pub fn catches_signal(pid: i32, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let Some(bit) = u32::try_from(sig - 1).ok().filter(|b| *b < 64) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << bit) != 0)
}

/// Spawns `cmd`, a server told to listen on `127.0.0.1:0`, with its stderr piped, and returns
/// it with the port it reports on the first stderr line that contains `marker` and a
/// `127.0.0.1:<port>` with a non-zero port. Its stderr is drained for as long as it runs, so it
/// never blocks on a full pipe. Panics (with the log so far) if it exits or stays silent.
pub fn spawn_listening(cmd: &mut Command, marker: &'static str) -> (ChildGuard, u16) {
    let mut child = ChildGuard::new(cmd.stderr(Stdio::piped()).spawn().expect("spawn server"));
    let stderr = child.child().stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<Result<u16, String>>();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Some(t) = tx.as_ref() else { continue };
            match announced_port(&line, marker) {
                Some(p) => {
                    let _ = t.send(Ok(p));
                    tx = None;
                }
                None => {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        }
        if let Some(t) = tx {
            let _ = t.send(Err(log));
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(port)) => (child, port),
        Ok(Err(log)) => panic!("{cmd:?} exited without reporting its port:\n{log}"),
        Err(e) => panic!("{cmd:?} did not report its port ({e})"),
    }
}

/// The non-zero port of the first `127.0.0.1:<digits>` on a line that contains `marker`.
fn announced_port(line: &str, marker: &str) -> Option<u16> {
    if !line.contains(marker) {
        return None;
    }
    line.split("127.0.0.1:")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u16>().ok()
        })
        .find(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::announced_port;

    #[test]
    fn this_process_catches_no_sigusr2() {
        assert!(!super::catches_signal(
            std::process::id() as i32,
            libc::SIGUSR2
        ));
    }

    #[test]
    fn ports_are_read_from_log_lines() {
        let agent = "INFO cgsight agent listening on http://127.0.0.1:40123/metrics";
        assert_eq!(announced_port(agent, "listening on"), Some(40123));
        let prom = r#"level=info component=web msg="Listening on" address=127.0.0.1:36939"#;
        assert_eq!(announced_port(prom, "Listening on"), Some(36939));
        let zero = r#"msg="Start listening for connections" address=127.0.0.1:0"#;
        assert_eq!(announced_port(zero, "listening"), None);
        assert_eq!(announced_port(agent, "nothing like it"), None);
    }
}
