//! The image store under one root directory: blobs, unpacked layers, the image index, and the
//! lock that serialises changes. Layers are shared by every image that lists them and removed
//! with the last such image.
//!
//! Layout: `blobs/sha256/<hex>`, `layers/<diff-id hex>/diff`, `l/<short id>` → that diff,
//! `images.json`, `tmp/` (work in progress; cleared when found stale), `lock`.

use crate::blobs::Blobs;
use crate::config::{self, RunConfig};
use crate::digest::Digest;
use crate::error::{io, Error, Result};
use crate::index::{ImageRecord, Index, LayerRecord};
use crate::layers::Layers;
use crate::manifest::{self, Fetched};
use crate::progress::{LayerProgress, Phase, Progress};
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const DEFAULT_ROOT: &str = "/var/lib/cgsight";

/// Where blobs come from while an image is added (a registry, an unpacked archive).
pub trait BlobSource {
    fn fetch(
        &mut self,
        digest: &Digest,
        size: u64,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()>;
}

pub struct Store {
    root: PathBuf,
    blobs: Blobs,
    layers: Layers,
    tmp: PathBuf,
}

/// The store's exclusive lock, released on drop.
pub struct StoreLock {
    _file: File,
}

impl Store {
    pub fn open(root: &Path) -> Result<Self> {
        let tmp = root.join("tmp");
        for d in [
            root.join("blobs/sha256"),
            root.join("layers"),
            root.join("l"),
            tmp.clone(),
        ] {
            fs::create_dir_all(&d).map_err(io(format!("creating {}", d.display())))?;
        }
        let s = Store {
            root: root.to_path_buf(),
            blobs: Blobs::new(root.join("blobs/sha256"), tmp.clone()),
            layers: Layers::new(root.join("layers"), root.join("l"), tmp.clone()),
            tmp,
        };
        // Leftovers in tmp/ are from a process that died mid-way; clear them only when nobody
        // holds the lock, i.e. nobody is working there now.
        if let Some(_l) = s.try_lock()? {
            for e in fs::read_dir(&s.tmp).map_err(io("reading tmp"))?.flatten() {
                drop(crate::temp::TempPath::new(e.path())); // dropping removes it
            }
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }
    pub fn layers(&self) -> &Layers {
        &self.layers
    }
    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn lock_file(&self) -> Result<File> {
        let p = self.root.join("lock");
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io(format!("opening {}", p.display())))
    }

    /// Waits for the store lock: every change (and its temp files) happens under it.
    pub fn lock(&self) -> Result<StoreLock> {
        let f = self.lock_file()?;
        // SAFETY: f is an open descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io("locking the image store")(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(StoreLock { _file: f })
    }

    fn try_lock(&self) -> Result<Option<StoreLock>> {
        let f = self.lock_file()?;
        // SAFETY: f is an open descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Ok(None);
        }
        Ok(Some(StoreLock { _file: f }))
    }

    pub fn index(&self) -> Result<Index> {
        Index::load(&self.index_path())
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.index()?.images.into_values().collect())
    }

    /// An image by reference (`busybox`, `127.0.0.1:5000/a:b`) or manifest digest (prefix).
    pub fn image(&self, name: &str) -> Result<ImageRecord> {
        self.index()?
            .find(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchImage(name.into()))
    }

    pub fn config_bytes(&self, name: &str) -> Result<Vec<u8>> {
        self.blobs.read(&self.image(name)?.config)
    }

    /// Entrypoint, Cmd, Env, … of an image.
    pub fn inspect(&self, name: &str) -> Result<RunConfig> {
        config::parse(&self.config_bytes(name)?)
    }

    /// overlay's `lowerdir=` value for an image, top layer first.
    pub fn lowerdir(&self, name: &str) -> Result<String> {
        self.layers.lowerdir(&self.image(name)?.diff_ids())
    }

    /// The same layers as paths, for a mount through `fsconfig(lowerdir+)` one at a time.
    pub fn lower_paths(&self, name: &str) -> Result<Vec<PathBuf>> {
        Ok(self.layers.lower_paths(&self.image(name)?.diff_ids()))
    }

    /// Adds (or replaces) the image `reference` from a manifest whose blobs `source` provides;
    /// blobs and layers already present are not fetched again.
    pub fn ingest(
        &self,
        reference: &str,
        manifest_bytes: &[u8],
        media_type: &str,
        source: &mut dyn BlobSource,
        progress: Progress,
    ) -> Result<ImageRecord> {
        let _lock = self.lock()?;
        let info = match manifest::parse(manifest_bytes, media_type)? {
            Fetched::Manifest(m) => m,
            Fetched::Index(_) => {
                return Err(crate::error::format(
                    "manifest",
                    "an index where an image manifest was expected",
                ))
            }
        };
        let manifest = self.blobs.put_bytes(manifest_bytes)?;
        if !self.blobs.has(&info.config) {
            self.blobs.put_verified(&info.config, "image config", |w| {
                source.fetch(&info.config, info.config_size, w, &mut |_| {})
            })?;
        }
        let cfg = config::parse(&self.blobs.read(&info.config)?)?;
        if cfg.diff_ids.len() != info.layers.len() {
            return Err(crate::error::format(
                "image",
                format_args!(
                    "config lists {} layers, manifest {}",
                    cfg.diff_ids.len(),
                    info.layers.len()
                ),
            ));
        }
        let count = info.layers.len();
        let mut records = Vec::with_capacity(count);
        for (index, (layer, diff_id)) in info.layers.iter().zip(&cfg.diff_ids).enumerate() {
            let mut report = |phase, done, total| {
                progress(&LayerProgress {
                    index,
                    count,
                    digest: &layer.digest,
                    phase,
                    done,
                    total,
                });
            };
            if self.layers.has(diff_id) && self.blobs.has(&layer.digest) {
                tracing::debug!(layer = %layer.digest, "layer already in the store");
                report(Phase::Cached, layer.size, layer.size);
            } else {
                if !self.blobs.has(&layer.digest) {
                    let mut done = 0;
                    let what = format!("layer {}", layer.digest);
                    self.blobs.put_verified(&layer.digest, &what, |w| {
                        source.fetch(&layer.digest, layer.size, w, &mut |n| {
                            done += n;
                            report(Phase::Download, done, layer.size);
                        })
                    })?;
                }
                report(Phase::Unpack, 0, layer.size);
                if let Some(st) = self
                    .layers
                    .ensure(diff_id, &self.blobs.path(&layer.digest))?
                {
                    tracing::info!(layer = %layer.digest, entries = st.entries, bytes = st.bytes, "layer unpacked");
                }
                report(Phase::Done, layer.size, layer.size);
            }
            records.push(LayerRecord {
                blob: layer.clone(),
                diff_id: diff_id.clone(),
            });
        }
        let rec = ImageRecord {
            reference: reference.to_string(),
            manifest,
            manifest_media_type: manifest_media_type(manifest_bytes, media_type),
            config: info.config,
            layers: records,
        };
        self.put_record(rec.clone())?;
        Ok(rec)
    }

    /// Records an image in the index. An image it displaces from its reference stays, untagged,
    /// under its manifest digest (a container may still run on its layers) until removed.
    pub(crate) fn put_record(&self, rec: ImageRecord) -> Result<()> {
        let mut idx = self.index()?;
        let manifest = rec.manifest.clone();
        if let Some(mut old) = idx.images.insert(rec.reference.clone(), rec) {
            let still_named = idx.images.values().any(|r| r.manifest == old.manifest);
            if old.manifest != manifest && !still_named {
                old.reference = old.manifest.to_string();
                tracing::info!(image = %old.reference, "previous image of the reference kept untagged");
                idx.images.insert(old.reference.clone(), old);
            }
        }
        idx.save(&self.index_path())
    }

    /// Removes an image unless `in_use` says a container uses it (then only with `force`).
    /// Its layers and blobs go when no other image lists them.
    pub fn remove(
        &self,
        name: &str,
        force: bool,
        in_use: &dyn Fn(&ImageRecord) -> bool,
    ) -> Result<ImageRecord> {
        let _lock = self.lock()?;
        let mut idx = self.index()?;
        let rec = idx
            .find(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchImage(name.into()))?;
        if !force && in_use(&rec) {
            return Err(Error::InUse(rec.reference));
        }
        idx.images.remove(&rec.reference);
        idx.save(&self.index_path())?;
        self.collect(&idx, &rec)?;
        tracing::info!(image = %rec.reference, "image removed");
        Ok(rec)
    }

    /// Deletes the layers and blobs of `gone` that no image in `idx` references.
    fn collect(&self, idx: &Index, gone: &ImageRecord) -> Result<()> {
        let (layers, blobs) = idx.referenced();
        for d in gone.diff_ids() {
            if !layers.contains(&d) {
                self.layers.remove(&d)?;
            }
        }
        for b in gone.blobs() {
            if !blobs.contains(b) {
                self.blobs.remove(b)?;
            }
        }
        Ok(())
    }

    /// Gives an existing image another reference.
    pub fn tag(&self, name: &str, new_ref: &str) -> Result<ImageRecord> {
        let _lock = self.lock()?;
        let mut rec = self.image(name)?;
        rec.reference = crate::reference::Reference::parse(new_ref)?.to_string();
        self.put_record(rec.clone())?;
        Ok(rec)
    }
}

fn manifest_media_type(bytes: &[u8], given: &str) -> String {
    if !given.is_empty() && !given.starts_with("application/json") {
        return given.to_string();
    }
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| manifest::OCI_MANIFEST.to_string())
}
