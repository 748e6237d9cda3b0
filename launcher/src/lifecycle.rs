//! The verbs that act on an existing container: stop, kill, remove, and waiting for its exit.

use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use cgsight_cgroup::{Hierarchies, Managed};
use nix::sys::signal::Signal;

use crate::security::Userns;
use crate::state::{alive, State, Status, Store};
use crate::LaunchError;

/// Waits until the container is no longer running (its supervisor wrote the exit, died, or
/// removed the state with --rm). False on timeout.
pub fn wait_exited(store: &Store, id: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match store.load(id) {
            Ok(s) if s.status == Status::Running || s.status == Status::Created => {}
            _ => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs everything in the container's cgroup.
fn kill_cgroup(st: &State) {
    if let Ok(h) = Hierarchies::detect() {
        let _ = Managed::open(&h, &st.cgroup_path).kill_all(Duration::from_secs(10));
    }
}

/// SIGTERM (or the image's StopSignal) to the init, SIGKILL to the whole cgroup after `grace`.
pub fn stop(store: &Store, st: &State, grace: Duration) {
    if st.status != Status::Running {
        return;
    }
    let first = st
        .spec
        .stop_signal
        .as_deref()
        .and_then(|s| s.parse::<SignalNumber>().ok())
        .map_or(Signal::SIGTERM as i32, |s| s.0);
    if let Some(p) = st.pid {
        // SAFETY: kill(2) with a pid and a signal number 1..=64 (checked when parsed).
        unsafe { libc::kill(p, first) };
    }
    if !wait_exited(store, &st.id, grace) {
        kill_cgroup(st);
        wait_exited(store, &st.id, Duration::from_secs(10));
    }
}

/// A signal by number (1..=64, real-time ones included) or name (`TERM`, `SIGTERM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalNumber(pub i32);

impl FromStr for SignalNumber {
    type Err = LaunchError;
    fn from_str(s: &str) -> Result<Self, LaunchError> {
        if let Ok(n) = s.parse::<i32>() {
            return if (1..=64).contains(&n) {
                Ok(SignalNumber(n))
            } else {
                Err(LaunchError::SignalNumber(n))
            };
        }
        let up = s.to_ascii_uppercase();
        let name = if up.starts_with("SIG") {
            up
        } else {
            format!("SIG{up}")
        };
        Signal::from_str(&name)
            .map(|s| SignalNumber(s as i32))
            .map_err(|_| LaunchError::SignalName(s.to_owned()))
    }
}

/// Sends `sig` to the container's init.
pub fn kill(st: &State, sig: SignalNumber) -> Result<(), LaunchError> {
    if st.status != Status::Running {
        return Err(LaunchError::NotRunning(st.name.clone()));
    }
    let Some(p) = st.pid else { return Ok(()) };
    // Real-time signals have no nix `Signal`, hence libc.
    // SAFETY: kill(2) with a pid and a signal number.
    if unsafe { libc::kill(p, sig.0) } != 0 {
        return Err(LaunchError::io(format!("kill {p}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Removes everything a container owns (cgroup, layers, state); also cleans up after a
/// supervisor that died. A running container is refused unless `force`, which kills it and
/// lets its supervisor finish its own cleanup first.
pub fn remove(store: &Store, st: &State, force: bool) -> Result<(), LaunchError> {
    if st.status == Status::Running {
        if !force {
            return Err(LaunchError::Running(st.name.clone()));
        }
        kill_cgroup(st);
        wait_exited(store, &st.id, Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(st.supervisor_pid, st.supervisor_start) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
    if let Ok(h) = Hierarchies::detect() {
        Managed::open(&h, &st.cgroup_path)
            .kill_and_remove()
            .map_err(LaunchError::cgroup("removing the container's cgroup"))?;
    }
    let d = store.container_dir(&st.id);
    match std::fs::remove_dir_all(&d) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(LaunchError::io(format!("removing {}", d.display()))(e))
        }
        _ => {}
    }
    // Also when the supervisor died without freeing it; before the state, so a failure here
    // leaves a container `rm` can retry.
    if st.spec.security.userns == Userns::Auto {
        crate::userns::setup::free(&st.id)?;
    }
    if st.spec.net == crate::spec::Net::Bridge {
        crate::network::release(store, &st.id)?;
    }
    store.remove_state(&st.id)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SignalNumber;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!("TERM".parse::<SignalNumber>().ok(), Some(SignalNumber(15)));
        assert_eq!(
            "sigkill".parse::<SignalNumber>().ok(),
            Some(SignalNumber(9))
        );
        assert_eq!("34".parse::<SignalNumber>().ok(), Some(SignalNumber(34)));
        assert!("0".parse::<SignalNumber>().is_err());
        assert!("NOPE".parse::<SignalNumber>().is_err());
    }
}
