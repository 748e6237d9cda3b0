//! `cgsight kill`: send a signal to a container's init.

use cgsight_launcher::lifecycle::{self, SignalNumber};

#[derive(clap::Args)]
pub struct Args {
    /// Signal name or number.
    #[arg(short = 's', long = "signal", default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let sig: SignalNumber = match a.signal.parse() {
        Ok(s) => s,
        Err(e) => return Ok(super::fail(&e)),
    };
    super::for_each_container(&a.containers, |_, st| {
        if let Err(e) = lifecycle::kill(&st, sig) {
            eprintln!("cgsight: {e}");
            return Ok(1);
        }
        println!("{}", st.name);
        Ok(0)
    })
}
