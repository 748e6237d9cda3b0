//! Hand-built container images for tests: layer tars (whiteouts as plain `.wh.` files), OCI
//! layouts of gzip layers, a three-layer test image with a deleted file and directory, an opaque
//! directory and a file replaced by a directory, the merged tree it must give, a walk of a
//! tree, and skopeo copies to the loopback registry of [`crate::registry`].
//! Test code: panics on any failure.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use crate::registry::Registry;
use crate::TempDir;

/// One entry of a hand-written layer.
pub enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    /// path, content, mode, uid, gid, xattr (name, value)
    Owned(
        &'a str,
        &'a [u8],
        u32,
        u64,
        u64,
        Option<(&'a str, &'a [u8])>,
    ),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
}

/// A layer tar from entries, in the given order (whiteouts are plain `.wh.` files).
pub fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            E::Dir(p, m) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*m);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::File(p, d, m) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*m);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, p, *d).unwrap();
            }
            E::Owned(p, d, m, u, g, x) => {
                if let Some((k, v)) = x {
                    let key = format!("SCHILY.xattr.{k}");
                    b.append_pax_extensions([(key.as_str(), *v)]).unwrap();
                }
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*m);
                h.set_uid(*u);
                h.set_gid(*g);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, p, *d).unwrap();
            }
            E::Sym(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::Hard(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Writes `data` as a blob of the OCI layout at `dir`.
pub fn put_blob(dir: &Path, data: &[u8]) -> (String, usize) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let hex = sha256_hex(data);
    fs::write(blobs.join(&hex), data).unwrap();
    (format!("sha256:{hex}"), data.len())
}

/// Lowercase hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes the blobs of one image of gzip layers for `arch`; returns its manifest's digest and size.
pub fn write_oci_image(dir: &Path, layers: &[Vec<u8>], cmd: &str, arch: &str) -> (String, usize) {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    for l in layers {
        diff_ids.push(format!("sha256:{}", sha256_hex(l)));
        let (d, n) = put_blob(dir, &gzip(l));
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n}));
        history.push(serde_json::json!({"created_by": "test"}));
    }
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox"], "Cmd": [cmd], "Env": ["PATH=/bin"], "WorkingDir": "/keep",
                   "User": "1000:1000", "StopSignal": "SIGINT", "ExposedPorts": {"8080/tcp": {}}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    let (cd, cn) = put_blob(dir, &serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
        "layers": descs,
    });
    put_blob(dir, &serde_json::to_vec(&manifest).unwrap())
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The layout's `index.json` naming one manifest or index as tag "latest", and `oci-layout`.
pub fn write_index_json(dir: &Path, media_type: &str, digest: &str, size: usize) {
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": media_type, "digest": digest, "size": size,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// An OCI image layout directory holding one image of gzip layers; returns its manifest digest.
pub fn write_oci_layout(dir: &Path, layers: &[Vec<u8>], cmd: &str) -> String {
    let (md, mn) = write_oci_image(dir, layers, cmd, "amd64");
    write_index_json(dir, OCI_MANIFEST, &md, mn);
    md
}

/// The base layer: busybox plus files the upper layers delete, hide and replace.
pub fn base_layer() -> Vec<u8> {
    let busybox = fs::read("/bin/busybox").expect("busybox-static (scripts/install-deps.sh)");
    layer_tar(&[
        E::Dir("bin", 0o755),
        E::File("bin/busybox", &busybox, 0o755),
        E::Sym("bin/sh", "busybox"),
        E::Dir("etc", 0o755),
        E::File("etc/hostname", b"base\n", 0o644),
        E::Dir("keep", 0o755),
        E::Owned(
            "keep/a.txt",
            b"kept\n",
            0o4755,
            1000,
            1001,
            Some(("user.cgsight", b"v1")),
        ),
        E::Hard("keep/hard", "keep/a.txt"),
        E::Sym("keep/sym", "/keep/a.txt"),
        E::File("del-file.txt", b"gone\n", 0o644),
        E::Dir("del-dir", 0o755),
        E::Dir("del-dir/sub", 0o755),
        E::File("del-dir/sub/y", b"y", 0o644),
        E::Dir("opq", 0o755),
        E::File("opq/old1", b"1", 0o644),
        E::File("opq/old2", b"2", 0o644),
        E::File("repl", b"a file at first", 0o644),
    ])
}

/// Deletes a file and a directory, makes `opq` opaque, replaces the file `repl` by a directory.
pub fn middle_layer() -> Vec<u8> {
    layer_tar(&[
        E::File(".wh.del-file.txt", b"", 0o644),
        E::File(".wh.del-dir", b"", 0o644),
        E::Dir("opq", 0o755),
        E::File("opq/.wh..wh..opq", b"", 0o644),
        E::File("opq/new1", b"new", 0o644),
        E::Dir("repl", 0o700),
        E::File("repl/inside", b"in", 0o600),
    ])
}

pub fn top_layer(tag: &[u8]) -> Vec<u8> {
    layer_tar(&[
        E::File("top.txt", tag, 0o644),
        E::Dir("etc", 0o755),
        E::File("etc/hostname", b"top\n", 0o644),
    ])
}

/// What the merged tree of base+middle+top must be: path → kind and content or link target.
pub fn expected_tree() -> BTreeMap<String, String> {
    let bb = format!("file:{}", fs::metadata("/bin/busybox").unwrap().len());
    [
        ("bin", "dir".to_string()),
        ("bin/busybox", bb),
        ("bin/sh", "sym:busybox".into()),
        ("etc", "dir".into()),
        ("etc/hostname", "file:top\n".into()),
        ("keep", "dir".into()),
        ("keep/a.txt", "file:kept\n".into()),
        ("keep/hard", "file:kept\n".into()),
        ("keep/sym", "sym:/keep/a.txt".into()),
        ("opq", "dir".into()),
        ("opq/new1", "file:new".into()),
        ("repl", "dir".into()),
        ("repl/inside", "file:in".into()),
        ("top.txt", "file:v1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Walks a tree: path → "dir", "sym:<target>", "file:<content>" (busybox by size), "chr:M:m".
pub fn walk(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let v = if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!("sym:{}", fs::read_link(&p).unwrap().display())
            } else if m.file_type().is_char_device() {
                format!("chr:{}", m.rdev())
            } else if m.len() > 1000 {
                format!("file:{}", m.len())
            } else {
                format!("file:{}", String::from_utf8_lossy(&fs::read(&p).unwrap()))
            };
            out.insert(rel, v);
        }
    }
    out
}

/// Copies with skopeo, only between local paths and the loopback registry.
pub fn skopeo_copy(src: &str, dst: &str) {
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .args([src, dst])
        .output()
        .expect("skopeo (scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "skopeo copy {src} {dst}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the three-layer test image as an OCI layout under `dir`.
pub fn test_image(dir: &Path, top: &[u8]) -> String {
    write_oci_layout(dir, &[base_layer(), middle_layer(), top_layer(top)], "sh")
}

/// Builds the three-layer test image and pushes it with skopeo as `<registry>/<repo>`.
pub fn push_test_image(reg: &Registry, repo: &str) -> String {
    let oci = TempDir::new("img-oci-push");
    test_image(oci.path(), b"v1");
    let name = format!("{}/{repo}", reg.addr);
    skopeo_copy(
        &format!("oci:{}:latest", oci.path().display()),
        &format!("docker://{name}"),
    );
    name
}
