//! `cgsight rm`: remove a stopped container (with -f, a running one).

use cgsight_launcher::lifecycle;

#[derive(clap::Args)]
pub struct Args {
    /// Kill a running container first.
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    super::for_each_container(&a.containers, |store, st| {
        match lifecycle::remove(&store, &st, a.force) {
            Ok(()) => {
                println!("{}", st.name);
                Ok(0)
            }
            Err(e) => {
                eprintln!("cgsight: {e}");
                Ok(1)
            }
        }
    })
}
