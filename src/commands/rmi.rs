//! `cgsight rmi`: remove images. One a container uses is refused; `-f` removes it when only
//! stopped containers use it, but never from under a running one (its overlay is mounted on
//! the layers: deleting them would empty its root), as docker refuses too.

use cgsight_image::Error;

use crate::images;

#[derive(clap::Args)]
pub struct Args {
    /// Remove an image that stopped containers still use.
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

fn shown(users: &[images::User]) -> String {
    users
        .iter()
        .map(|u| u.shown.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Removes one image; every failure is printed here as one line. Who uses it is decided
/// under the store's lock (which `launch IMAGE` holds until its state exists), so a container
/// starting meanwhile is seen.
fn remove(store: &cgsight_image::Store, name: &str, force: bool) -> bool {
    let blocking = |r: &cgsight_image::ImageRecord| {
        images::users_of(store, r)
            .into_iter()
            .filter(|u| !force || u.running)
            .collect::<Vec<_>>()
    };
    match store.remove(name, false, &|r| !blocking(r).is_empty()) {
        Ok(r) => {
            println!("Untagged: {}", r.reference);
            println!("Deleted: {}", r.manifest);
            true
        }
        Err(Error::InUse(reference)) => {
            let users = store.image(name).map(|r| blocking(&r)).unwrap_or_default();
            let hint = if users.iter().any(|u| u.running) {
                "stop it first; -f cannot remove an image from under a running container"
            } else {
                "remove it first, or use rmi -f"
            };
            eprintln!(
                "cgsight: image {reference} is used by container {} ({hint})",
                shown(&users)
            );
            false
        }
        Err(e) => {
            images::fail(&e);
            false
        }
    }
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    Ok(images::with_store(|store| {
        let mut rc = 0;
        for name in &a.images {
            if !remove(store, name, a.force) {
                rc = cgsight_launcher::EXIT_LAUNCHER;
            }
        }
        Ok(rc)
    }))
}
