//! Applying a profile to one container: which rules hold for its capabilities, kernel and
//! architecture (docker's `includes`/`excludes`), and which architectures the filter accepts.

use libseccomp::ScmpArch;

use crate::caps::CapSet;
use crate::kernel::KernelVersion;
use crate::profile::{Action, Arches, ArgCmp, Filter, Profile};

/// What a profile is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// The container's capabilities (docker checks the bounding set).
    pub caps: CapSet,
    pub kernel: KernelVersion,
}

impl Target {
    /// Docker's default capabilities on the running kernel.
    pub fn docker_default() -> std::io::Result<Self> {
        Ok(Self {
            caps: CapSet::docker_default(),
            kernel: KernelVersion::current()?,
        })
    }
}

/// One syscall rule that holds for the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved<'p> {
    pub name: &'p str,
    pub action: Action,
    pub args: &'p [ArgCmp],
}

/// The native architecture as docker names it in `arches` (Go's GOARCH).
pub fn native_go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The architectures the filter accepts: the list, or the native arch's entry of the map.
pub fn arches(profile: &Profile, native: ScmpArch) -> Vec<ScmpArch> {
    match &profile.arches {
        Arches::List(list) => list.clone(),
        Arches::Map(map) => map
            .iter()
            .filter(|(arch, _)| *arch == native)
            .flat_map(|(arch, subs)| std::iter::once(*arch).chain(subs.iter().copied()))
            .collect(),
    }
}

/// The rules that hold for `target` on `go_arch`, one per syscall name, in profile order.
pub fn rules<'p>(profile: &'p Profile, target: &Target, go_arch: &str) -> Vec<Resolved<'p>> {
    profile
        .rules
        .iter()
        .filter(|r| {
            included(&r.includes, target, go_arch) && !excluded(&r.excludes, target, go_arch)
        })
        .flat_map(|r| {
            r.names.iter().map(|name| Resolved {
                name,
                action: r.action,
                args: &r.args,
            })
        })
        .collect()
}

/// Every condition listed must hold (docker: all caps held, arch listed, kernel new enough).
fn included(f: &Filter, t: &Target, go_arch: &str) -> bool {
    (f.arches.is_empty() || f.arches.iter().any(|a| a == go_arch))
        && f.caps.iter().all(|c| has_cap(t, c))
        && f.min_kernel.is_none_or(|k| t.kernel >= k)
}

/// Any condition listed excludes (docker: a cap held, arch listed, kernel at least minKernel).
fn excluded(f: &Filter, t: &Target, go_arch: &str) -> bool {
    f.arches.iter().any(|a| a == go_arch)
        || f.caps.iter().any(|c| has_cap(t, c))
        || f.min_kernel.is_some_and(|k| t.kernel >= k)
}

fn has_cap(t: &Target, name: &str) -> bool {
    t.caps.has_name(name).unwrap_or_else(|| {
        tracing::warn!(
            cap = name,
            "seccomp profile names an unknown capability; treated as not held"
        );
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    fn names(p: &Profile, t: &Target) -> Vec<String> {
        rules(p, t, "amd64")
            .iter()
            .map(|r| format!("{}:{:?}", r.name, r.action))
            .collect()
    }

    #[test]
    fn caps_arches_and_kernel_select_rules() {
        let p = Profile::from_json(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
              {"names":["a"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
              {"names":["b"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_ADMIN"]}},
              {"names":["c"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4.8"}},
              {"names":["d"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["s390x"]}},
              {"names":["e"],"action":"SCMP_ACT_ALLOW","excludes":{"arches":["amd64"]}}]}"#,
        )
        .unwrap();
        let old = Target {
            caps: CapSet::docker_default(),
            kernel: KernelVersion::new(4, 4),
        };
        assert_eq!(names(&p, &old), ["b:Allow"]);
        let admin = Target {
            caps: CapSet::all(),
            kernel: KernelVersion::new(6, 1),
        };
        assert_eq!(names(&p, &admin), ["a:Allow", "c:Allow"]);
    }

    #[test]
    fn arch_map_picks_the_native_entry() {
        let p = crate::Profile::docker_default();
        assert_eq!(
            arches(&p, ScmpArch::X8664),
            [ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32]
        );
        assert_eq!(
            arches(&p, ScmpArch::Aarch64),
            [ScmpArch::Aarch64, ScmpArch::Arm]
        );
    }

    #[test]
    fn docker_default_resolves_clone_by_capability() {
        let p = crate::Profile::docker_default();
        let t = Target {
            caps: CapSet::docker_default(),
            kernel: KernelVersion::new(6, 1),
        };
        let r = rules(&p, &t, "amd64");
        let clone: Vec<_> = r.iter().filter(|r| r.name == "clone").collect();
        assert_eq!(clone.len(), 1);
        assert_eq!(clone.first().map(|c| c.args.len()), Some(1));
        assert!(r
            .iter()
            .any(|r| r.name == "clone3" && r.action == Action::Errno(38)));
        assert!(!r
            .iter()
            .any(|r| r.name == "mount" || r.name == "io_uring_setup"));
        let admin = Target {
            caps: CapSet::all(),
            ..t
        };
        let r = rules(&p, &admin, "amd64");
        assert!(r.iter().any(|r| r.name == "clone" && r.args.is_empty()));
        assert!(r.iter().any(|r| r.name == "mount"));
        assert!(!r
            .iter()
            .any(|r| r.name == "clone3" && r.action != Action::Allow));
    }
}
