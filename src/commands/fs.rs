//! `cgsight fs`.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_a: Args) -> anyhow::Result<u8> {
    anyhow::bail!("`cgsight fs` is not built yet")
}
