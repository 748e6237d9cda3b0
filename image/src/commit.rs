//! Commit: an overlay upper directory on top of a stored image becomes a new image — one new
//! gzip layer (overlay whiteouts turned back into `.wh.` entries), a config with the layer's
//! diff_id and a history entry appended, and a manifest.

use crate::digest::{Digest, HashWriter};
use crate::error::{format, io, Result};
use crate::index::{ImageRecord, LayerRecord};
use crate::manifest::{
    LayerDesc, DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP,
    OCI_MANIFEST,
};
use crate::pack::{pack_upper, IdShift, PackStats};
use crate::reference::Reference;
use crate::store::Store;
use serde_json::{json, Value};
use std::path::Path;

#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    /// Goes into the history entry as `comment`.
    pub comment: Option<String>,
    pub author: Option<String>,
    /// What made the layer (`created_by`); "cgsight commit" if None.
    pub created_by: Option<String>,
    /// The container's id range (`--userns auto`): owners are stored shifted into it.
    pub id_shift: Option<IdShift>,
    /// Files the runtime created only to mount over (relative to the root): not committed
    /// while empty.
    pub mountpoints: Vec<std::path::PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Committed {
    pub image: ImageRecord,
    pub layer: LayerRecord,
    pub stats: PackStats,
}

/// UTC RFC 3339 time of `secs` since the epoch (civil-from-days, proleptic Gregorian).
pub fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn now() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(i64::try_from(s).unwrap_or(0))
}

/// The parent's config with one more layer: rootfs.diff_ids and history appended, `created` set.
/// Worked on as JSON so fields this crate does not model survive.
pub fn extend_config(
    parent: &[u8],
    diff_id: &Digest,
    created: &str,
    opts: &CommitOptions,
) -> Result<Vec<u8>> {
    let mut c: Value = serde_json::from_slice(parent).map_err(|e| format("parent config", e))?;
    let obj = c
        .as_object_mut()
        .ok_or_else(|| format("parent config", "not a JSON object"))?;
    obj.insert("created".into(), json!(created));
    if let Some(a) = &opts.author {
        obj.insert("author".into(), json!(a));
    }
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    let ids = rootfs
        .get_mut("diff_ids")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| format("parent config", "rootfs.diff_ids is not a list"))?;
    ids.push(json!(diff_id));
    let mut h = json!({"created": created, "created_by": opts.created_by.as_deref().unwrap_or("cgsight commit")});
    if let Some(cm) = &opts.comment {
        h["comment"] = json!(cm);
    }
    if let Some(a) = &opts.author {
        h["author"] = json!(a);
    }
    match obj.get_mut("history").and_then(Value::as_array_mut) {
        Some(hist) => hist.push(h),
        None => {
            obj.insert("history".into(), json!([h]));
        }
    }
    serde_json::to_vec(&c).map_err(|e| format("config", e))
}

/// Commits `upper` on top of the stored image `parent` as `new_ref`.
pub fn commit(
    store: &Store,
    upper: &Path,
    parent: &str,
    new_ref: &str,
    opts: &CommitOptions,
) -> Result<Committed> {
    let target = Reference::parse(new_ref)?.to_string();
    let base = store.image(parent)?;
    let _lock = store.lock()?;
    // tar → diff_id hash → gzip → compressed-digest hash (the blob store's) → file.
    let mut stats = PackStats::default();
    let mut diff_id = None;
    let (digest, size) = store.blobs().put_computed(|w| {
        let gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
        let (hw, st) = pack_upper(upper, HashWriter::new(gz), opts.id_shift, &opts.mountpoints)?;
        let (gz, d, _) = hw.finish();
        gz.finish().map_err(io("compressing the layer"))?;
        stats = st;
        diff_id = Some(d);
        Ok(())
    })?;
    let diff_id = diff_id.ok_or_else(|| format("commit", "layer was not written"))?;
    // Docker-typed parents keep docker types so the result stays one consistent schema.
    let docker = base.manifest_media_type == DOCKER_MANIFEST;
    let (mt_manifest, mt_config, mt_layer) = if docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP)
    } else {
        (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP)
    };
    let created = now();
    let config = extend_config(&store.blobs().read(&base.config)?, &diff_id, &created, opts)?;
    let config_digest = store.blobs().put_bytes(&config)?;
    let layer = LayerRecord {
        blob: LayerDesc {
            digest: digest.clone(),
            size,
            media_type: mt_layer.into(),
        },
        diff_id: diff_id.clone(),
    };
    let mut layers: Vec<Value> = base
        .layers
        .iter()
        .map(|l| json!({"mediaType": l.blob.media_type, "digest": l.blob.digest, "size": l.blob.size}))
        .collect();
    layers.push(json!({"mediaType": mt_layer, "digest": digest, "size": size}));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": mt_manifest,
        "config": {"mediaType": mt_config, "digest": config_digest, "size": config.len()},
        "layers": layers,
    });
    let mbytes = serde_json::to_vec(&manifest).map_err(|e| format("manifest", e))?;
    let manifest_digest = store.blobs().put_bytes(&mbytes)?;
    store
        .layers()
        .ensure(&diff_id, &store.blobs().path(&digest))?;
    let mut all = base.layers.clone();
    all.push(layer.clone());
    let image = ImageRecord {
        reference: target,
        manifest: manifest_digest,
        manifest_media_type: mt_manifest.into(),
        config: config_digest,
        layers: all,
    };
    store.put_record(image.clone())?;
    tracing::info!(image = %image.reference, layer = %layer.blob.digest, entries = stats.entries, whiteouts = stats.whiteouts, "committed");
    Ok(Committed {
        image,
        layer,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_points() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn config_gets_layer_and_history_and_keeps_unknown_fields() {
        let parent = br#"{"architecture":"amd64","os":"linux","x-extra":1,"rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
        let d = Digest::of_bytes(b"l");
        let out = extend_config(
            parent,
            &d,
            "2026-01-01T00:00:00Z",
            &CommitOptions {
                comment: Some("c".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["rootfs"]["diff_ids"][0], json!(d));
        assert_eq!(v["history"][0]["comment"], "c");
        assert_eq!(v["x-extra"], 1);
        assert!(extend_config(b"[]", &d, "t", &CommitOptions::default()).is_err());
    }
}
