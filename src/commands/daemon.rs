//! `cgsight daemon`: the FUSE views and the metrics agent, as a systemd unit starts them.
//!
//! The process that stays is the holder (as for `cgsight fs`): it keeps the views' mount and
//! the /metrics listening socket, and runs both in a server process it restarts when it dies
//! and replaces on SIGHUP or `--upgrade` (`ExecReload=` in contrib/systemd/cgsight.service).
//! `--io-uring on` runs everything in this one process instead.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use anyhow::Context;
use nix::sys::signal::{SigSet, Signal};

use crate::holding;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub agent: super::agent::Args,
    #[command(flatten)]
    pub views: super::fs::ViewArgs,
    /// Replace the running server by the binary now on disk, with no failed read or scrape,
    /// and exit (the same as SIGHUP to the daemon, but waits for the outcome).
    #[arg(long)]
    pub upgrade: bool,
}

const THREADS: usize = 4;

pub fn run(a: Args) -> anyhow::Result<u8> {
    let pidfile = cgsight_fusefs::pidfile_path(&a.views.mountpoint);
    if let Some(h) = cgsight_fusefs::Handed::from_env() {
        return serve(a, h);
    }
    if a.upgrade {
        return holding::upgrade(&pidfile);
    }
    // A long-lived daemon must not hold a pipe its caller waits on for EOF.
    cgsight_launcher::startup::close_inherited(None);
    if matches!(a.views.io_uring, super::fs::IoUringArg::On) {
        return in_process(a);
    }
    let lock = match holding::lock_pidfile(&pidfile, &a.views.mountpoint) {
        Ok(l) => l,
        Err((code, e)) => {
            eprintln!("cgsight daemon: {e:#}");
            return Ok(code);
        }
    };
    let listener = std::net::TcpListener::bind(a.agent.listen)
        .with_context(|| format!("binding {} for /metrics", a.agent.listen))?;
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block().context("blocking signals")?;
    let r = holding::hold(
        &a.views.mountpoint,
        &pidfile,
        Some(OwnedFd::from(listener)),
        || {},
    );
    drop(lock);
    match r {
        Ok(code) => Ok(code),
        Err((code, e)) => {
            eprintln!("cgsight daemon: {e:#}");
            Ok(code)
        }
    }
}

/// A server started by the holder: the views on the handed connection and the agent on the
/// handed socket, until SIGTERM (an upgrade, or the holder stopping).
fn serve(a: Args, mut h: cgsight_fusefs::Handed) -> anyhow::Result<u8> {
    let listener = h.take_listener();
    let views = cgsight_fusefs::serve_handed(&a.views.config(THREADS), h)?;
    let m = views.metrics();
    let extra: Vec<cgsight_agent::Producer> = vec![Arc::new(move |out: &mut String| m.encode(out))];
    let mut cfg = a.agent.config(extra);
    if let Some(l) = listener {
        l.set_nonblocking(true)
            .context("the handed /metrics socket")?;
        cfg.listener = Some(l);
    }
    // The agent returns on SIGTERM/SIGINT.
    let r = cgsight_agent::run(cfg);
    views.stop();
    r?;
    Ok(0)
}

/// Views and agent in this process (io_uring queues are not handed over).
fn in_process(a: Args) -> anyhow::Result<u8> {
    let fs = cgsight_fusefs::spawn(a.views.config(THREADS))
        .with_context(|| format!("mounting the views at {}", a.views.mountpoint.display()))?;
    holding::repair_containers(&a.views.mountpoint);
    let m = fs.metrics();
    let extra: Vec<cgsight_agent::Producer> = vec![Arc::new(move |out: &mut String| m.encode(out))];
    // The agent returns on SIGTERM/SIGINT; unmount in every case.
    let r = cgsight_agent::run(a.agent.config(extra));
    fs.unmount();
    r?;
    Ok(0)
}
