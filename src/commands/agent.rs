//! `cgsight agent`.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_a: Args) -> anyhow::Result<u8> {
    anyhow::bail!("`cgsight agent` is not built yet")
}
