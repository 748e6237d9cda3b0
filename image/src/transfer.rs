//! Pull from and push to a registry: the store's images in and out over the v2 API.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::index::ImageRecord;
use crate::manifest::{self, Fetched};
use crate::progress::{LayerProgress, Phase, Progress};
use crate::reference::Reference;
use crate::registry::{ClientOptions, RegistryClient};
use crate::store::{BlobSource, Store};
use std::io::Write;

struct RegistrySource<'a>(&'a RegistryClient);

impl BlobSource for RegistrySource<'_> {
    fn fetch(
        &mut self,
        digest: &Digest,
        size: u64,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        // The store verifies the digest of what was written; the client only streams.
        self.0
            .get_blob(digest, (size > 0).then_some(size), out, progress)
            .map(|_| ())
    }
}

/// Pulls `reference` (tag or digest; linux/amd64 from an index) into the store under its
/// normalised name; layers already in the store are neither downloaded nor unpacked again.
pub fn pull(
    store: &Store,
    reference: &str,
    opts: &ClientOptions,
    progress: Progress,
) -> Result<ImageRecord> {
    let r = Reference::parse(reference)?;
    let client = RegistryClient::new(&r, opts, false)?;
    let (mut bytes, mut media, _) = client.get_manifest(&r.manifest_ref())?;
    if let Fetched::Index(d) = manifest::parse(&bytes, &media)? {
        tracing::debug!(manifest = %d, "index resolved to linux/amd64");
        (bytes, media, _) = client.get_manifest(d.as_str())?;
    }
    tracing::info!(image = %r, "pulling");
    store.ingest(
        &r.to_string(),
        &bytes,
        &media,
        &mut RegistrySource(&client),
        progress,
    )
}

/// Pushes the stored image `name` as `target` (tag or digest); blobs the registry has are skipped.
pub fn push(
    store: &Store,
    name: &str,
    target: &str,
    opts: &ClientOptions,
    progress: Progress,
) -> Result<Digest> {
    let rec = store.image(name)?;
    let t = Reference::parse(target)?;
    let client = RegistryClient::new(&t, opts, true)?;
    let count = rec.layers.len();
    for (index, l) in rec.layers.iter().enumerate() {
        let d = &l.blob.digest;
        let mut report = |phase| {
            progress(&LayerProgress {
                index,
                count,
                digest: d,
                phase,
                done: 0,
                total: l.blob.size,
            })
        };
        if client.blob_exists(d)? {
            report(Phase::Exists);
            continue;
        }
        report(Phase::Upload);
        client.put_blob(d, &store.blobs().path(d))?;
        report(Phase::Done);
    }
    if !client.blob_exists(&rec.config)? {
        client.put_blob(&rec.config, &store.blobs().path(&rec.config))?;
    }
    let bytes = store.blobs().read(&rec.manifest)?;
    let tag = t.tag.clone().unwrap_or_else(|| rec.manifest.to_string());
    if let Some(want) = &t.digest {
        if want != &rec.manifest {
            return Err(Error::DigestMismatch {
                what: format!("push target {target}"),
                expected: want.to_string(),
                actual: rec.manifest.to_string(),
            });
        }
    }
    client.put_manifest(&tag, &rec.manifest_media_type, &bytes)?;
    tracing::info!(image = %rec.reference, target = %t, digest = %rec.manifest, "pushed");
    Ok(rec.manifest)
}
