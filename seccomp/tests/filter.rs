//! The compiled filters in a real kernel: forked children install them and try syscalls.

mod common;

use cgsight_seccomp::{compile, Action, CapSet, KernelVersion, Profile, Program, Target};
use common::{outcome, run, Setup, PROBES};

const FIXTURE: &str = include_str!("fixtures/docker-format.json");

fn docker_target() -> Target {
    Target {
        caps: CapSet::docker_default(),
        kernel: KernelVersion::current().unwrap(),
    }
}

fn program(profile: &Profile, target: &Target) -> Program {
    compile(profile, target).unwrap().program
}

/// Probes a docker-like profile fails with EPERM for a container without CAP_SYS_ADMIN.
const DENIED: [&str; 6] = [
    "mount",
    "keyctl",
    "bpf",
    "socket(AF_VSOCK)",
    "clone(CLONE_NEWUSER)",
    "unshare(CLONE_NEWUSER)",
];

/// The probes every docker-like profile must answer the same way.
fn assert_docker_behaviour(results: &[(&str, common::Outcome)]) {
    for denied in DENIED {
        assert_eq!(
            outcome(results, denied),
            Err(libc::EPERM),
            "{denied}: {results:?}"
        );
    }
    assert_eq!(outcome(results, "clone3"), Err(libc::ENOSYS), "{results:?}");
    // Everything else a container's ordinary work needs goes through.
    for allowed in PROBES
        .iter()
        .filter(|p| !DENIED.contains(p) && **p != "clone3")
    {
        assert!(outcome(results, allowed).is_ok(), "{allowed}: {results:?}");
    }
}

#[test]
fn without_a_filter_the_probes_succeed_or_fail_otherwise() {
    let results = run(Setup::None);
    assert_eq!(
        outcome(&results, "unshare(CLONE_NEWUSER)"),
        Ok(0),
        "{results:?}"
    );
    assert_eq!(
        outcome(&results, "clone(CLONE_NEWUSER)"),
        Ok(0),
        "{results:?}"
    );
    assert_eq!(outcome(&results, "mount"), Err(libc::ENOENT), "{results:?}");
    assert_ne!(outcome(&results, "keyctl"), Err(libc::EPERM), "{results:?}");
    assert_eq!(outcome(&results, "bpf"), Err(libc::EINVAL), "{results:?}");
    assert_eq!(
        outcome(&results, "clone3"),
        Err(libc::EINVAL),
        "{results:?}"
    );
    assert_ne!(
        outcome(&results, "socket(AF_VSOCK)"),
        Err(libc::EPERM),
        "{results:?}"
    );
}

#[test]
fn default_profile_with_docker_caps_denies_like_docker() {
    let results = run(Setup::Install(&program(
        &Profile::docker_default(),
        &docker_target(),
    )));
    assert_docker_behaviour(&results);
}

#[test]
fn default_profile_with_cap_sys_admin_allows_namespaces() {
    let target = Target {
        caps: CapSet::all(),
        ..docker_target()
    };
    let results = run(Setup::Install(&program(
        &Profile::docker_default(),
        &target,
    )));
    assert_eq!(
        outcome(&results, "unshare(CLONE_NEWUSER)"),
        Ok(0),
        "{results:?}"
    );
    assert_eq!(
        outcome(&results, "clone3"),
        Err(libc::EINVAL),
        "{results:?}"
    );
    assert_eq!(outcome(&results, "mount"), Err(libc::ENOENT), "{results:?}");
    // keyctl stays denied whatever the capabilities.
    assert_eq!(outcome(&results, "keyctl"), Err(libc::EPERM), "{results:?}");
}

#[test]
fn docker_format_fixture_behaves_like_the_default() {
    let profile = Profile::from_json(FIXTURE).unwrap();
    let compiled = compile(&profile, &docker_target()).unwrap();
    assert_eq!(compiled.unknown_syscalls, ["cgsight_no_such_syscall"]);
    assert_eq!(compiled.program.flags(), libc::SECCOMP_FILTER_FLAG_LOG);
    assert_docker_behaviour(&run(Setup::Install(&compiled.program)));
}

#[test]
fn default_profile_round_trips_through_docker_json() {
    let default = Profile::docker_default();
    let again = Profile::from_json(&default.to_json()).unwrap();
    assert_eq!(again, default);
}

#[test]
fn notify_rule_hands_the_call_to_the_listener() {
    let mut profile = Profile::docker_default();
    profile.set_action("sysinfo", Action::Notify);
    // Both need care with a listener: TSYNC wants TSYNC_ESRCH, WAIT_KILLABLE_RECV wants one.
    profile.flags = vec![
        "SECCOMP_FILTER_FLAG_TSYNC".into(),
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV".into(),
    ];
    let p = program(&profile, &docker_target());
    let (rd, wr) = nix::unistd::pipe().unwrap();
    // SAFETY: the child makes raw syscalls only, then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: raw syscalls on memory prepared before fork.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let code: i64 = match p.install_with_listener() {
                Err(e) => -1000 - e as i64,
                Ok(fd) => {
                    // With no supervisor listening any more, notified calls fail with ENOSYS.
                    drop(fd);
                    let mut info: libc::sysinfo = std::mem::zeroed();
                    let r = libc::syscall(libc::SYS_sysinfo, &mut info as *mut libc::sysinfo);
                    if r < 0 {
                        -i64::from(*libc::__errno_location())
                    } else {
                        r
                    }
                }
            };
            libc::write(
                std::os::fd::AsRawFd::as_raw_fd(&wr),
                (&code as *const i64).cast(),
                8,
            );
            libc::_exit(0);
        }
    }
    drop(wr);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(rd), &mut bytes).unwrap();
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    let code = i64::from_ne_bytes(bytes.try_into().unwrap());
    assert_eq!(code, -i64::from(libc::ENOSYS));
    // Unfiltered, sysinfo works: the ENOSYS above is the filter's.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::sysinfo(&mut info) }, 0);
}
