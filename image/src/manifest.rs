//! Manifests and indexes in both OCI and Docker schema2 form, read with `oci-spec`:
//! media types, picking linux/amd64 from an index, and the layer list of a manifest.

use crate::digest::Digest;
use crate::error::{format, Result};
use oci_spec::image::{ImageIndex, ImageManifest};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// One layer as a manifest names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerDesc {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// What a manifest says, reduced to what the store needs.
#[derive(Clone, Debug)]
pub struct ManifestInfo {
    pub config: Digest,
    pub config_size: u64,
    pub layers: Vec<LayerDesc>,
}

/// A fetched document is either an image manifest or an index (manifest list).
pub enum Fetched {
    Manifest(ManifestInfo),
    /// The digest of the index entry chosen for linux/amd64.
    Index(Digest),
}

fn digest_of(d: &oci_spec::image::Digest) -> Result<Digest> {
    Digest::parse(d.as_ref())
}

/// Reads a manifest or index; `media_type` is the Content-Type (may be empty), else the
/// document's own `mediaType`, else its shape decides.
pub fn parse(bytes: &[u8], media_type: &str) -> Result<Fetched> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format("manifest", e))?;
    let own = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    let mt = if media_type.is_empty() || media_type.starts_with("application/json") {
        own
    } else {
        media_type
    };
    let is_index = match mt {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        "" => v.get("manifests").is_some(),
        other => {
            return Err(format(
                "manifest",
                format_args!("unsupported media type {other}"),
            ))
        }
    };
    if is_index {
        let idx = ImageIndex::from_reader(bytes).map_err(|e| format("image index", e))?;
        return pick_platform(&idx).map(Fetched::Index);
    }
    let m = ImageManifest::from_reader(bytes).map_err(|e| format("image manifest", e))?;
    manifest_info(&m).map(Fetched::Manifest)
}

pub fn manifest_info(m: &ImageManifest) -> Result<ManifestInfo> {
    let layers = m
        .layers()
        .iter()
        .map(|l| {
            Ok(LayerDesc {
                digest: digest_of(l.digest())?,
                size: l.size(),
                media_type: l.media_type().to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ManifestInfo {
        config: digest_of(m.config().digest())?,
        config_size: m.config().size(),
        layers,
    })
}

/// The linux/amd64 image of an index (an entry without platform counts as a match only if alone).
pub fn pick_platform(idx: &ImageIndex) -> Result<Digest> {
    let entries = idx.manifests();
    let found = entries.iter().find(|d| {
        d.platform().as_ref().is_some_and(|p| {
            p.os().to_string() == "linux" && p.architecture().to_string() == "amd64"
        })
    });
    let found = match (found, entries.as_slice()) {
        (Some(f), _) => f,
        (None, [only]) if only.platform().is_none() => only,
        _ => return Err(format("image index", "no linux/amd64 image in it")),
    };
    digest_of(found.digest())
}

/// Layer compression told by media type, or by the first bytes if the type says nothing.
pub fn is_gzip(media_type: &str, head: &[u8]) -> bool {
    media_type.ends_with("gzip") || head.starts_with(&[0x1f, 0x8b])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_list_picks_amd64() {
        let d1 = Digest::of_bytes(b"arm");
        let d2 = Digest::of_bytes(b"amd");
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{d1}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{d2}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        match parse(doc.as_bytes(), DOCKER_LIST).unwrap() {
            Fetched::Index(d) => assert_eq!(d, d2),
            Fetched::Manifest(_) => panic!("index read as manifest"),
        }
        assert!(parse(b"{", "").is_err());
        assert!(parse(b"{}", "text/html").is_err());
    }
}
