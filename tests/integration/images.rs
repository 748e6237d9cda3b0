//! The image verbs through the CLI against Debian's docker-registry on 127.0.0.1 (testkit's
//! registry and three-layer test image: deleted file and directory, opaque directory, a file
//! replaced by a directory): pull, launch IMAGE (merged tree, config and its overrides),
//! commit, push/rmi/pull round trip, rmi of an image in use, a missing image. Each test has its
//! own image store (`CGSIGHT_IMAGE_DIR`) and registry.

use std::path::Path;
use std::process::{Command, Output};

use cgsight_testkit::oci::{expected_tree, push_test_image};
use cgsight_testkit::registry::{free_port, Registry};
use cgsight_testkit::{require_root, unique_name, TempDir};

use crate::support::{command, no_container_named, stderr, stdout, Ctr, BIN};

/// A temp image store, and the CLI run against it.
struct Images {
    dir: TempDir,
}

impl Images {
    fn new() -> Images {
        // On a real disk: overlay needs trusted xattrs on the layers' filesystem.
        Images {
            dir: TempDir::new_in(Path::new("/var/tmp"), "img-cli"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        command(args)
            .env("CGSIGHT_IMAGE_DIR", self.dir.path().join("store"))
            .output()
            .expect("running cgsight")
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    }

    /// `launch --rm --no-proc-views --name <unique> ARGS`; asserts success, returns stdout.
    fn launch(&self, args: &[&str]) -> String {
        let n = unique_name("img");
        let mut all = vec!["launch", "--rm", "--no-proc-views", "--name", &n];
        all.extend_from_slice(args);
        self.ok(&all)
    }

    /// The manifest digest `image inspect` reports.
    fn digest(&self, image: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["image", "inspect", image])).expect("inspect json");
        v[0]["Digest"].as_str().expect("Digest").to_owned()
    }
}

/// Asserts exit 125 with exactly one line on stderr; returns it.
fn fails_125(o: &Output) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(125), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "one line: {e:?}");
    e
}

/// A registry holding the test image as `repo`, and a store it was pulled into by the CLI.
fn pulled(repo: &str) -> (Registry, Images, String) {
    let reg = Registry::start();
    let img = Images::new();
    let name = push_test_image(&reg, repo);
    let o = img.run(&["pull", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Not a terminal: plain lines, one per layer phase.
    assert!(stderr(&o).contains("[3/3]"), "{}", stderr(&o));
    (reg, img, name)
}

#[test]
fn images_pull_then_launch_shows_the_merged_tree_exactly() {
    require_root!();
    let (reg, img, name) = pulled("test/tree:v1");
    assert!(img
        .ok(&["images"])
        .contains(&format!("{}/test/tree", reg.addr)));
    // As root (-u 0): `repl` is 0700 root in the image, whose own user is 1000.
    let out = img.launch(&["-u", "0", &name, "find", "/", "-xdev"]);
    let mut seen: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix('/'))
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    seen.sort();
    // The launcher's mountpoints are created in the upper layer, the rest is the image's
    // (the bridge network's /etc/hosts and resolv.conf too, as docker's are).
    let mut want: Vec<String> = expected_tree().into_keys().collect();
    want.extend(["dev", "proc", "sys", "etc/hosts", "etc/resolv.conf"].map(String::from));
    want.sort();
    assert_eq!(seen, want);
    let files = img.launch(&[
        "-u",
        "0",
        &name,
        "cat",
        "/etc/hostname",
        "/top.txt",
        "/opq/new1",
        "/repl/inside",
        "/keep/hard",
    ]);
    assert_eq!(files, "top\nv1newinkept\n");
}

#[test]
fn images_config_is_applied_and_flags_override_it() {
    require_root!();
    let (_reg, img, name) = pulled("test/config:v1");
    // Entrypoint /bin/busybox, Env PATH=/bin, WorkingDir /keep, User 1000:1000.
    let script = "echo $PATH $FOO; pwd; id -u; id -g";
    let out = img.launch(&[&name, "sh", "-c", script]);
    assert_eq!(out, "/bin\n/keep\n1000\n1000\n");
    let out = img.launch(&[
        "-e",
        "PATH=/x:/bin",
        "-e",
        "FOO=bar",
        "-w",
        "/opq",
        "-u",
        "0:5",
        "--entrypoint",
        "/bin/sh",
        &name,
        "-c",
        script,
    ]);
    assert_eq!(out, "/x:/bin bar\n/opq\n0\n5\n");
    // The image's Cmd (`sh`, stdin /dev/null) when no command is given.
    img.launch(&[&name]);
    // HOME: the user's passwd home, "/" for a user the image has no entry for (as runc),
    // and -e HOME wins.
    assert_eq!(img.launch(&[&name, "sh", "-c", "echo $HOME"]), "/\n");
    assert_eq!(
        img.launch(&["-e", "HOME=/h", &name, "sh", "-c", "echo $HOME"]),
        "/h\n"
    );
    // exec runs as the container's user unless -u says otherwise.
    let n = unique_name("img-exec");
    let _g = Ctr::named(&n);
    img.ok(&[
        "launch",
        "-d",
        "--no-proc-views",
        "--name",
        &n,
        &name,
        "sleep",
        "300",
    ]);
    let id = |args: &[&str]| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        all.extend([n.as_str(), "sh", "-c", "id -u; id -g; echo $HOME"]);
        img.ok(&all)
    };
    assert_eq!(id(&[]), "1000\n1000\n/\n");
    assert_eq!(id(&["-u", "0:3"]), "0\n3\n/\n");
}

#[test]
fn images_commit_push_rmi_pull_round_trip() {
    require_root!();
    let (reg, img, name) = pulled("test/commit:v1");
    let n = unique_name("img-commit");
    let _g = Ctr::named(&n);
    let script = "echo added > /added.txt && rm /keep/a.txt && rm -r /opq";
    let o = img.run(&[
        "launch",
        "--no-proc-views",
        "--name",
        &n,
        "-u",
        "0",
        &name,
        "sh",
        "-c",
        script,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st = crate::support::inspect(&n).expect("inspect");
    assert_eq!(st["image"], name, "the state names the image");
    assert_eq!(st["spec"]["stop_signal"], "SIGINT");
    let ps = stdout(&crate::support::cgsight(&["ps", "-a"]));
    let row = ps.lines().find(|l| l.contains(&n)).unwrap_or_default();
    assert!(row.contains(&name), "ps -a:\n{ps}");
    let new = format!("{}/test/committed:c1", reg.addr);
    img.ok(&["commit", &n, &new]);
    let check = "cat /added.txt; ls /keep; test -e /opq || echo no-opq";
    let out = img.launch(&["-u", "0", &new, "sh", "-c", check]);
    assert_eq!(out, "added\nhard\nsym\nno-opq\n");
    // --net host on an image root: the host's resolvers, as docker copies them.
    if let Ok(host) = std::fs::read_to_string("/etc/resolv.conf") {
        let out = img.launch(&["--net", "host", &new, "cat", "/etc/resolv.conf"]);
        assert_eq!(out, host);
    }
    // The bridge's /etc files were bound over empty mount points: those are not committed.
    let gone = "test -e /etc/hosts || echo no-hosts; test -e /etc/resolv.conf || echo no-resolv";
    let out = img.launch(&["--net", "none", "-u", "0", &new, "sh", "-c", gone]);
    assert_eq!(out, "no-hosts\nno-resolv\n");
    // A stopped container still uses its image: refused, -f removes it.
    let e = fails_125(&img.run(&["rmi", &name]));
    assert!(e.contains(&n), "{e}");
    img.ok(&["rmi", "-f", &name]);
    // push → rmi → pull gives the same manifest digest.
    let d = img.digest(&new);
    img.ok(&["push", &new]);
    img.ok(&["rmi", &new]);
    fails_125(&img.run(&["image", "inspect", &new]));
    img.ok(&["pull", &new]);
    assert_eq!(img.digest(&new), d);
    let out = img.launch(&["-u", "0", &new, "cat", "/added.txt"]);
    assert_eq!(out, "added\n");
}

#[test]
fn images_rmi_refuses_an_image_a_running_container_uses() {
    require_root!();
    let (_reg, img, name) = pulled("test/busy:v1");
    let n = unique_name("img-busy");
    let g = Ctr::named(&n);
    let o = img.run(&[
        "launch",
        "-d",
        "--no-proc-views",
        "--name",
        &n,
        &name,
        "sleep",
        "300",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    fails_125(&img.run(&["rmi", &name]));
    // Not even -f takes the layers from under a running container.
    fails_125(&img.run(&["rmi", "-f", &name]));
    let o = crate::support::cgsight(&["rm", "-f", &n]);
    assert!(o.status.success(), "{}", stderr(&o));
    drop(g);
    img.ok(&["rmi", &name]);
    assert!(!img.ok(&["images"]).contains("test/busy"));
}

#[test]
fn images_missing_image_or_registry_exit_125_and_leave_nothing() {
    require_root!();
    let img = Images::new();
    let n = unique_name("img-missing");
    let o = img.run(&[
        "launch",
        "--rm",
        "--no-proc-views",
        "--name",
        &n,
        "cgsight-test-missing:v1",
        "true",
    ]);
    let e = fails_125(&o);
    assert!(e.contains("cgsight-test-missing"), "{e}");
    // Nothing was registered, so no cgroup or layers were made either (they come after).
    no_container_named(&n);
    let dead = format!("127.0.0.1:{}/test/x:v1", free_port());
    fails_125(&img.run(&["pull", &dead]));
    fails_125(&img.run(&["rmi", "cgsight-test-missing:v1"]));
    // A host-root container has no image to commit onto.
    let h = unique_name("img-host");
    let _g = Ctr::named(&h);
    let o = img.run(&["launch", "--no-proc-views", "--name", &h, "--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    fails_125(&img.run(&["commit", &h, "cgsight-test/host:1"]));
}

#[test]
fn images_save_rmi_load_gives_back_a_runnable_image() {
    require_root!();
    let (_reg, img, name) = pulled("test/saved:v1");
    // On a terminal (script(1) gives one) the layer lines are redrawn in place.
    let o = Command::new("script")
        .args(["-qec", &format!("{BIN} pull {name}"), "/dev/null"])
        .env("CGSIGHT_IMAGE_DIR", img.dir.path().join("store"))
        .output()
        .expect("script (util-linux)");
    let shown = stdout(&o);
    assert!(o.status.success(), "{shown}");
    assert!(
        shown.contains("\x1b[3A"),
        "cursor moves over 3 layer lines: {shown:?}"
    );
    assert_eq!(
        shown.matches("already in the store").count(),
        6,
        "{shown:?}"
    );
    let tar = img.dir.path().join("saved.tar");
    let tar = tar.to_str().expect("utf-8 temp path");
    img.ok(&["save", "-o", tar, &name]);
    img.ok(&["rmi", &name]);
    assert!(img.ok(&["images", "-q"]).is_empty());
    let out = img.ok(&["load", "-i", tar]);
    assert!(out.contains(&name), "{out}");
    assert_eq!(img.launch(&[&name, "cat", "/top.txt"]), "v1");
    // A missing archive is one line too.
    fails_125(&img.run(&["load", "-i", "/nonexistent-cgsight-test.tar"]));
}

#[test]
fn images_rootfs_launch_keeps_the_first_word_as_the_command() {
    require_root!();
    let img = Images::new();
    let root = TempDir::new_in(Path::new("/var/tmp"), "img-rootfs");
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static");
    std::os::unix::fs::symlink("busybox", bin.join("sh")).expect("symlink");
    let r = root.path().to_str().expect("utf-8 temp path");
    // With --rootfs there is no image to name: no `--` needed, as before images existed.
    let out = img.launch(&["--rootfs", r, "sh", "-c", "echo in-rootfs"]);
    assert_eq!(out, "in-rootfs\n");
    // --entrypoint belongs to an image.
    let n = unique_name("img-ep");
    let o = img.run(&[
        "launch",
        "--rm",
        "--no-proc-views",
        "--name",
        &n,
        "--entrypoint",
        "/bin/sh",
        "--",
        "true",
    ]);
    fails_125(&o);
    no_container_named(&n);
}

#[test]
fn images_userns_auto_gives_root_the_image_and_commit_stores_its_ids() {
    require_root!();
    let (reg, img, name) = pulled("test/userns:v1");
    let n = unique_name("img-uns");
    let _g = Ctr::named(&n);
    // Inside: root, the image's root-owned files are root's, and writes work (copy-up of a
    // root-owned directory, a chown to a user of the range).
    let script = "id -u; stat -c %u:%g /bin/busybox /keep; echo made > /keep/made.txt; \
                  echo owned > /owned.txt; chown 1000:1000 /owned.txt; \
                  stat -c %u:%g /keep/made.txt /owned.txt";
    let o = img.run(&[
        "launch",
        "--no-proc-views",
        "--userns",
        "auto",
        "--name",
        &n,
        "-u",
        "0",
        &name,
        "sh",
        "-c",
        script,
    ]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out} {}", stderr(&o));
    assert_eq!(out, "0\n0:0\n0:0\n0:0\n1000:1000\n");
    // On the host the layer holds the range's ids, not host root's.
    let v = crate::support::inspect(&n).expect("inspect");
    let base = v["security"]["userns_range"]["uid"]
        .as_u64()
        .expect("a range");
    assert!(base > 0, "{v}");
    let upper = Path::new(v["paths"]["upper"].as_str().expect("upper dir"));
    use std::os::unix::fs::MetadataExt;
    let uid_of = |p: &str| std::fs::metadata(upper.join(p)).expect(p).uid() as u64;
    assert_eq!(uid_of("keep/made.txt"), base);
    assert_eq!(uid_of("owned.txt"), base + 1000);
    // commit shifts them back: the image holds the ids the container saw.
    let new = format!("{}/test/userns-committed:c1", reg.addr);
    img.ok(&["commit", &n, &new]);
    let out = img.launch(&[
        "-u",
        "0",
        &new,
        "stat",
        "-c",
        "%u:%g",
        "/keep/made.txt",
        "/owned.txt",
    ]);
    assert_eq!(out, "0:0\n1000:1000\n");
}
