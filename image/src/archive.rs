//! Image archives: `load` of a docker-archive (`manifest.json` + layer tars, as `docker save`
//! and skopeo write it) or an OCI image layout (tarball or directory), and `save` as a
//! docker-archive.

use crate::digest::{Digest, HashWriter};
use crate::error::{format, io, Result};
use crate::index::ImageRecord;
use crate::manifest::{self, Fetched, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{BlobSource, Store};
use crate::temp::{unique_path, TempPath};
use crate::unpack::safe_relative;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize, Deserialize)]
struct ArchiveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Blobs served from files of an unpacked archive, by digest.
struct FileSource(HashMap<Digest, PathBuf>);

impl BlobSource for FileSource {
    fn fetch(
        &mut self,
        d: &Digest,
        _size: u64,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let p = self
            .0
            .get(d)
            .ok_or_else(|| format("archive", format_args!("no blob {d} in it")))?;
        let mut f = File::open(p).map_err(io(format!("opening {}", p.display())))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(io(format!("reading {}", p.display())))?;
            let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                return Ok(());
            };
            out.write_all(chunk).map_err(io("writing blob"))?;
            progress(n as u64);
        }
    }
}

/// A file of the archive by its relative name, refusing names that leave the archive.
fn member(root: &Path, name: &str) -> Result<PathBuf> {
    let p = root.join(safe_relative(Path::new(name), "archive")?);
    let canon = p
        .canonicalize()
        .map_err(io(format!("archive member {name}")))?;
    let croot = root
        .canonicalize()
        .map_err(io(format!("archive {}", root.display())))?;
    if !canon.starts_with(&croot) {
        return Err(format(
            "archive",
            format_args!("member {name} points outside it"),
        ));
    }
    Ok(canon)
}

fn hash_file(p: &Path) -> Result<(Digest, u64, bool)> {
    let mut f = File::open(p).map_err(io(format!("opening {}", p.display())))?;
    let mut head = [0u8; 2];
    let gz = f.read_exact(&mut head).is_ok() && head == [0x1f, 0x8b];
    let mut f = File::open(p).map_err(io(format!("opening {}", p.display())))?;
    let mut w = HashWriter::new(std::io::sink());
    std::io::copy(&mut f, &mut w).map_err(io(format!("reading {}", p.display())))?;
    let (_, d, n) = w.finish();
    Ok((d, n, gz))
}

/// Extracts plain files, directories and in-archive symlinks of an archive tarball.
fn extract(tarball: &Path, dest: &Path) -> Result<()> {
    let f = File::open(tarball).map_err(io(format!("opening {}", tarball.display())))?;
    let mut a = tar::Archive::new(std::io::BufReader::new(f));
    let bad = |e: std::io::Error| format(tarball.display().to_string(), e);
    for e in a.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let rel = safe_relative(&e.path().map_err(bad)?, "archive")?;
        let p = dest.join(&rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        match e.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut out = File::create(&p).map_err(io(format!("creating {}", p.display())))?;
                std::io::copy(&mut e, &mut out).map_err(io(format!("writing {}", p.display())))?;
            }
            tar::EntryType::Symlink => {
                // Kept as a symlink; `member` refuses it later if it leads outside the archive.
                if let Some(t) = e.link_name().map_err(bad)? {
                    std::os::unix::fs::symlink(t, &p)
                        .map_err(io(format!("symlink {}", p.display())))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Loads every image of a docker-archive or OCI layout (tarball or directory). `reference`
/// names the image when the archive does not (or overrides the archive's one name).
pub fn load(
    store: &Store,
    path: &Path,
    reference: Option<&str>,
    progress: Progress,
) -> Result<Vec<ImageRecord>> {
    let staging;
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        staging = TempPath::new(unique_path(&std::env::temp_dir(), "cgsight-load"));
        fs::create_dir_all(staging.path()).map_err(io("creating the staging directory"))?;
        extract(path, staging.path())?;
        staging.path().to_path_buf()
    };
    if dir.join("manifest.json").is_file() {
        load_docker(store, &dir, reference, progress)
    } else if dir.join("index.json").is_file() {
        load_oci(store, &dir, reference, progress)
    } else {
        Err(format(
            path.display().to_string(),
            "neither a docker-archive (manifest.json) nor an OCI layout (index.json)",
        ))
    }
}

fn names(tags: &[String], given: Option<&str>) -> Result<Vec<String>> {
    match given {
        Some(g) => Ok(vec![Reference::parse(g)?.to_string()]),
        None if tags.is_empty() => Err(format(
            "archive",
            "the image has no name in it: give a reference",
        )),
        None => tags
            .iter()
            .map(|t| Reference::parse(t).map(|r| r.to_string()))
            .collect(),
    }
}

fn load_docker(
    store: &Store,
    dir: &Path,
    reference: Option<&str>,
    progress: Progress,
) -> Result<Vec<ImageRecord>> {
    let text = fs::read(dir.join("manifest.json")).map_err(io("reading manifest.json"))?;
    let entries: Vec<ArchiveEntry> =
        serde_json::from_slice(&text).map_err(|e| format("manifest.json", e))?;
    let mut out = Vec::new();
    for e in entries {
        let mut files = HashMap::new();
        let cpath = member(dir, &e.config)?;
        let (cd, csize, _) = hash_file(&cpath)?;
        files.insert(cd.clone(), cpath);
        let mut layers = Vec::new();
        for l in &e.layers {
            let p = member(dir, l)?;
            let (d, size, gz) = hash_file(&p)?;
            let mt = if gz { OCI_LAYER_GZIP } else { OCI_LAYER_TAR };
            layers.push(serde_json::json!({"mediaType": mt, "digest": d, "size": size}));
            files.insert(d, p);
        }
        // The archive has no manifest of its own: write the OCI one it implies.
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": csize},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&m).map_err(|e| format("manifest", e))?;
        let mut src = FileSource(files);
        for name in names(e.repo_tags.as_deref().unwrap_or_default(), reference)? {
            out.push(store.ingest(&name, &bytes, OCI_MANIFEST, &mut src, &mut *progress)?);
        }
    }
    Ok(out)
}

fn oci_blob(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(d.hex())
}

fn load_oci(
    store: &Store,
    dir: &Path,
    reference: Option<&str>,
    progress: Progress,
) -> Result<Vec<ImageRecord>> {
    let idx = oci_spec::image::ImageIndex::from_file(dir.join("index.json"))
        .map_err(|e| format("index.json", e))?;
    let mut out = Vec::new();
    for desc in idx.manifests() {
        let mut d = Digest::parse(desc.digest().as_ref())?;
        let mut bytes = fs::read(oci_blob(dir, &d)).map_err(io(format!("reading blob {d}")))?;
        if let Fetched::Index(inner) = manifest::parse(&bytes, desc.media_type().as_ref())? {
            d = inner;
            bytes = fs::read(oci_blob(dir, &d)).map_err(io(format!("reading blob {d}")))?;
        }
        if Digest::of_bytes(&bytes) != d {
            return Err(crate::error::Error::DigestMismatch {
                what: "manifest in the OCI layout".into(),
                expected: d.to_string(),
                actual: Digest::of_bytes(&bytes).to_string(),
            });
        }
        let tag = desc
            .annotations()
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.ref.name"))
            .filter(|n| n.contains('/'))
            .cloned();
        let info = match manifest::parse(&bytes, "")? {
            Fetched::Manifest(m) => m,
            Fetched::Index(_) => return Err(format("OCI layout", "nested index")),
        };
        let mut files: HashMap<Digest, PathBuf> = HashMap::new();
        for b in std::iter::once(&info.config).chain(info.layers.iter().map(|l| &l.digest)) {
            files.insert(b.clone(), oci_blob(dir, b));
        }
        let mut src = FileSource(files);
        for name in names(tag.as_slice(), reference)? {
            out.push(store.ingest(&name, &bytes, "", &mut src, &mut *progress)?);
        }
    }
    Ok(out)
}

fn append_file(tar: &mut tar::Builder<impl Write>, name: &str, path: &Path) -> Result<()> {
    let mut f = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    tar.append_file(name, &mut f)
        .map_err(io(format!("writing {name} to the archive")))
}

/// Writes the named images as one docker-archive (uncompressed layer tars, as docker loads them).
pub fn save(store: &Store, names: &[&str], out: impl Write) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    let mut entries = Vec::new();
    let mut written = std::collections::HashSet::new();
    for name in names {
        let rec = store.image(name)?;
        let cname = format!("{}.json", rec.config.hex());
        if written.insert(cname.clone()) {
            append_file(&mut tar, &cname, &store.blobs().path(&rec.config))?;
        }
        let mut layers = Vec::new();
        for l in &rec.layers {
            let lname = format!("{}.tar", l.diff_id.hex());
            if written.insert(lname.clone()) {
                let blob = store.blobs().path(&l.blob.digest);
                if l.blob.digest == l.diff_id {
                    append_file(&mut tar, &lname, &blob)?;
                } else {
                    // A tar header needs the size first: decompress to a temp file.
                    let tmp = TempPath::new(unique_path(&std::env::temp_dir(), "cgsight-save"));
                    let src =
                        File::open(&blob).map_err(io(format!("opening {}", blob.display())))?;
                    let mut dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(src));
                    let mut w = File::create(tmp.path()).map_err(io("creating a temp file"))?;
                    std::io::copy(&mut dec, &mut w)
                        .map_err(io(format!("decompressing {}", l.blob.digest)))?;
                    append_file(&mut tar, &lname, tmp.path())?;
                }
            }
            layers.push(lname);
        }
        entries.push(ArchiveEntry {
            config: cname,
            repo_tags: Some(vec![rec.reference.clone()]),
            layers,
        });
    }
    let m = serde_json::to_vec(&entries).map_err(|e| format("manifest.json", e))?;
    let mut h = tar::Header::new_gnu();
    h.set_size(m.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, "manifest.json", m.as_slice())
        .map_err(io("writing manifest.json"))?;
    tar.into_inner()
        .map_err(io("finishing the archive"))?
        .flush()
        .map_err(io("flushing the archive"))
}
