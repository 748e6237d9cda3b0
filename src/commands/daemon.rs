//! `cgsight daemon`.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_a: Args) -> anyhow::Result<u8> {
    anyhow::bail!("`cgsight daemon` is not built yet")
}
