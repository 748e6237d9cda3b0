//! `cgsight`: one binary, one module per verb (src/commands/<verb>.rs). This file only parses
//! the command line, sets up logging and maps results to exit codes.

mod commands;
mod fmt;
mod holding;
mod image_run;
mod images;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cgsight",
    version,
    about = "Containers that see their own limits, and are measured",
    long_about = "cgsight launches cgroup-limited containers, serves lxcfs-style /proc views computed from \
                  each reader's cgroup, and exports cAdvisor-compatible metrics for Prometheus."
)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `debug` or `cgsight_fusefs=trace`.
    #[arg(long, global = true, env = "CGSIGHT_LOG", default_value = "info")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the cgroup layout, and the cgroups, limits and usage of a process or cgroup path.
    Cgroup(commands::cgroup::Args),
    /// Serve the lxcfs-style /proc and /sys views over FUSE.
    Fs(commands::fs::Args),
    /// Export per-container metrics for Prometheus on /metrics.
    Agent(commands::agent::Args),
    /// Run the FUSE views and the metrics agent in one process (what a systemd unit starts).
    Daemon(commands::daemon::Args),
    /// Launch a container: namespaces, overlay root, cgroup limits, /proc views.
    #[command(alias = "run")]
    Launch(Box<commands::launch::LaunchArgs>),
    /// List containers.
    Ps(commands::ps::Args),
    /// Run a command in a running container.
    Exec(commands::exec::Args),
    /// Stop a container (SIGTERM or its image's StopSignal, then SIGKILL after a grace period).
    Stop(commands::stop::Args),
    /// Send a signal to a container's init.
    Kill(commands::kill::Args),
    /// Remove a stopped container (with -f, a running one).
    Rm(commands::rm::Args),
    /// Show a container's spec, limits, state and paths as JSON.
    Inspect(commands::inspect::Args),
    /// Show the output of a detached container.
    Logs(commands::logs::Args),
    /// Pull an image from a registry.
    Pull(commands::pull::Args),
    /// Push a stored image to the registry its reference names.
    Push(commands::push::Args),
    /// Load images from a docker-archive or OCI layout.
    Load(commands::load::Args),
    /// Save images to a docker-archive.
    Save(commands::save::Args),
    /// List stored images.
    Images(commands::images::Args),
    /// Remove images.
    Rmi(commands::rmi::Args),
    /// Image subcommands (inspect).
    Image(commands::image::Args),
    /// Give a stored image another reference.
    Tag(commands::tag::Args),
    /// Make an image of a container's changes on top of its image.
    Commit(commands::commit::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let result = match cli.command {
        Command::Cgroup(a) => commands::cgroup::run(a),
        Command::Fs(a) => commands::fs::run(a),
        Command::Agent(a) => commands::agent::run(a),
        Command::Daemon(a) => commands::daemon::run(a),
        Command::Launch(a) => commands::launch::run(*a),
        Command::Ps(a) => commands::ps::run(a),
        Command::Exec(a) => commands::exec::run(a),
        Command::Stop(a) => commands::stop::run(a),
        Command::Kill(a) => commands::kill::run(a),
        Command::Rm(a) => commands::rm::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Logs(a) => commands::logs::run(a),
        Command::Pull(a) => commands::pull::run(a),
        Command::Push(a) => commands::push::run(a),
        Command::Load(a) => commands::load::run(a),
        Command::Save(a) => commands::save::run(a),
        Command::Images(a) => commands::images::run(a),
        Command::Rmi(a) => commands::rmi::run(a),
        Command::Image(a) => commands::image::run(a),
        Command::Tag(a) => commands::tag::run(a),
        Command::Commit(a) => commands::commit::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cgsight: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
