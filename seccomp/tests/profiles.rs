//! Profiles users bring: bad input is a clear error, unknown syscall names only a warning.

use cgsight_seccomp::{compile, CapSet, Error, KernelVersion, Profile, Target};

fn err(json: &str) -> Error {
    Profile::from_json(json).unwrap_err()
}

#[test]
fn unparsable_json_is_an_error() {
    let e = err(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ {"#);
    assert!(matches!(e, Error::Json(_)), "{e}");
    assert!(e.to_string().contains("not valid JSON"), "{e}");
    assert!(
        matches!(err(r#"{"syscalls": []}"#), Error::Json(_)),
        "defaultAction is required"
    );
    assert!(matches!(err(r#"{"defaultAction": 1}"#), Error::Json(_)));
}

#[test]
fn unknown_action_is_named() {
    let e = err(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_MAYBE"}]}"#,
    );
    assert!(
        matches!(&e, Error::UnknownAction(a) if a == "SCMP_ACT_MAYBE"),
        "{e}"
    );
    assert!(e.to_string().contains("SCMP_ACT_MAYBE"), "{e}");
    assert!(matches!(
        err(r#"{"defaultAction":"ALLOW"}"#),
        Error::UnknownAction(_)
    ));
}

#[test]
fn bad_argument_op_and_index_are_named() {
    let e = err(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["socket"],"action":"SCMP_ACT_ALLOW",
            "args":[{"index":0,"value":40,"op":"SCMP_CMP_SOMETIMES"}]}]}"#,
    );
    assert!(
        matches!(&e, Error::UnknownOp(o) if o == "SCMP_CMP_SOMETIMES"),
        "{e}"
    );
    let e = err(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["socket"],"action":"SCMP_ACT_ALLOW",
            "args":[{"index":6,"value":40,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    assert!(matches!(e, Error::ArgIndex { rule: 0, index: 6 }), "{e}");
}

#[test]
fn other_bad_fields_are_named() {
    let e = err(r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_VAX"]}"#);
    assert!(matches!(e, Error::UnknownArch(_)), "{e}");
    let e = err(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":70000}"#);
    assert!(matches!(e, Error::ErrnoRet(70000)), "{e}");
    let e = err(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"action":"SCMP_ACT_ALLOW"}]}"#);
    assert!(matches!(e, Error::NoNames { rule: 0 }), "{e}");
    let e = err(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW",
            "includes":{"minKernel":"four"}}]}"#,
    );
    assert!(matches!(e, Error::MinKernel(_)), "{e}");
}

#[test]
fn unknown_syscall_names_are_skipped_and_reported() {
    let p = Profile::from_json(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["read","cgsight_not_a_syscall","write"],"action":"SCMP_ACT_ALLOW"},
            {"name":"cgsight_not_a_syscall_either","action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    let target = Target {
        caps: CapSet::docker_default(),
        kernel: KernelVersion::new(6, 1),
    };
    let compiled = compile(&p, &target).unwrap();
    assert_eq!(
        compiled.unknown_syscalls,
        ["cgsight_not_a_syscall", "cgsight_not_a_syscall_either"]
    );
    assert!(!compiled.program.is_empty());
}

#[test]
fn flags_and_either_or_fields_are_checked() {
    let e = err(r#"{"defaultAction":"SCMP_ACT_ERRNO","flags":["SECCOMP_FILTER_FLAG_FAST"]}"#);
    assert!(
        matches!(&e, Error::UnknownFlag(f) if f == "SECCOMP_FILTER_FLAG_FAST"),
        "{e}"
    );
    let e = err(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
            "archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#,
    );
    assert!(matches!(e, Error::Both("architectures", "archMap")), "{e}");
    let e = err(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"read","names":["write"],
            "action":"SCMP_ACT_ALLOW"}]}"#,
    );
    assert!(matches!(e, Error::Both("name", "names")), "{e}");
    let p = Profile::from_json(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","flags":["SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}"#,
    )
    .unwrap();
    assert_eq!(
        cgsight_seccomp::profile::filter_flags(&p.flags).unwrap(),
        libc::SECCOMP_FILTER_FLAG_LOG | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
    );
}
