//! Descriptors of the caller: none reaches a container or an exec'd process unless --preserve-fds.

use super::*;

#[test]
fn launch_closes_inherited_descriptors() {
    require_root!();
    assert!(!escapes(
        "fd-launch",
        &launch_sh(&unique_name("fd"), &[], ESCAPE)
    ));
    // --preserve-fds 6 passes 3..=8: the same attack now succeeds.
    let keep = launch_sh(&unique_name("fd"), &["--preserve-fds", "6"], ESCAPE);
    assert!(escapes("fd-launch", &keep));
    // Numbers the caller has not open are not filled with the launcher's own pipes (the
    // error pipe leaking into the command would hang this launch).
    // Below 3+40 the command sees exactly the descriptors the same command run here sees.
    let script = "ls /proc/self/fd";
    let below_43 = |o: &Output| -> Vec<u32> {
        let mut v: Vec<u32> = stdout(o)
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .filter(|&f| f < 43)
            .collect();
        v.sort_unstable();
        v
    };
    let here = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("sh");
    let o = run(&launch_sh(
        &unique_name("fd"),
        &["--preserve-fds", "40"],
        script,
    ));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(below_43(&o), below_43(&here), "{}", stderr(&o));
}

#[test]
fn init_and_exec_close_inherited_descriptors() {
    require_root!();
    // --init: neither the command nor pid 1 (which never execs) keeps fd 8.
    let via_init = "ls /proc/1/fd/8 || echo escaped > /proc/self/fd/8/escaped";
    assert!(!escapes(
        "fd-init",
        &launch_sh(&unique_name("fd-init"), &["--init"], via_init)
    ));

    let n = unique_name("fd-exec");
    let _g = Ctr::named(&n);
    launch_detached(&n, &["sleep", "300"]);
    let exec = |flags: &[&str]| -> Vec<String> {
        let mut v = vec!["exec".to_string()];
        v.extend(flags.iter().map(|f| f.to_string()));
        v.extend([n.clone(), "sh".into(), "-c".into(), ESCAPE.into()]);
        v
    };
    assert!(!escapes("fd-exec", &exec(&[])));
    assert!(escapes("fd-exec", &exec(&["--preserve-fds", "6"])));
}
