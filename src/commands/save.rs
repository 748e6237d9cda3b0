//! `cgsight save`: stored images to one docker-archive.

use std::io::Write;
use std::path::PathBuf;

use cgsight_image::Error;

use crate::images;

#[derive(clap::Args)]
pub struct Args {
    /// Where the archive goes (written next to it, then renamed, so no half file is left).
    #[arg(short = 'o', long = "output", required = true)]
    output: PathBuf,
    #[arg(required = true)]
    images: Vec<String>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        context: what,
        source,
    }
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    Ok(images::with_store(|store| {
        let names: Vec<&str> = a.images.iter().map(String::as_str).collect();
        let mut tmp = a.output.clone().into_os_string();
        tmp.push(".cgsight-tmp");
        let tmp = PathBuf::from(tmp);
        let f = std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        let mut w = std::io::BufWriter::new(f);
        let res = cgsight_image::save(store, &names, &mut w)
            .and_then(|()| w.flush().map_err(io(format!("writing {}", tmp.display()))))
            .and_then(|()| {
                std::fs::rename(&tmp, &a.output)
                    .map_err(io(format!("renaming to {}", a.output.display())))
            });
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res.map(|()| 0)
    }))
}
