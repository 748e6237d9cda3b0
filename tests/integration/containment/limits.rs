//! Limits: a container cannot mount its cgroup hierarchies and lift its own limits.

use super::*;

/// (mount arguments, file, value to write, value the container was given) for the container's
/// pids and cpu limits, chosen by where the host has each controller.
fn limit_files(id: &str) -> Vec<(String, std::path::PathBuf, &'static str, &'static str)> {
    use cgsight_cgroup::{Controller, Hierarchies, Version};
    let h = Hierarchies::detect().expect("cgroup layout");
    let mut out = Vec::new();
    for (c, v1, v2) in [
        (
            Controller::Pids,
            ("pids.max", "max", "50"),
            ("pids.max", "max", "50"),
        ),
        (
            Controller::Cpu,
            ("cpu.cfs_quota_us", "-1", "50000"),
            ("cpu.max", "max", "50000 100000"),
        ),
    ] {
        let m = h.mount_for(c).expect("controller mounted");
        let dir = m.mount_point.join("cgsight").join(id);
        let (mount, (file, value, given)) = match m.version {
            Version::V1 => {
                // The hierarchy's controllers, as its directory is named (cpu,cpuacct).
                let opts = m.mount_point.file_name().expect("hierarchy name");
                (format!("-t cgroup -o {}", opts.to_string_lossy()), v1)
            }
            Version::V2 => ("-t cgroup2".to_owned(), v2),
        };
        out.push((mount, dir.join(file), value, given));
    }
    out
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

#[test]
fn containers_cannot_lift_their_own_limits() {
    require_root!();
    for unconfined in [false, true] {
        let n = unique_name("limits");
        let _g = Ctr::named(&n);
        let mut flags = vec!["--pids-limit", "50", "--cpus", "0.5"];
        if unconfined {
            flags.extend(["--security-opt", "seccomp=unconfined"]);
        }
        let id = launch_detached_with(&n, &flags, &["sleep", "300"]);
        // inspect records what the container runs with.
        let sec = &inspect(&n).expect("inspect")["security"];
        let want = if unconfined { "unconfined" } else { "default" };
        assert_eq!(sec["seccomp"], want, "{sec}");
        assert_eq!(sec["device_rules"][0], "deny a *:* rwm", "{sec}");
        assert_eq!(sec["userns"], "host", "{sec}");
        for (mount, file, value, given) in limit_files(&id) {
            assert_eq!(read_trim(&file), given, "{}", file.display());
            let name = file.file_name().expect("file name").to_string_lossy();
            let script = format!(
                "export d=$(mktemp -d); unshare -UrmC sh -c 'echo unshare-ok; \
                 mount {mount} none $d && echo mount-ok && echo {value} > $d/{name} && echo write-ok'"
            );
            // Through exec: it must get the container's filter too.
            let o = cgsight(&["exec", &n, "sh", "-c", &script]);
            let (out, err) = (stdout(&o), stderr(&o));
            let now = read_trim(&file);
            if !unconfined {
                // The filter refuses unshare(CLONE_NEWUSER): nothing after it runs.
                assert!(!out.contains("unshare-ok"), "{out}");
                assert!(err.contains("Operation not permitted"), "{err}");
                assert_eq!(now, given, "{} changed", file.display());
                continue;
            }
            // Unconfined, the step the filter stopped works, and so does the mount.
            assert!(out.contains("unshare-ok"), "{name}: {out} {err}");
            assert!(out.contains("mount-ok"), "{name}: {out} {err}");
            // The write: `unshare -r` maps the new namespace's root to host root, so a v1 file
            // is writable. On cgroup2 mounted with nsdelegate the kernel refuses writes to a
            // namespace root's own limits, so there it may still fail: assert what happened.
            let wrote = out.contains("write-ok");
            assert_eq!(wrote, now != given, "{name}: {out} {err}: host has {now}");
            if mount.contains("-t cgroup ") {
                assert!(wrote, "{name}: v1 write failed: {out} {err}");
            }
        }
    }
}
