//! The image a container runs on, as the CLI resolved it in the image store: the launcher
//! only needs its layer directories (overlay lowerdirs) and names to record.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The normalised reference (`127.0.0.1:5000/app:1`), shown by `ps`, `inspect`, the agent.
    pub reference: String,
    /// The manifest digest: what `rmi` and `commit` match on, whatever tags come and go.
    pub id: String,
    /// Layer directories, top layer first (overlay's lowerdir order).
    pub lowers: Vec<PathBuf>,
    /// The image store they belong to (another store's image with the same digest is another
    /// copy, which this container does not use).
    #[serde(default)]
    pub store: PathBuf,
}
