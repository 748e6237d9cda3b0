//! One module per verb; the work is in the library crates, these map flags and exit codes.

/// `agent`: the metrics server.
pub mod agent;
/// `cgroup`: layout, cgroups, limits and usage of a process or path.
pub mod cgroup;
/// `commit`: a container's upper dir on its image as a new image.
pub mod commit;
/// `daemon`: views and agent in one process.
pub mod daemon;
/// `exec`: a command in a running container.
pub mod exec;
/// `fs`: mount and serve the /proc and /sys views.
pub mod fs;
/// `image inspect`: stored images as JSON.
pub mod image;
/// `images`: the stored images as a table.
pub mod images;
/// `inspect`: a container as JSON.
pub mod inspect;
/// `kill`: a signal to a container's init.
pub mod kill;
/// `launch` (`run`): start a container.
pub mod launch;
/// `load`: images from an archive.
pub mod load;
/// `logs`: a detached container's output.
pub mod logs;
/// `ps`: list containers.
pub mod ps;
/// `pull`: an image from a registry, with progress.
pub mod pull;
/// `push`: a stored image to a registry.
pub mod push;
/// `rm`: remove containers.
pub mod rm;
/// `rmi`: remove images not in use.
pub mod rmi;
/// `save`: images to a docker-archive.
pub mod save;
/// `stop`: SIGTERM, then SIGKILL.
pub mod stop;
/// `tag`: another reference for an image.
pub mod tag;

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
