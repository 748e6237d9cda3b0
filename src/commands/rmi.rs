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

/// Removes one image; every failure is printed here as one line.
fn remove(store: &cgsight_image::Store, name: &str, force: bool) -> bool {
    let rec = match store.image(name) {
        Ok(r) => r,
        Err(e) => return images::fail(&e) == 0,
    };
    let users = images::users_of(store, &rec);
    let running: Vec<_> = users.iter().filter(|u| u.running).collect();
    if !running.is_empty() {
        let list: Vec<&str> = running.iter().map(|u| u.shown.as_str()).collect();
        eprintln!(
            "cgsight: image {} is used by running container {} (stop it first; -f cannot remove it)",
            rec.reference,
            list.join(", ")
        );
        return false;
    }
    let in_use = |r: &cgsight_image::ImageRecord| !images::users_of(store, r).is_empty();
    match store.remove(name, force, &in_use) {
        Ok(r) => {
            println!("Untagged: {}", r.reference);
            println!("Deleted: {}", r.manifest);
            true
        }
        Err(Error::InUse(reference)) => {
            eprintln!(
                "cgsight: image {reference} is used by container {} (remove it first, or use rmi -f)",
                shown(&users)
            );
            false
        }
        Err(e) => images::fail(&e) == 0,
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
