//! Profile → classic BPF, through libseccomp (`seccomp_export_bpf`).
//!
//! Why libseccomp (the libseccomp-rs bindings, as youki uses) and not Firecracker's pure-Rust
//! `seccompiler`: docker profiles name syscalls and need them resolved per architecture, and
//! docker's x86_64 entry also accepts x86 and x32 in one filter. libseccomp resolves names for
//! every arch, rewrites `socketcall`-style multiplexers, emits the arch dispatch, has every
//! `SCMP_CMP_*` op including masked-eq and has `SCMP_ACT_NOTIFY`. seccompiler (0.5) takes
//! syscall numbers, builds single-arch filters for x86_64/aarch64/riscv64 only and has no
//! notify action. The cost, a C library at compile time, is paid once per profile: the
//! output is plain BPF, cached, and installing it needs no libseccomp at all.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::FromRawFd;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

use crate::error::{Error, Result};
use crate::profile::{Action, ArgCmp, CmpOp, Profile};
use crate::program::Program;
use crate::resolve::{self, Target};

/// A compiled filter and what compiling it skipped.
#[derive(Debug)]
pub struct Compiled {
    pub program: Program,
    /// Syscall names the local libseccomp does not know (docker ignores these too).
    pub unknown_syscalls: Vec<String>,
}

/// Compiles `profile` for `target` on this machine's architecture.
pub fn compile(profile: &Profile, target: &Target) -> Result<Compiled> {
    let lib = |what: String| move |source| Error::Libseccomp { what, source };
    let default = profile.default_action;
    let mut ctx =
        ScmpFilterContext::new(scmp_action(default)).map_err(lib("creating the filter".into()))?;
    // Binary-tree syscall dispatch instead of a linear list: the kernel, on install, runs the
    // filter for every syscall number of every arch to find the always-allowed ones, and then
    // runs it on every other call; both walk log(n) instead of n instructions.
    ctx.set_ctl_optimize(2)
        .map_err(lib("choosing the binary-tree layout".into()))?;
    for arch in resolve::arches(profile, ScmpArch::native()) {
        ctx.add_arch(arch)
            .map_err(lib(format!("adding architecture {arch:?}")))?;
    }
    let mut unknown = Vec::new();
    for rule in resolve::rules(profile, target, resolve::native_go_arch()) {
        let Ok(syscall) = ScmpSyscall::from_name(rule.name) else {
            if !unknown.iter().any(|u| u == rule.name) {
                unknown.push(rule.name.to_owned());
            }
            continue;
        };
        // libseccomp refuses rules that repeat the default action; they change nothing.
        if rule.action == default {
            continue;
        }
        let action = scmp_action(rule.action);
        let what = || format!("rule for {} ({:?})", rule.name, rule.action);
        let cmps: Vec<ScmpArgCompare> = rule.args.iter().map(scmp_cmp).collect();
        if cmps.is_empty() {
            ctx.add_rule(action, syscall).map_err(lib(what()))?;
        } else if repeats_an_index(rule.args) {
            // Two conditions on one argument cannot be ANDed by libseccomp; docker (runc)
            // then ORs them as separate rules, and so do we.
            for cmp in cmps {
                ctx.add_rule_conditional(action, syscall, &[cmp])
                    .map_err(lib(what()))?;
            }
        } else {
            ctx.add_rule_conditional(action, syscall, &cmps)
                .map_err(lib(what()))?;
        }
    }
    if !unknown.is_empty() {
        // Reported to the caller, which decides whether that is an error (a user's profile)
        // or a warning (the built-in one).
        tracing::debug!(
            syscalls = unknown.join(","),
            "seccomp profile names syscalls the local libseccomp does not know; skipped"
        );
    }
    let program = Program::from_bpf_bytes(&export(&ctx)?)?
        .with_flags(crate::profile::filter_flags(&profile.flags)?);
    Ok(Compiled {
        program,
        unknown_syscalls: unknown,
    })
}

fn repeats_an_index(args: &[ArgCmp]) -> bool {
    args.iter()
        .enumerate()
        .any(|(i, a)| args.iter().skip(i + 1).any(|b| b.index == a.index))
}

fn scmp_action(a: Action) -> ScmpAction {
    match a {
        Action::Allow => ScmpAction::Allow,
        Action::Errno(e) => ScmpAction::Errno(i32::from(e)),
        Action::KillThread => ScmpAction::KillThread,
        Action::KillProcess => ScmpAction::KillProcess,
        Action::Trap => ScmpAction::Trap,
        Action::Trace(d) => ScmpAction::Trace(d),
        Action::Log => ScmpAction::Log,
        Action::Notify => ScmpAction::Notify,
    }
}

fn scmp_cmp(a: &ArgCmp) -> ScmpArgCompare {
    let (op, datum) = match a.op {
        CmpOp::Ne => (ScmpCompareOp::NotEqual, a.value),
        CmpOp::Lt => (ScmpCompareOp::Less, a.value),
        CmpOp::Le => (ScmpCompareOp::LessOrEqual, a.value),
        CmpOp::Eq => (ScmpCompareOp::Equal, a.value),
        CmpOp::Ge => (ScmpCompareOp::GreaterEqual, a.value),
        CmpOp::Gt => (ScmpCompareOp::Greater, a.value),
        CmpOp::MaskedEq => (ScmpCompareOp::MaskedEqual(a.value), a.value_two),
    };
    ScmpArgCompare::new(a.index, op, datum)
}

/// libseccomp 2.5 exports only to a file descriptor: use an anonymous memory file.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>> {
    // SAFETY: a constant C string and flags; the fd is checked before use.
    let fd = unsafe { libc::memfd_create(c"cgsight-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Export(std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    ctx.export_bpf(&file).map_err(|source| Error::Libseccomp {
        what: "exporting BPF".into(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0)).map_err(Error::Export)?;
    file.read_to_end(&mut bytes).map_err(Error::Export)?;
    Ok(bytes)
}
