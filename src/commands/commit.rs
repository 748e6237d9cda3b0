//! `cgsight commit`: a container's writable layer (its overlay upper dir) on top of its
//! image's layers becomes a new image. A container on the host root or a `--rootfs` directory
//! has no image below its upper: its changes mean nothing without that host tree, so it is
//! refused, as docker has no such container to commit either.

use cgsight_image::{CommitOptions, Error, IdShift};

use crate::images;

#[derive(clap::Args)]
pub struct Args {
    /// Commit message (the history entry's comment).
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Author.
    #[arg(short = 'a', long)]
    author: Option<String>,
    /// Container name or id.
    container: String,
    /// The new image's reference, REPOSITORY[:TAG].
    reference: String,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let (store, st) = match super::find(&a.container) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("cgsight: {e}");
            return Ok(cgsight_launcher::EXIT_LAUNCHER);
        }
    };
    let Some(image) = st.spec.image_ref.clone() else {
        eprintln!(
            "cgsight: container {} runs on {}, not an image: there are no layers to commit its changes on top of",
            st.name,
            if st.image == "host" { "the host's root" } else { "a --rootfs directory" }
        );
        return Ok(cgsight_launcher::EXIT_LAUNCHER);
    };
    let upper = store.container_dir(&st.id).join("upper");
    Ok(images::with_store(|istore| {
        if !upper.is_dir() {
            return Err(Error::Format {
                what: format!("container {}", st.name),
                why: format!("its writable layer {} is gone", upper.display()),
            });
        }
        let opts = CommitOptions {
            comment: a.message.clone(),
            author: a.author.clone(),
            created_by: Some(format!("cgsight commit {}", st.name)),
            // A --userns auto container's files are stored as its range's host ids.
            id_shift: cgsight_launcher::userns::setup::recorded(&st.id).map(|r| IdShift {
                uid: r.uid,
                gid: r.gid,
                count: r.count,
            }),
            mountpoints: cgsight_launcher::network::ETC_FILES
                .iter()
                .map(|f| std::path::PathBuf::from(f.trim_start_matches('/')))
                .collect(),
        };
        let c = cgsight_image::commit(istore, &upper, &image.id, &a.reference, &opts)?;
        println!("{}", c.image.manifest);
        Ok(0)
    }))
}
