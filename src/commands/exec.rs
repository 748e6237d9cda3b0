//! `cgsight exec`: run a command in a running container.

use std::path::PathBuf;

use cgsight_launcher::exec::ExecRequest;
use cgsight_launcher::{spec, EXIT_LAUNCHER};

#[derive(clap::Args)]
pub struct Args {
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Keep stdin attached.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Environment variable KEY=VALUE.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<PathBuf>,
    /// Run as USER[:GROUP] (name or id, looked up in the container); default: the container's
    /// user.
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Pass descriptors 3..3+N to the command (all others are closed).
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// Container id (or unique prefix) or name.
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let (_, st) = match super::find(&a.container) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("cgsight: {e}");
            return Ok(EXIT_LAUNCHER);
        }
    };
    let mut env = Vec::new();
    for e in &a.env {
        match spec::parse_env(e, |k| std::env::var(k).ok()) {
            Ok(Some(kv)) => env.push(kv),
            Ok(None) => {}
            Err(e) => {
                eprintln!("cgsight: {e}");
                return Ok(EXIT_LAUNCHER);
            }
        }
    }
    let req = ExecRequest {
        command: a.command,
        tty: a.tty,
        interactive: a.interactive,
        env,
        workdir: a.workdir,
        preserve_fds: a.preserve_fds,
        user: a.user,
    };
    Ok(match cgsight_launcher::exec::exec(&st, &req) {
        Ok(c) => c,
        Err(e) => super::fail(&e),
    })
}
