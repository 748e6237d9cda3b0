//! `cgsight load`: images from a docker-archive or OCI layout (tar or directory).

use std::path::PathBuf;

use crate::images;

#[derive(clap::Args)]
pub struct Args {
    /// The archive (docker save output, OCI layout tar) or OCI layout directory.
    #[arg(short = 'i', long = "input", required = true)]
    input: PathBuf,
    /// Name for an archive that names no image (or overrides its one name).
    #[arg(long = "tag")]
    tag: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    Ok(images::with_store(|store| {
        let recs = cgsight_image::load(store, &a.input, a.tag.as_deref(), &mut |_| {})?;
        for r in recs {
            println!("Loaded image: {}", r.reference);
        }
        Ok(0)
    }))
}
