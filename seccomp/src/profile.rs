//! A seccomp profile with docker's semantics: validated actions, argument comparisons and the
//! capability/arch/kernel conditions of each rule; read from and written to docker's JSON.

use std::str::FromStr;

use libseccomp::ScmpArch;

use crate::error::{Error, Result};
use crate::format::{ArchMapDoc, ArgDoc, FilterDoc, ProfileDoc, SyscallDoc};
use crate::kernel::KernelVersion;

/// What the kernel does with a matching syscall (docker's `SCMP_ACT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    /// Fail with this errno.
    Errno(u16),
    KillThread,
    KillProcess,
    Trap,
    Trace(u16),
    Log,
    /// Hand the call to the supervisor holding the filter's listener fd
    /// ([`crate::Program::install_with_listener`]).
    Notify,
}

/// Argument comparison (docker's `SCMP_CMP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// `(arg & value) == value_two`, docker's order: `value` is the mask.
    MaskedEq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArgCmp {
    pub index: u32,
    pub value: u64,
    pub value_two: u64,
    pub op: CmpOp,
}

/// `includes`/`excludes` of a rule: arches are Go names as docker compares them ("amd64").
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    pub arches: Vec<String>,
    pub caps: Vec<String>,
    pub min_kernel: Option<KernelVersion>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.arches.is_empty() && self.caps.is_empty() && self.min_kernel.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub names: Vec<String>,
    pub action: Action,
    pub args: Vec<ArgCmp>,
    pub includes: Filter,
    pub excludes: Filter,
    pub comment: Option<String>,
}

impl Rule {
    /// An unconditional rule for `names`.
    pub fn new(names: &[&str], action: Action) -> Self {
        Self {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            action,
            args: Vec::new(),
            includes: Filter::default(),
            excludes: Filter::default(),
            comment: None,
        }
    }
}

/// Which architectures the filter accepts: a fixed list, or docker's map from the native arch
/// to the others it can run (x86_64 → x86, x32).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Arches {
    List(Vec<ScmpArch>),
    Map(Vec<(ScmpArch, Vec<ScmpArch>)>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Profile {
    pub default_action: Action,
    pub arches: Arches,
    /// `SECCOMP_FILTER_FLAG_*` names, checked by [`filter_flags`].
    pub flags: Vec<String>,
    pub rules: Vec<Rule>,
}

impl Profile {
    /// Parses a profile in docker's JSON format. Names of syscalls are not checked here:
    /// names the local libseccomp does not know are skipped (with a warning) at compile time.
    pub fn from_json(text: &str) -> Result<Self> {
        let doc: ProfileDoc = serde_json::from_str(text)?;
        Self::from_doc(doc)
    }

    /// The profile in docker's JSON format; also the canonical text the cache key hashes.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail; an empty string would only weaken the key.
        serde_json::to_string_pretty(&self.to_doc()).unwrap_or_default()
    }

    /// Gives `name` this action whatever its rules said (e.g. `sysinfo` → [`Action::Notify`]
    /// for a supervisor). The name leaves every other rule first, so the outcome does not hang on
    /// how libseccomp merges two actions for one syscall.
    pub fn set_action(&mut self, name: &str, action: Action) {
        for rule in &mut self.rules {
            rule.names.retain(|n| n != name);
        }
        self.rules.retain(|r| !r.names.is_empty());
        self.rules.push(Rule::new(&[name], action));
    }

    fn from_doc(doc: ProfileDoc) -> Result<Self> {
        let default_action = action(&doc.default_action, doc.default_errno_ret)?;
        let arches = match (doc.architectures, doc.arch_map) {
            (Some(list), Some(map)) if !list.is_empty() && !map.is_empty() => {
                return Err(Error::Both("architectures", "archMap"))
            }
            (Some(list), _) if !list.is_empty() => {
                Arches::List(list.iter().map(|a| arch(a)).collect::<Result<_>>()?)
            }
            (_, Some(map)) => Arches::Map(
                map.iter()
                    .map(|m| {
                        let subs = m.sub_architectures.iter().flatten();
                        Ok((
                            arch(&m.architecture)?,
                            subs.map(|a| arch(a)).collect::<Result<_>>()?,
                        ))
                    })
                    .collect::<Result<_>>()?,
            ),
            _ => Arches::List(Vec::new()),
        };
        let rules = doc
            .syscalls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, s)| rule(i, s))
            .collect::<Result<_>>()?;
        let flags = doc.flags.unwrap_or_default();
        filter_flags(&flags)?;
        Ok(Self {
            default_action,
            arches,
            flags,
            rules,
        })
    }

    fn to_doc(&self) -> ProfileDoc {
        let (default_action, default_errno_ret) = action_doc(self.default_action);
        let (architectures, arch_map) = match &self.arches {
            Arches::List(l) => (Some(l.iter().map(|a| arch_name(*a)).collect()), None),
            Arches::Map(m) => (
                None,
                Some(
                    m.iter()
                        .map(|(a, subs)| ArchMapDoc {
                            architecture: arch_name(*a),
                            sub_architectures: Some(subs.iter().map(|s| arch_name(*s)).collect()),
                        })
                        .collect(),
                ),
            ),
        };
        ProfileDoc {
            default_action,
            default_errno_ret,
            architectures,
            arch_map,
            flags: (!self.flags.is_empty()).then(|| self.flags.clone()),
            syscalls: Some(self.rules.iter().map(rule_doc).collect()),
        }
    }
}

/// The seccomp(2) flag bits of a profile's `flags`. Only flags that shape how the filter
/// behaves are accepted; NEW_LISTENER and TSYNC_ESRCH are the installer's choice.
pub fn filter_flags(names: &[String]) -> Result<libc::c_ulong> {
    names.iter().try_fold(0, |bits, name| {
        let bit = match name.as_str() {
            "SECCOMP_FILTER_FLAG_TSYNC" => libc::SECCOMP_FILTER_FLAG_TSYNC,
            "SECCOMP_FILTER_FLAG_LOG" => libc::SECCOMP_FILTER_FLAG_LOG,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => {
                libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
            }
            other => return Err(Error::UnknownFlag(other.to_owned())),
        };
        Ok(bits | bit)
    })
}

fn rule(index: usize, s: SyscallDoc) -> Result<Rule> {
    if s.name.is_some() && s.names.as_ref().is_some_and(|n| !n.is_empty()) {
        return Err(Error::Both("name", "names"));
    }
    let mut names = s.names.unwrap_or_default();
    names.extend(s.name);
    if names.is_empty() {
        return Err(Error::NoNames { rule: index });
    }
    let args = s
        .args
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            if a.index > 5 {
                return Err(Error::ArgIndex {
                    rule: index,
                    index: a.index,
                });
            }
            Ok(ArgCmp {
                index: a.index,
                value: a.value,
                value_two: a.value_two,
                op: op(&a.op)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Rule {
        names,
        action: action(&s.action, s.errno_ret)?,
        args,
        includes: filter(s.includes)?,
        excludes: filter(s.excludes)?,
        comment: s.comment,
    })
}

fn filter(doc: Option<FilterDoc>) -> Result<Filter> {
    let Some(doc) = doc else {
        return Ok(Filter::default());
    };
    Ok(Filter {
        arches: doc.arches.unwrap_or_default(),
        caps: doc.caps.unwrap_or_default(),
        min_kernel: doc
            .min_kernel
            .filter(|k| !k.is_empty())
            .map(|k| KernelVersion::parse(&k))
            .transpose()?,
    })
}

fn action(name: &str, errno_ret: Option<u32>) -> Result<Action> {
    let data = |default: u32| -> Result<u16> {
        let v = errno_ret.unwrap_or(default);
        u16::try_from(v)
            .ok()
            .filter(|&e| (1..4096).contains(&e))
            .ok_or(Error::ErrnoRet(v))
    };
    Ok(match name {
        "SCMP_ACT_ALLOW" => Action::Allow,
        // docker: an errno action without errnoRet fails with EPERM.
        "SCMP_ACT_ERRNO" => Action::Errno(data(libc::EPERM as u32)?),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_TRACE" => Action::Trace(errno_ret.map_or(Ok(0), |_| data(0))?),
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_NOTIFY" => Action::Notify,
        other => return Err(Error::UnknownAction(other.to_owned())),
    })
}

fn action_doc(a: Action) -> (String, Option<u32>) {
    let (name, data) = match a {
        Action::Allow => ("SCMP_ACT_ALLOW", None),
        Action::Errno(e) => ("SCMP_ACT_ERRNO", Some(u32::from(e))),
        Action::KillThread => ("SCMP_ACT_KILL_THREAD", None),
        Action::KillProcess => ("SCMP_ACT_KILL_PROCESS", None),
        Action::Trap => ("SCMP_ACT_TRAP", None),
        Action::Trace(d) => ("SCMP_ACT_TRACE", Some(u32::from(d))),
        Action::Log => ("SCMP_ACT_LOG", None),
        Action::Notify => ("SCMP_ACT_NOTIFY", None),
    };
    (name.to_owned(), data)
}

fn op(name: &str) -> Result<CmpOp> {
    Ok(match name {
        "SCMP_CMP_NE" => CmpOp::Ne,
        "SCMP_CMP_LT" => CmpOp::Lt,
        "SCMP_CMP_LE" => CmpOp::Le,
        "SCMP_CMP_EQ" => CmpOp::Eq,
        "SCMP_CMP_GE" => CmpOp::Ge,
        "SCMP_CMP_GT" => CmpOp::Gt,
        "SCMP_CMP_MASKED_EQ" => CmpOp::MaskedEq,
        other => return Err(Error::UnknownOp(other.to_owned())),
    })
}

fn op_name(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Ne => "SCMP_CMP_NE",
        CmpOp::Lt => "SCMP_CMP_LT",
        CmpOp::Le => "SCMP_CMP_LE",
        CmpOp::Eq => "SCMP_CMP_EQ",
        CmpOp::Ge => "SCMP_CMP_GE",
        CmpOp::Gt => "SCMP_CMP_GT",
        CmpOp::MaskedEq => "SCMP_CMP_MASKED_EQ",
    }
}

fn arch(name: &str) -> Result<ScmpArch> {
    match ScmpArch::from_str(name) {
        // NATIVE would make the same profile mean different filters on different hosts.
        Ok(ScmpArch::Native) | Err(_) => Err(Error::UnknownArch(name.to_owned())),
        Ok(a) => Ok(a),
    }
}

fn arch_name(a: ScmpArch) -> String {
    // The Debug names are libseccomp-rs's variant names; spell docker's tokens instead.
    let s = match a {
        ScmpArch::X86 => "SCMP_ARCH_X86",
        ScmpArch::X8664 => "SCMP_ARCH_X86_64",
        ScmpArch::X32 => "SCMP_ARCH_X32",
        ScmpArch::Arm => "SCMP_ARCH_ARM",
        ScmpArch::Aarch64 => "SCMP_ARCH_AARCH64",
        ScmpArch::Mips => "SCMP_ARCH_MIPS",
        ScmpArch::Mips64 => "SCMP_ARCH_MIPS64",
        ScmpArch::Mips64N32 => "SCMP_ARCH_MIPS64N32",
        ScmpArch::Mipsel => "SCMP_ARCH_MIPSEL",
        ScmpArch::Mipsel64 => "SCMP_ARCH_MIPSEL64",
        ScmpArch::Mipsel64N32 => "SCMP_ARCH_MIPSEL64N32",
        ScmpArch::Ppc => "SCMP_ARCH_PPC",
        ScmpArch::Ppc64 => "SCMP_ARCH_PPC64",
        ScmpArch::Ppc64Le => "SCMP_ARCH_PPC64LE",
        ScmpArch::S390 => "SCMP_ARCH_S390",
        ScmpArch::S390X => "SCMP_ARCH_S390X",
        ScmpArch::Riscv64 => "SCMP_ARCH_RISCV64",
        other => return format!("{other:?}"),
    };
    s.to_owned()
}

fn rule_doc(r: &Rule) -> SyscallDoc {
    let (action, errno_ret) = action_doc(r.action);
    let filter_doc = |f: &Filter| {
        (!f.is_empty()).then(|| FilterDoc {
            arches: (!f.arches.is_empty()).then(|| f.arches.clone()),
            caps: (!f.caps.is_empty()).then(|| f.caps.clone()),
            min_kernel: f.min_kernel.map(|k| k.to_string()),
        })
    };
    SyscallDoc {
        name: None,
        names: Some(r.names.clone()),
        action,
        errno_ret,
        args: (!r.args.is_empty()).then(|| {
            r.args
                .iter()
                .map(|a| ArgDoc {
                    index: a.index,
                    value: a.value,
                    value_two: a.value_two,
                    op: op_name(a.op).to_owned(),
                })
                .collect()
        }),
        comment: r.comment.clone(),
        includes: filter_doc(&r.includes),
        excludes: filter_doc(&r.excludes),
    }
}
