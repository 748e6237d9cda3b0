//! Store tests on real files and real overlay mounts: load of OCI layouts and skopeo
//! docker-archives, layer sharing and removal, commit, unsafe layers, long lowerdir strings.

mod support;

use cgsight_image::{commit, load, save, CommitOptions, Error, Store};
use cgsight_testkit::{require_root, TempDir};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use support::*;

fn load_test_image(store: &Store, name: &str, top: &[u8]) -> cgsight_image::ImageRecord {
    let dir = TempDir::new(&format!("img-oci-{}", top.len()));
    test_image(dir.path(), top);
    let mut recs = load(store, dir.path(), Some(name), &mut |_| {}).unwrap();
    assert_eq!(recs.len(), 1);
    recs.remove(0)
}

#[test]
fn loaded_image_mounts_as_the_exact_merged_tree() {
    require_root!();
    let (_d, store) = temp_store("img-merge");
    let rec = load_test_image(&store, "test/merge:v1", b"v1");
    assert_eq!(rec.reference, "docker.io/test/merge:v1");
    assert_eq!(rec.layers.len(), 3);
    // Whiteouts and the opaque marker are in overlay's form inside the stored layers.
    let mid = store.layers().diff_dir(&rec.layers[1].diff_id);
    let wh = fs::symlink_metadata(mid.join("del-dir")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        cgsight_image::fsmeta::get_xattr(&mid.join("opq"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    let ovl = mount_overlay(&store.lowerdir("test/merge:v1").unwrap());
    assert_eq!(walk(&ovl.merged), expected_tree());
    // Metadata survives: set-uid mode, owner, xattr, hard link.
    let a = fs::symlink_metadata(ovl.merged.join("keep/a.txt")).unwrap();
    assert_eq!((a.mode() & 0o7777, a.uid(), a.gid()), (0o4755, 1000, 1001));
    assert_eq!(a.mtime(), 1_700_000_000);
    assert_eq!(
        a.ino(),
        fs::symlink_metadata(ovl.merged.join("keep/hard"))
            .unwrap()
            .ino()
    );
    let x =
        cgsight_image::fsmeta::get_xattr(&ovl.merged.join("keep/a.txt"), "user.cgsight").unwrap();
    assert_eq!(x.as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        fs::symlink_metadata(ovl.merged.join("repl"))
            .unwrap()
            .mode()
            & 0o777,
        0o700
    );
    let cfg = store.inspect("test/merge:v1").unwrap();
    assert_eq!(cfg.entrypoint, ["/bin/busybox"]);
    assert_eq!(cfg.cmd, ["sh"]);
    assert_eq!(cfg.env, ["PATH=/bin"]);
    assert_eq!(cfg.working_dir.as_deref(), Some("/keep"));
    assert_eq!(cfg.user.as_deref(), Some("1000:1000"));
    assert_eq!(cfg.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(cfg.exposed_ports, ["8080/tcp"]);
}

#[test]
fn images_sharing_a_base_store_it_once_and_free_it_with_the_last() {
    require_root!();
    let (_d, store) = temp_store("img-share");
    let a = load_test_image(&store, "test/a", b"aaaa");
    let b = load_test_image(&store, "test/b", b"bbbbbbbb");
    assert_eq!(a.layers[0].diff_id, b.layers[0].diff_id);
    assert_ne!(a.layers[2].diff_id, b.layers[2].diff_id);
    // base + middle shared, two tops.
    assert_eq!(store.layers().count().unwrap(), 4);
    assert_eq!(count(&store.root().join("l")), 4);
    let (blobs, bytes) = store.blobs().usage().unwrap();
    // 4 layer blobs + 2 configs + 2 manifests; the busybox layer's bytes are counted once.
    assert_eq!(blobs, 8);
    let base = a.layers[0].blob.size;
    assert!(
        bytes < 2 * base,
        "{bytes} bytes of blobs hold the {base}-byte base layer twice"
    );
    store.remove("test/a", false, &|_| false).unwrap();
    assert_eq!(store.layers().count().unwrap(), 3);
    assert!(store.layers().has(&a.layers[0].diff_id));
    let err = store
        .remove("test/b", false, &|r| r.reference.ends_with("test/b:latest"))
        .unwrap_err();
    assert!(matches!(err, Error::InUse(_)), "{err}");
    assert!(store.image("test/b").is_ok());
    store.remove("test/b", false, &|_| false).unwrap();
    assert_eq!(store.layers().count().unwrap(), 0);
    assert_eq!(store.blobs().usage().unwrap().0, 0);
    assert_eq!(count(&store.root().join("l")), 0);
    assert!(matches!(
        store.remove("test/b", false, &|_| false),
        Err(Error::NoSuchImage(_))
    ));
}

#[test]
fn commit_turns_upper_whiteouts_into_wh_entries() {
    require_root!();
    let (_d, store) = temp_store("img-commit");
    let parent = load_test_image(&store, "test/parent", b"v1");
    let upper_tree;
    {
        let ovl = mount_overlay(&store.lowerdir("test/parent").unwrap());
        fs::write(ovl.merged.join("new.txt"), b"made in the container").unwrap();
        fs::remove_file(ovl.merged.join("keep/a.txt")).unwrap();
        fs::remove_dir_all(ovl.merged.join("opq")).unwrap();
        fs::create_dir(ovl.merged.join("opq")).unwrap();
        fs::write(ovl.merged.join("opq/fresh"), b"f").unwrap();
        drop(ovl.merged.clone());
        upper_tree = ovl;
    }
    let c = commit(
        &store,
        &upper_tree.upper,
        "test/parent",
        "test/child:1",
        &CommitOptions {
            comment: Some("t".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(c.image.layers.len(), 4);
    assert_eq!(&c.image.layers[..3], &parent.layers[..]);
    // Read the new layer's tar back: the file, the whiteout, the opaque marker.
    let blob = fs::File::open(store.blobs().path(&c.layer.blob.digest)).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let names: Vec<String> = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in ["new.txt", "keep/.wh.a.txt", "opq/.wh..wh..opq", "opq/fresh"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let cfg = store.inspect("test/child:1").unwrap();
    assert_eq!(cfg.diff_ids.last(), Some(&c.layer.diff_id));
    assert_eq!(cfg.cmd, ["sh"]);
    drop(upper_tree);
    let ovl = mount_overlay(&store.lowerdir("test/child:1").unwrap());
    let tree = walk(&ovl.merged);
    assert_eq!(
        tree.get("new.txt").map(String::as_str),
        Some("file:made in the container")
    );
    assert!(!tree.contains_key("keep/a.txt"));
    assert_eq!(
        tree.get("keep/hard").map(String::as_str),
        Some("file:kept\n")
    );
    assert!(!tree.contains_key("opq/new1"));
    assert!(tree.contains_key("opq/fresh"));
}

#[test]
fn skopeo_docker_archive_loads_like_the_oci_layout_and_save_round_trips() {
    require_root!();
    let (_d, store) = temp_store("img-archive");
    let oci = TempDir::new("img-oci-src");
    test_image(oci.path(), b"v1");
    let tarball = oci.path().with_extension("tar");
    let _cleanup = TempPathFile(tarball.clone());
    skopeo_copy(
        &format!("oci:{}:latest", oci.path().display()),
        &format!("docker-archive:{}:test/skopeo:v1", tarball.display()),
    );
    let from_archive = load(&store, &tarball, None, &mut |_| {}).unwrap();
    assert_eq!(from_archive.len(), 1);
    assert_eq!(from_archive[0].reference, "docker.io/test/skopeo:v1");
    let from_oci = load(&store, oci.path(), Some("test/oci:v1"), &mut |_| {}).unwrap();
    assert_eq!(from_archive[0].diff_ids(), from_oci[0].diff_ids());
    assert_eq!(
        store.layers().count().unwrap(),
        3,
        "the same layers are stored once"
    );
    let ovl = mount_overlay(&store.lowerdir("test/skopeo:v1").unwrap());
    assert_eq!(walk(&ovl.merged), expected_tree());
    // save → load into another store gives the same layers and config.
    let out = oci.path().join("saved.tar");
    save(&store, &["test/oci:v1"], fs::File::create(&out).unwrap()).unwrap();
    let (_d2, other) = temp_store("img-archive2");
    let back = load(&other, &out, None, &mut |_| {}).unwrap();
    assert_eq!(back[0].reference, "docker.io/test/oci:v1");
    assert_eq!(back[0].diff_ids(), from_oci[0].diff_ids());
    assert_eq!(back[0].config, from_oci[0].config);
}

#[test]
fn zstd_layers_recompressed_by_skopeo_load_like_gzip() {
    require_root!();
    let (_d, store) = temp_store("img-zstd");
    let gz = TempDir::new("img-oci-gz");
    test_image(gz.path(), b"v1");
    let zst = TempDir::new("img-oci-zst");
    let o = std::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-compress-format",
            "zstd",
        ])
        .arg(format!("oci:{}:latest", gz.path().display()))
        .arg(format!("oci:{}/layout:latest", zst.path().display()))
        .output()
        .expect("skopeo (scripts/install-deps.sh)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Every layer blob skopeo wrote is zstd (its magic number), not gzip.
    let blobs = zst.path().join("layout/blobs/sha256");
    let zstd_blobs = fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .filter(|e| {
            fs::read(e.path())
                .unwrap()
                .starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        })
        .count();
    assert_eq!(zstd_blobs, 3, "three zstd layers");
    let recs = load(
        &store,
        &zst.path().join("layout"),
        Some("test/zstd:v1"),
        &mut |_| {},
    )
    .unwrap();
    let from_gz = load(&store, gz.path(), Some("test/gz:v1"), &mut |_| {}).unwrap();
    // Same uncompressed layers: stored once, whatever the compression.
    assert_eq!(recs[0].diff_ids(), from_gz[0].diff_ids());
    assert_eq!(store.layers().count().unwrap(), 3);
    let ovl = mount_overlay(&store.lowerdir("test/zstd:v1").unwrap());
    assert_eq!(walk(&ovl.merged), expected_tree());
}

struct TempPathFile(std::path::PathBuf);
impl Drop for TempPathFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn corrupted_blob_is_refused_and_leaves_nothing() {
    require_root!();
    let (_d, store) = temp_store("img-corrupt");
    let oci = TempDir::new("img-oci-bad");
    test_image(oci.path(), b"v1");
    corrupt_largest(
        fs::read_dir(oci.path().join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    let err = load(&store, oci.path(), Some("test/bad"), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("digest mismatch") && !err.contains('\n'),
        "{err}"
    );
    assert_no_partial(&store);
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn wrong_diff_id_leaves_no_layer() {
    require_root!();
    let (_d, store) = temp_store("img-diffid");
    let oci = TempDir::new("img-oci-diffid");
    write_oci_layout(oci.path(), &[top_layer(b"x")], "sh");
    let cfg_path = fs::read_dir(oci.path().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            fs::read_to_string(p)
                .map(|s| s.contains("diff_ids"))
                .unwrap_or(false)
        })
        .unwrap();
    let _ = cfg_path;
    let layout2 = TempDir::new("img-oci-diffid2");
    write_oci_layout(layout2.path(), &[top_layer(b"y")], "sh");
    // Point the first layout's manifest at the second layout's config, whose diff_id is wrong.
    let m_of = |dir: &Path| -> serde_json::Value {
        let idx: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        let d = idx["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(d)).unwrap()).unwrap()
    };
    let mut m = m_of(oci.path());
    let m2 = m_of(layout2.path());
    let c2 = m2["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    fs::copy(
        layout2.path().join("blobs/sha256").join(&c2),
        oci.path().join("blobs/sha256").join(&c2),
    )
    .unwrap();
    m["config"] = m2["config"].clone();
    let bytes = serde_json::to_vec(&m).unwrap();
    let d = cgsight_image::Digest::of_bytes(&bytes);
    fs::write(oci.path().join("blobs/sha256").join(d.hex()), &bytes).unwrap();
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": bytes.len()}]});
    fs::write(
        oci.path().join("index.json"),
        serde_json::to_vec(&idx).unwrap(),
    )
    .unwrap();
    let err = load(&store, oci.path(), Some("test/diffid"), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("diff_id"), "{err}");
    assert_no_partial(&store);
}

/// A tar entry written byte by byte: the tar crate refuses to write the names these tests need.
fn raw_entry(name: &str, kind: tar::EntryType, link: &str) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(kind);
    h.set_cksum();
    h.as_bytes().to_vec()
}

#[test]
fn unsafe_layer_paths_are_refused() {
    require_root!();
    let end = [0u8; 1024];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            [
                raw_entry("a/../../escape", tar::EntryType::Regular, ""),
                end.to_vec(),
            ]
            .concat(),
        ),
        (
            "absolute",
            [
                raw_entry("/escape", tar::EntryType::Regular, ""),
                end.to_vec(),
            ]
            .concat(),
        ),
        (
            "symlink",
            [layer_tar(&[
                E::Sym("ln", "/tmp"),
                E::File("ln/escape", b"x", 0o644),
            ])]
            .concat(),
        ),
        (
            "hardlink",
            [
                raw_entry("h", tar::EntryType::Link, "../../escape"),
                end.to_vec(),
            ]
            .concat(),
        ),
    ];
    for (what, tar) in cases {
        let dir = TempDir::new("img-unsafe");
        let dest = dir.path().join("a/b");
        fs::create_dir_all(&dest).unwrap();
        let err = cgsight_image::unpack::unpack_layer(tar.as_slice(), &dest, what).unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{what}: {err}");
        assert!(!err.to_string().contains('\n'));
        assert!(
            !dir.path().join("escape").exists()
                && !Path::new("/escape").exists()
                && !Path::new("/tmp/escape").exists()
        );
    }
}

#[test]
fn sixty_four_layers_mount_through_short_links() {
    require_root!();
    let (_d, store) = temp_store("img-many");
    let layers: Vec<Vec<u8>> = (0..64)
        .map(|i| {
            let name = format!("f{i:02}");
            let body = format!("{i}");
            layer_tar(&[
                E::File(&name, body.as_bytes(), 0o644),
                E::File("last", body.as_bytes(), 0o644),
            ])
        })
        .collect();
    let oci = TempDir::new("img-oci-many");
    write_oci_layout(oci.path(), &layers, "sh");
    load(&store, oci.path(), Some("test/many"), &mut |_| {}).unwrap();
    let lower = store.lowerdir("test/many").unwrap();
    assert_eq!(lower.split(':').count(), 64);
    let ovl = mount_overlay(&lower);
    let tree = walk(&ovl.merged);
    assert_eq!(tree.len(), 65);
    assert_eq!(tree["last"], "file:63", "the top layer wins");
    // With the default root, the most layers docker allows still fit one mount option.
    let ids: Vec<_> = (0..127)
        .map(|i: u32| cgsight_image::Digest::of_bytes(&i.to_le_bytes()))
        .collect();
    let l = cgsight_image::layers::Layers::new(
        "/var/lib/cgsight/layers".into(),
        "/var/lib/cgsight/l".into(),
        "/tmp".into(),
    );
    let s = l.lowerdir(&ids).unwrap();
    assert!(s.len() < 4096 - "lowerdir=".len(), "{}", s.len());
    assert!(s.starts_with(&format!("/var/lib/cgsight/l/{}", &ids[126].hex()[..12])));
}

#[test]
fn a_replaced_reference_keeps_the_old_image_untagged_until_removed() {
    require_root!();
    let (_d, store) = temp_store("img-replace");
    let old = load_test_image(&store, "test/re", b"old");
    let new = load_test_image(&store, "test/re", b"new!");
    assert_ne!(old.manifest, new.manifest);
    assert_eq!(store.image("test/re").unwrap().manifest, new.manifest);
    // A container may still run on the old layers: they stay, reachable by digest.
    let kept = store.image(old.manifest.as_str()).unwrap();
    assert_eq!(kept.reference, old.manifest.to_string());
    assert!(store.layers().has(&old.layers[2].diff_id));
    assert_eq!(store.images().unwrap().len(), 2);
    store
        .remove(&old.manifest.hex()[..12], false, &|_| false)
        .unwrap();
    assert!(!store.layers().has(&old.layers[2].diff_id));
    assert!(store.layers().has(&new.layers[0].diff_id));
}

#[test]
fn a_full_disk_during_unpack_leaves_no_partial_layer() {
    require_root!();
    let dir = TempDir::new_in(Path::new("/var/tmp"), "img-full");
    let root = dir.path().join("store");
    fs::create_dir(&root).unwrap();
    // Room for the compressed blobs (~1 MiB of busybox) but not for busybox unpacked as well.
    let busybox = fs::metadata("/bin/busybox").unwrap().len();
    let size = format!("size={}k", (busybox + busybox / 4) / 1024);
    nix::mount::mount(
        Some("tmpfs"),
        &root,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(size.as_str()),
    )
    .unwrap();
    let _m = cgsight_testkit::MountGuard::new(&root);
    // A leftover of a crashed run is cleared when the store opens.
    fs::create_dir_all(root.join("tmp/layer-1-1/diff")).unwrap();
    let store = Store::open(&root).unwrap();
    assert_eq!(count(&root.join("tmp")), 0);
    let oci = TempDir::new("img-oci-full");
    test_image(oci.path(), b"v1");
    let err = load(&store, oci.path(), Some("test/full"), &mut |_| {})
        .unwrap_err()
        .to_string();
    // It fails while unpacking (the blobs fit), in one line.
    assert!(
        err.contains("No space left") && err.contains("bin/busybox") && !err.contains('\n'),
        "{err}"
    );
    assert_no_partial(&store);
}

#[test]
fn concurrent_loads_of_one_image_unpack_it_once() {
    require_root!();
    let (_d, store) = temp_store("img-concurrent");
    let oci = TempDir::new("img-oci-concurrent");
    test_image(oci.path(), b"v1");
    let recs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|i| {
                let (store, path) = (&store, oci.path());
                s.spawn(move || {
                    load(store, path, Some(&format!("test/c{i}")), &mut |_| {}).unwrap()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap().remove(0))
            .collect()
    });
    assert!(recs.windows(2).all(|w| w[0].manifest == w[1].manifest));
    assert_eq!(store.layers().count().unwrap(), 3);
    assert_eq!(store.images().unwrap().len(), 3);
}

#[test]
fn commit_refuses_an_upper_with_overlay_redirects() {
    require_root!();
    let (_d, store) = temp_store("img-redirect");
    load_test_image(&store, "test/redir", b"v1");
    let up = TempDir::new_in(Path::new("/var/tmp"), "img-upper");
    fs::create_dir(up.path().join("moved")).unwrap();
    cgsight_image::fsmeta::set_xattr(
        &up.path().join("moved"),
        "trusted.overlay.redirect",
        b"/keep",
    )
    .unwrap();
    let err = commit(
        &store,
        up.path(),
        "test/redir",
        "test/redir2",
        &CommitOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("redirect_dir=off"), "{err}");
    assert!(store.image("test/redir2").is_err());
}
