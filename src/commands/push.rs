//! `cgsight push`: a stored image to the registry its reference names.

use crate::commands::pull::RegistryArgs;
use crate::images;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    registry: RegistryArgs,
    /// The stored image; its reference says where it goes.
    image: String,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    Ok(images::with_store(|store| {
        let opts = a.registry.client_options()?;
        let rec = store.image(&a.image)?;
        let mut progress = a.registry.progress();
        let digest = cgsight_image::push(store, &a.image, &rec.reference, &opts, &mut progress)?;
        println!("{}: digest: {digest}", rec.reference);
        Ok(0)
    }))
}
