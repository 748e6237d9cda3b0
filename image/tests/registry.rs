//! Registry tests against Debian's docker-registry on 127.0.0.1 (never any other host): pull
//! of a skopeo-pushed image, push/remove/pull round trip, and the failures that must give a
//! one-line error and leave no partial layer.

mod support;

use cgsight_image::{commit, load, pull, push, ClientOptions, CommitOptions, Error, Phase};
use cgsight_testkit::{require_root, TempDir};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use support::*;

#[test]
fn pull_of_a_skopeo_pushed_image_unpacks_into_the_merged_tree() {
    require_root!();
    let reg = Registry::start();
    let name = push_test_image(&reg, "test/pulled:v1");
    let (_d, store) = temp_store("img-pull");
    let mut phases = Vec::new();
    let rec = pull(&store, &name, &ClientOptions::default(), &mut |p| {
        phases.push((p.index, p.phase))
    })
    .unwrap();
    assert_eq!(rec.reference, name);
    assert_eq!(rec.layers.len(), 3);
    assert!(phases.contains(&(2, Phase::Done)), "{phases:?}");
    let ovl = mount_overlay(&store.lowerdir(&name).unwrap());
    assert_eq!(walk(&ovl.merged), expected_tree());
    // A second pull finds every layer in the store.
    let mut again = Vec::new();
    pull(&store, &name, &ClientOptions::default(), &mut |p| {
        again.push(p.phase)
    })
    .unwrap();
    assert_eq!(again, [Phase::Cached; 3]);
    // By digest too.
    let by_digest = format!("{}/test/pulled@{}", reg.addr, rec.manifest);
    assert_eq!(
        pull(&store, &by_digest, &ClientOptions::default(), &mut |_| {})
            .unwrap()
            .manifest,
        rec.manifest
    );
}

#[test]
fn pull_of_a_multi_platform_index_takes_linux_amd64() {
    require_root!();
    let reg = Registry::start();
    let oci = TempDir::new("img-oci-index");
    let (amd, amd_n) = write_oci_image(
        oci.path(),
        &[base_layer(), middle_layer(), top_layer(b"v1")],
        "sh",
        "amd64",
    );
    let (arm, arm_n) = write_oci_image(oci.path(), &[top_layer(b"arm")], "sh", "arm64");
    let entry = |d: &str, n: usize, arch: &str| {
        serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d, "size": n,
                           "platform": {"architecture": arch, "os": "linux"}})
    };
    // arm64 first, so taking the first entry would be caught.
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                   "manifests": [entry(&arm, arm_n, "arm64"), entry(&amd, amd_n, "amd64")]});
    let (idx, idx_n) = put_blob(oci.path(), &serde_json::to_vec(&index).unwrap());
    write_index_json(oci.path(), OCI_INDEX, &idx, idx_n);
    let name = format!("{}/test/multi:v1", reg.addr);
    let out = std::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--all",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:latest", oci.path().display()))
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_d, store) = temp_store("img-index");
    let rec = pull(&store, &name, &ClientOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(rec.manifest.as_str(), amd);
    assert_eq!(store.inspect(&name).unwrap().architecture, "amd64");
    let ovl = mount_overlay(&store.lowerdir(&name).unwrap());
    assert_eq!(walk(&ovl.merged), expected_tree());
}

#[test]
fn commit_push_remove_pull_gives_the_same_digest() {
    require_root!();
    let reg = Registry::start();
    let (_d, store) = temp_store("img-roundtrip");
    let oci = TempDir::new("img-oci-rt");
    test_image(oci.path(), b"v1");
    load(&store, oci.path(), Some("test/base"), &mut |_| {}).unwrap();
    let ovl = mount_overlay(&store.lowerdir("test/base").unwrap());
    fs::write(ovl.merged.join("added"), b"hello").unwrap();
    fs::remove_file(ovl.merged.join("etc/hostname")).unwrap();
    let c = commit(
        &store,
        &ovl.upper,
        "test/base",
        "test/committed",
        &CommitOptions::default(),
    )
    .unwrap();
    drop(ovl);
    let target = format!("{}/test/rt:1", reg.addr);
    let pushed = push(
        &store,
        "test/committed",
        &target,
        &ClientOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(pushed, c.image.manifest);
    // A second push finds every blob in the registry already.
    let mut phases = Vec::new();
    push(
        &store,
        "test/committed",
        &target,
        &ClientOptions::default(),
        &mut |p| phases.push(p.phase),
    )
    .unwrap();
    assert_eq!(phases, [Phase::Exists; 4]);
    store.remove("test/committed", false, &|_| false).unwrap();
    store.remove("test/base", false, &|_| false).unwrap();
    assert_eq!(store.layers().count().unwrap(), 0);
    let back = pull(&store, &target, &ClientOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(back.manifest, c.image.manifest);
    let ovl = mount_overlay(&store.lowerdir(&target).unwrap());
    let tree = walk(&ovl.merged);
    assert_eq!(tree.get("added").map(String::as_str), Some("file:hello"));
    assert!(!tree.contains_key("etc/hostname"));
}

#[test]
fn missing_tag_and_closed_port_fail_in_one_line() {
    require_root!();
    let reg = Registry::start();
    let (_d, store) = temp_store("img-fail");
    let err = pull(
        &store,
        &format!("{}/test/none:nope", reg.addr),
        &ClientOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(!err.to_string().contains('\n'));
    let port = free_port();
    let err = pull(
        &store,
        &format!("127.0.0.1:{port}/test/x:1"),
        &ClientOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")) && !err.to_string().contains('\n'),
        "{err}"
    );
    assert_no_partial(&store);
}

#[test]
fn corrupted_blob_from_the_registry_leaves_no_partial_layer() {
    require_root!();
    let reg = Registry::start();
    let name = push_test_image(&reg, "test/corrupt:v1");
    // Corrupt the registry's own copy of the biggest blob.
    let blobs = reg.data.join("docker/registry/v2/blobs/sha256");
    corrupt_largest(
        fs::read_dir(&blobs)
            .unwrap()
            .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
            .map(|e| e.unwrap().path().join("data")),
    );
    let (_d, store) = temp_store("img-corrupt-pull");
    let err = pull(&store, &name, &ClientOptions::default(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(!err.to_string().contains('\n'));
    assert_no_partial(&store);
}

/// Answers HTTP requests on a loopback port with `answer(request head)`, `n` times; returns the
/// address and a handle giving back the request heads it saw.
fn fake_server(
    n: usize,
    answer: impl Fn(&str, &str) -> String + Send + 'static,
) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let a2 = addr.clone();
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..n {
            let Ok((mut s, _)) = l.accept() else { break };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let _ = s.write_all(answer(&a2, &head).as_bytes());
            seen.push(head);
        }
        seen
    });
    (addr, h)
}

#[test]
fn bearer_token_is_fetched_with_the_credentials_and_used() {
    require_root!();
    let (addr, h) = fake_server(3, |addr, head| {
        let first = head.lines().next().unwrap_or_default();
        let (status, extra, body) = if first.starts_with("GET /token") {
            ("200 OK", String::new(), r#"{"token":"tok123"}"#)
        } else if head.contains("Authorization: Bearer tok123")
            || head.contains("authorization: Bearer tok123")
        {
            (
                "404 Not Found",
                String::new(),
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#,
            )
        } else {
            let c = format!("WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"fake\",scope=\"repository:test/x:pull\"\r\n");
            ("401 Unauthorized", c, "")
        };
        format!("HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
    });
    let (_d, store) = temp_store("img-bearer");
    let opts = ClientOptions {
        credentials: Some(cgsight_image::Credentials::parse("user:pw").unwrap()),
        ..Default::default()
    };
    let err = pull(&store, &format!("{addr}/test/x:1"), &opts, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, Error::NotFound { .. }),
        "the token was not used: {err}"
    );
    let seen = h.join().unwrap();
    let token_req = seen
        .iter()
        .find(|r| r.starts_with("GET /token"))
        .expect("no token request");
    assert!(
        token_req.contains("scope=repository:test/x:pull") && token_req.contains("service=fake"),
        "{token_req}"
    );
    // base64("user:pw")
    assert!(
        token_req
            .to_ascii_lowercase()
            .contains("authorization: basic dxnlcjpwdw=="),
        "{token_req}"
    );
    assert_no_partial(&store);
}

/// A registry that refuses everyone: every request gets 401 with a Basic challenge.
fn refusing_registry() -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        // Two requests: the anonymous one and the retry with credentials.
        for _ in 0..2 {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (addr, h)
}

#[test]
fn refusing_registry_is_a_clear_unauthorized_error() {
    require_root!();
    let (addr, h) = refusing_registry();
    let (_d, store) = temp_store("img-401");
    let opts = ClientOptions {
        credentials: Some(cgsight_image::Credentials::parse("u:wrong").unwrap()),
        ..Default::default()
    };
    let err = pull(&store, &format!("{addr}/test/x:1"), &opts, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, Error::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("refused") && !err.to_string().contains('\n'),
        "{err}"
    );
    h.join().unwrap();
    assert_no_partial(&store);
}
