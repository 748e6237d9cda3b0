//! `cgsight push`: a stored image to the registry its reference names.

use crate::commands::pull::{client_options, Display};
use crate::images;

#[derive(clap::Args)]
pub struct Args {
    /// Registry credentials (default: ~/.docker/config.json).
    #[arg(long, value_name = "USER:PASS")]
    creds: Option<String>,
    /// Plain HTTP to a registry that is not on loopback.
    #[arg(long)]
    insecure: bool,
    /// Suppress the progress output.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// The stored image; its reference says where it goes.
    image: String,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    Ok(images::with_store(|store| {
        let opts = client_options(a.creds.as_deref(), a.insecure)?;
        let rec = store.image(&a.image)?;
        let mut d = Display::new();
        let digest = cgsight_image::push(store, &a.image, &rec.reference, &opts, &mut |p| {
            if !a.quiet {
                d.report(p)
            }
        })?;
        println!("{}: digest: {digest}", rec.reference);
        Ok(0)
    }))
}
