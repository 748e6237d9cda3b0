//! cgsight-image: container images for cgsight — pull/push over the registry v2 API, a
//! content-addressed store whose layers are unpacked once in overlay form and shared, archive
//! load/save, and commit of an overlay upper directory.
//!
//! Use: `Store::open(DEFAULT_ROOT)`, then [`pull`] / [`push`] / [`load`] / [`save`] /
//! [`commit()`] / `Store::{images, image, inspect, remove, tag}`. A launcher mounts
//! `overlay` with `lowerdir=` + `Store::lowerdir(name)` and its own upper/work dirs, and takes
//! Entrypoint/Cmd/Env/WorkingDir/User/StopSignal from `Store::inspect(name)`.
//!
//! Modules:
//! - [`archive`]: load docker-archive / OCI layout, save docker-archive.
//! - [`auth`]: credentials (user:pass, docker config.json) and WWW-Authenticate challenges.
//! - [`blobs`]: content-addressed blob files, verified before they are kept.
//! - [`commit`](mod@commit): an overlay upper dir + parent image → new layer, config, manifest, image.
//! - [`config`]: the run settings of an image config (Entrypoint, Cmd, Env, …).
//! - [`digest`]: sha256 digests and hashing readers/writers.
//! - [`error`]: the crate's error type.
//! - [`fsmeta`]: ownership, times, device nodes and xattrs without following symlinks.
//! - [`index`]: `images.json`, references → manifest, config, layer chain.
//! - [`layers`]: unpacked layers, short links, the overlay lowerdir string.
//! - [`manifest`]: OCI/Docker manifests and indexes, media types, platform choice.
//! - [`pack`]: overlay upper dir → layer tar with `.wh.` entries.
//! - [`progress`]: per-layer progress reports.
//! - [`reference`](mod@reference): image reference parsing.
//! - [`registry`]: blocking registry v2 client.
//! - [`store`]: the store root, its lock, ingest and removal with layer sharing.
//! - [`temp`]: self-removing temp paths inside the store.
//! - [`transfer`]: pull and push between the store and a registry.
//! - [`unpack`]: layer tar → overlay-form directory, refusing unsafe paths.

pub mod archive;
pub mod auth;
pub mod blobs;
pub mod commit;
pub mod config;
pub mod digest;
pub mod error;
pub mod fsmeta;
pub mod index;
pub mod layers;
pub mod manifest;
pub mod pack;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod store;
pub mod temp;
pub mod transfer;
pub mod unpack;

pub use archive::{load, save};
pub use auth::Credentials;
pub use commit::{commit, CommitOptions, Committed};
pub use config::RunConfig;
pub use digest::Digest;
pub use error::{Error, Result};
pub use index::{ImageRecord, LayerRecord};
pub use pack::IdShift;
pub use progress::{LayerProgress, Phase, Progress};
pub use reference::Reference;
pub use registry::ClientOptions;
pub use store::{Store, DEFAULT_ROOT};
pub use transfer::{pull, push};
