//! What the image verbs share: the image store's location, one-line errors with exit 125,
//! which images containers use (for `rmi`), and short ids and ages for tables.

use std::path::PathBuf;

use cgsight_image::{ImageRecord, Store};
use cgsight_launcher::EXIT_LAUNCHER;

/// Moves the image store, like `CGSIGHT_STATE_DIR` / `CGSIGHT_ROOT_DIR` move the containers'.
pub const IMAGE_DIR_ENV: &str = "CGSIGHT_IMAGE_DIR";

pub fn store_root() -> PathBuf {
    std::env::var_os(IMAGE_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(cgsight_image::DEFAULT_ROOT), PathBuf::from)
}

/// Opens the store at its absolute path: layer paths go into mount options and container
/// state, which a relative `CGSIGHT_IMAGE_DIR` would make depend on the working directory.
pub fn open_store() -> cgsight_image::Result<Store> {
    let root = store_root();
    std::fs::create_dir_all(&root).map_err(|source| cgsight_image::Error::Io {
        context: format!("creating {}", root.display()),
        source,
    })?;
    Store::open(&root.canonicalize().unwrap_or(root))
}

/// Prints an image error as one line; docker's exit code for a failed verb.
pub fn fail(e: &cgsight_image::Error) -> u8 {
    eprintln!("cgsight: {e}");
    EXIT_LAUNCHER
}

/// Runs `f` on the opened store, turning an image error into one line and exit 125.
pub fn with_store(f: impl FnOnce(&Store) -> cgsight_image::Result<u8>) -> u8 {
    match open_store().and_then(|s| f(&s)) {
        Ok(c) => c,
        Err(e) => fail(&e),
    }
}

/// A container that uses an image.
pub struct User {
    /// `name (short id)`.
    pub shown: String,
    /// Its overlay is mounted on the image's layers right now.
    pub running: bool,
}

/// The containers, running or not, whose image is `rec` of `store`: a stopped container still
/// needs its image's layers to be committed.
pub fn users_of(store: &Store, rec: &ImageRecord) -> Vec<User> {
    cgsight_launcher::Store::from_env()
        .list()
        .into_iter()
        .filter(|s| {
            s.spec
                .image_ref
                .as_ref()
                .is_some_and(|i| i.id == rec.manifest.as_str() && i.store == store.root())
        })
        .map(|s| User {
            shown: format!("{} ({})", s.name, s.short_id()),
            running: s.status != cgsight_launcher::Status::Exited,
        })
        .collect()
}

/// The 12 hex digits docker shows as IMAGE ID.
pub fn short_digest(d: &cgsight_image::Digest) -> &str {
    d.hex().get(..12).unwrap_or(d.hex())
}
