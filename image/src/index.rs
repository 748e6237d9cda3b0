//! `images.json`: which references name which manifest, config and layer chain. Written to a
//! temp file and renamed, so readers never see half of it.

use crate::digest::Digest;
use crate::error::{io, Result};
use crate::manifest::LayerDesc;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One layer of an image: its blob as distributed and the digest of its uncompressed tar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    #[serde(flatten)]
    pub blob: LayerDesc,
    pub diff_id: Digest,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub reference: String,
    pub manifest: Digest,
    pub manifest_media_type: String,
    pub config: Digest,
    /// Base layer first, as in the manifest.
    pub layers: Vec<LayerRecord>,
}

impl ImageRecord {
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }
    /// Every blob this image needs: manifest, config, layer blobs.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.manifest, &self.config]
            .into_iter()
            .chain(self.layers.iter().map(|l| &l.blob.digest))
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Index {
    pub images: BTreeMap<String, ImageRecord>,
}

impl Index {
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| crate::error::format(path.display().to_string(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(io(format!("reading {}", path.display()))(e)),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let data =
            serde_json::to_vec_pretty(self).map_err(|e| crate::error::format("image index", e))?;
        let f = std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        std::io::Write::write_all(&mut &f, &data)
            .map_err(io(format!("writing {}", tmp.display())))?;
        f.sync_all()
            .map_err(io(format!("syncing {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(io(format!("replacing {}", path.display())))
    }

    /// Looks an image up by reference as given, as normalised, or by (a prefix of) its manifest digest.
    pub fn find(&self, name: &str) -> Option<&ImageRecord> {
        if let Some(r) = self.images.get(name) {
            return Some(r);
        }
        if let Ok(r) = crate::reference::Reference::parse(name) {
            if let Some(rec) = self.images.get(&r.to_string()) {
                return Some(rec);
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 6 {
            let mut hits = self
                .images
                .values()
                .filter(|r| r.manifest.hex().starts_with(hex));
            if let (Some(one), None) = (hits.next(), hits.next()) {
                return Some(one);
            }
        }
        None
    }

    /// Layers and blobs still used by some image: what a removal must keep.
    pub fn referenced(&self) -> (BTreeSet<Digest>, BTreeSet<Digest>) {
        let layers = self.images.values().flat_map(|r| r.diff_ids()).collect();
        let blobs = self
            .images
            .values()
            .flat_map(|r| r.blobs().cloned())
            .collect();
        (layers, blobs)
    }
}
