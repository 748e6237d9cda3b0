//! The seccomp filter: the host root's keyring, docker-format profile files, bad --security-opt input.

use super::*;

/// A python3 snippet calling keyctl(2) directly (no keyutils needed): searches root's user
/// keyring for `desc` and prints the key's payload.
fn keyctl_read_script(desc: &str) -> String {
    let nr = if cfg!(target_arch = "aarch64") {
        219
    } else {
        250
    };
    format!(
        "import ctypes, sys\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         L = ctypes.c_long\n\
         kid = libc.syscall(L({nr}), L(10), L(-4), b'user', b'{desc}', L(0))\n\
         if kid < 0:\n    print('search-errno', ctypes.get_errno()); sys.exit(1)\n\
         buf = ctypes.create_string_buffer(256)\n\
         n = libc.syscall(L({nr}), L(11), L(kid), buf, L(256))\n\
         if n < 0:\n    print('read-errno', ctypes.get_errno()); sys.exit(2)\n\
         print('payload', buf.raw[:n].decode())\n"
    )
}

/// A key in host root's user keyring, readable by root; unlinked on drop.
struct HostKey {
    id: i64,
}

impl HostKey {
    fn add(desc: &str, payload: &str) -> HostKey {
        let (add, ctl) = if cfg!(target_arch = "aarch64") {
            (217, 219)
        } else {
            (248, 250)
        };
        let py = format!(
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nL = ctypes.c_long\n\
             k = libc.syscall(L({add}), b'user', b'{desc}', b'{payload}', L({len}), L(-4))\n\
             assert k > 0, ctypes.get_errno()\n\
             assert libc.syscall(L({ctl}), L(5), L(k), L(0x3f3f0000)) == 0\nprint(k)\n",
            len = payload.len()
        );
        let o = Command::new("python3")
            .args(["-c", &py])
            .output()
            .expect("python3");
        assert!(o.status.success(), "add_key: {}", stderr(&o));
        HostKey {
            id: stdout(&o).trim().parse().expect("key id"),
        }
    }
}

impl Drop for HostKey {
    fn drop(&mut self) {
        let ctl = if cfg!(target_arch = "aarch64") {
            219
        } else {
            250
        };
        // KEYCTL_INVALIDATE: gone from every keyring.
        let py = format!(
            "import ctypes\nL = ctypes.c_long\nctypes.CDLL(None).syscall(L({ctl}), L(21), L({}))\n",
            self.id
        );
        let _ = Command::new("python3").args(["-c", &py]).status();
    }
}

#[test]
fn host_root_keyring_is_out_of_reach() {
    require_root!();
    let desc = unique_name("key");
    let _key = HostKey::add(&desc, "host-secret");
    let py = keyctl_read_script(&desc);
    // Here, the key is readable: the probe works.
    let here = Command::new("python3")
        .args(["-c", &py])
        .output()
        .expect("python3");
    assert!(
        stdout(&here).contains("payload host-secret"),
        "{}",
        stderr(&here)
    );
    // In a default container (same uid 0, same user keyring) the syscall itself is refused.
    let o = run(&launch_sh(
        &unique_name("key"),
        &[],
        &format!("python3 -c \"{py}\""),
    ));
    assert!(
        stdout(&o).contains("search-errno 1"),
        "{} {}",
        stdout(&o),
        stderr(&o)
    );
    // Unconfined, the same container reads the host's key: seccomp is what stops it.
    let o = run(&launch_sh(
        &unique_name("key"),
        &["--security-opt", "seccomp=unconfined"],
        &format!("python3 -c \"{py}\""),
    ));
    assert!(
        stdout(&o).contains("payload host-secret"),
        "{} {}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn a_docker_format_profile_file_behaves_as_the_builtin() {
    require_root!();
    let file = format!("{REPO}/tests/fixtures/seccomp-docker-default.json");
    let desc = unique_name("key-file");
    let _key = HostKey::add(&desc, "host-secret");
    let probes = format!(
        "grep '^Seccomp:' /proc/self/status; unshare -Ur true; echo unshare=$?; \
         python3 -c \"{}\"; echo ok",
        keyctl_read_script(&desc)
    );
    let outs: Vec<String> = [
        vec![],
        vec!["--security-opt".to_string(), format!("seccomp={file}")],
    ]
    .iter()
    .map(|flags| {
        let f: Vec<&str> = flags.iter().map(String::as_str).collect();
        let o = run(&launch_sh(&unique_name("prof"), &f, &probes));
        assert_eq!(o.status.code(), Some(0), "{flags:?}: {}", stderr(&o));
        stdout(&o)
    })
    .collect();
    assert!(outs[0].contains("Seccomp:\t2"), "{}", outs[0]);
    assert!(
        outs[0].contains("unshare=1") && outs[0].contains("search-errno 1"),
        "{}",
        outs[0]
    );
    assert_eq!(outs[0], outs[1], "the file and the built-in profile differ");
}

#[test]
fn bad_security_input_is_refused_and_leaves_nothing() {
    require_root!();
    let d = TempDir::new("bad-profile");
    let garbage = d.path.join("garbage.json");
    std::fs::write(&garbage, "{ not a profile").unwrap();
    let bad_action = d.path.join("bad-action.json");
    std::fs::write(&bad_action, r#"{"defaultAction": "SCMP_ACT_NOPE"}"#).unwrap();
    // Twice in a row, so a compiled-filter cache could not hide the second refusal.
    let unknown = d.path.join("unknown-syscall.json");
    std::fs::write(
        &unknown,
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "cgsight_no_such_call"], "action": "SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    let unknown_flags = || {
        (
            vec![
                "--security-opt".to_owned(),
                format!("seccomp={}", unknown.display()),
            ],
            "cgsight_no_such_call",
        )
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--security-opt".into(),
                format!("seccomp={}", garbage.display()),
            ],
            "garbage.json",
        ),
        (
            vec![
                "--security-opt".into(),
                format!("seccomp={}", bad_action.display()),
            ],
            "bad-action.json",
        ),
        (
            vec![
                "--security-opt".into(),
                "seccomp=/nonexistent/profile.json".into(),
            ],
            "/nonexistent/profile.json",
        ),
        (
            vec!["--security-opt".into(), "apparmor=foo".into()],
            "apparmor=foo",
        ),
        (
            vec!["--device".into(), "/dev/cgsight-no-such-device".into()],
            "/dev/cgsight-no-such-device",
        ),
        (
            vec!["--device".into(), "/etc/hostname".into()],
            "/etc/hostname",
        ),
        (vec!["--userns".into(), "sometimes".into()], "sometimes"),
        (
            vec!["--privileged".into(), "--userns".into(), "auto".into()],
            "--privileged",
        ),
        unknown_flags(),
        unknown_flags(),
    ];
    for (flags, named) in cases {
        let n = unique_name("bad-sec");
        let f: Vec<&str> = flags.iter().map(String::as_str).collect();
        let o = run(&launch_sh(&n, &f, "true"));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{flags:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{flags:?}: one line: {err}");
        assert!(
            err.contains(named),
            "{flags:?}: does not name {named}: {err}"
        );
        no_container_named(&n);
    }
}
