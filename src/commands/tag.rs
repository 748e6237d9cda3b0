//! `cgsight tag`: another reference for a stored image.

use crate::images;

#[derive(clap::Args)]
pub struct Args {
    /// The stored image (reference or id).
    source: String,
    /// The new reference.
    target: String,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    Ok(images::with_store(|store| {
        store.tag(&a.source, &a.target)?;
        Ok(0)
    }))
}
