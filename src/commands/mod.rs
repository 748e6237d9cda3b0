//! One module per verb; the work is in the library crates, these map flags and exit codes.

/// `agent`: the metrics server.
pub mod agent;
/// `cgroup`: layout, cgroups, limits and usage of a process or path.
pub mod cgroup;
/// `daemon`: views and agent in one process.
pub mod daemon;
/// `exec`: a command in a running container.
pub mod exec;
/// `fs`: mount and serve the /proc and /sys views.
pub mod fs;
/// `inspect`: a container as JSON.
pub mod inspect;
/// `kill`: a signal to a container's init.
pub mod kill;
/// `launch` (`run`): start a container.
pub mod launch;
/// `logs`: a detached container's output.
pub mod logs;
/// `ps`: list containers.
pub mod ps;
/// `rm`: remove containers.
pub mod rm;
/// `stop`: SIGTERM, then SIGKILL.
pub mod stop;

use cgsight_launcher::{LaunchError, State, Store};

/// Prints a launcher error as one line and returns its exit code.
pub fn fail(e: &LaunchError) -> u8 {
    eprintln!("cgsight: {e}");
    e.code()
}

/// Finds one container by name, id or unique id prefix.
pub fn find(q: &str) -> anyhow::Result<(Store, State)> {
    let store = Store::from_env();
    let st = store.find(q)?;
    Ok((store, st))
}

/// Runs `f` on each named container. A name that matches none is reported and, like an `f`
/// that returns non-zero, makes the exit code 1; the remaining names are still processed.
pub fn for_each_container(
    queries: &[String],
    mut f: impl FnMut(Store, State) -> anyhow::Result<u8>,
) -> anyhow::Result<u8> {
    let mut rc = 0;
    for q in queries {
        match find(q) {
            Ok((store, st)) => {
                if f(store, st)? != 0 {
                    rc = 1;
                }
            }
            Err(e) => {
                eprintln!("cgsight: {e}");
                rc = 1;
            }
        }
    }
    Ok(rc)
}
