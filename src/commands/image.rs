//! `cgsight image inspect`: stored images as JSON (reference, digests, layers, run config).

use crate::images;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Show images as a JSON list.
    Inspect {
        #[arg(required = true)]
        images: Vec<String>,
    },
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let Sub::Inspect { images: names } = a.command;
    Ok(images::with_store(|store| {
        let mut out = Vec::new();
        for n in &names {
            let rec = store.image(n)?;
            let cfg = store.inspect(n)?;
            let size: u64 = rec.layers.iter().map(|l| l.blob.size).sum();
            out.push(serde_json::json!({
                "Id": rec.manifest,
                "RepoTags": [rec.reference],
                "Digest": rec.manifest,
                "MediaType": rec.manifest_media_type,
                "ConfigDigest": rec.config,
                "Size": size,
                "Layers": rec.layers,
                "Config": cfg,
            }));
        }
        let text =
            serde_json::to_string_pretty(&out).map_err(|e| cgsight_image::Error::Format {
                what: "inspect output".into(),
                why: e.to_string(),
            })?;
        println!("{text}");
        Ok(0)
    }))
}
