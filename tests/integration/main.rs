//! cgsight's integration tests: one test binary (so the tests share one build, one `cgsight
//! fs` views server and one set of helpers) with a module per topic. They run on the real
//! kernel as root: real cgroups, mounts, namespaces, and the real `cgsight` binary.
//!
//! - `support`: helpers for driving the `cgsight` binary (views server, containers, inspect).
//! - `clients`: ps, top, vmstat, lscpu and psutil in `cgsight launch` containers read the views.
//! - `agent`: `cgsight agent` against real cgroups, promtool, TLS/basic auth, Prometheus.
//! - `containment`: what a default container must not reach (fds, volumes, other containers,
//!   disks, its own limits, the host keyring), and that each protection is what stops it.
//! - `dashboards`: `cgsight daemon` under load scraped by Prometheus; rules and dashboards.
//! - `fs_daemon`: the views server's descriptors: inherited pipes, removed containers, EMFILE.
//! - `fs_handover`: the views outlive their server: kill -9, SIGTERM and `--upgrade` under load.
//! - `fs_repair`: a new views server repairs running containers' binds of a dead one.
//! - `images`: pull/push/commit/rmi and `launch IMAGE` against a loopback docker-registry.
//! - `fs_views`: `cgsight fs` views read by procps, glibc and Python in a container.
//! - `launch_basic`: `cgsight launch` limits, namespaces, exit codes, volumes, exec, cleanup.
//! - `network`: bridge, NAT, `-p`, `--net none|container:`, cleanup, in test-made netns.
//! - `sysinfo`: sysinfo(2) (free, sysconf, getloadavg) answered for the container.
//! - `launch_tty`: `launch -t/-i` through a real pty, `-d` with `logs`, stop and signals.

mod support;

mod agent;
mod clients;
mod containment;
mod dashboards;
mod fs_daemon;
mod fs_handover;
mod fs_repair;
mod fs_views;
mod images;
mod launch_basic;
mod launch_tty;
mod network;
mod sysinfo;
