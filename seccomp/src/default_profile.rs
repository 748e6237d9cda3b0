//! The built-in profile: docker's default semantics, written as our own table.
//!
//! Facts taken from docker's public default profile: an allow-list failing everything else with
//! EPERM; namespace/mount/admin calls only with CAP_SYS_ADMIN; `clone` without namespace flags
//! and `clone3` failing with ENOSYS (so libcs fall back to `clone`) for everyone else; `socket`
//! for every family but AF_VSOCK; `personality` only for the harmless personas; `ptrace` and
//! friends from kernel 4.8 on (earlier ones let ptrace bypass seccomp) or with CAP_SYS_PTRACE;
//! module loading, `kexec_*`, `keyctl`/`add_key`/`request_key` and io_uring never. io_uring
//! left docker's allow-list in moby#46762 (docker 25, late 2023) and is still out of it.

use crate::profile::{Action, Arches, ArgCmp, CmpOp, Filter, Profile, Rule};
use crate::KernelVersion;
use libseccomp::ScmpArch;

/// Allowed for every container, whatever its capabilities: (what they are, names).
const ALWAYS: &[(&str, &str)] = &[
    (
        "files and directories",
        "\
        access chdir chmod chown chown32 close close_range copy_file_range creat dup dup2 dup3 \
        faccessat faccessat2 fadvise64 fadvise64_64 fallocate fchdir fchmod fchmodat fchmodat2 \
        fchown fchown32 fchownat fcntl fcntl64 fdatasync flock fstat fstat64 fstatat64 fstatfs \
        fstatfs64 fsync ftruncate ftruncate64 futimesat getcwd getdents getdents64 lchown \
        lchown32 link linkat _llseek lseek lstat lstat64 mkdir mkdirat mknod mknodat \
        name_to_handle_at newfstatat open openat openat2 pread64 preadv preadv2 pwrite64 pwritev \
        pwritev2 read readahead readlink readlinkat readv rename renameat renameat2 rmdir \
        sendfile sendfile64 splice stat stat64 statfs statfs64 statx symlink symlinkat sync \
        sync_file_range syncfs tee truncate truncate64 umask unlink unlinkat utime utimensat \
        utimensat_time64 utimes vmsplice write writev cachestat",
    ),
    (
        "extended attributes",
        "\
        fgetxattr flistxattr fremovexattr fsetxattr getxattr lgetxattr listxattr llistxattr \
        lremovexattr lsetxattr removexattr setxattr",
    ),
    (
        "waiting on files and events",
        "\
        epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait \
        epoll_wait_old eventfd eventfd2 fanotify_mark inotify_add_watch inotify_init \
        inotify_init1 inotify_rm_watch _newselect poll ppoll ppoll_time64 pselect6 \
        pselect6_time64 select signalfd signalfd4 timerfd_create timerfd_gettime \
        timerfd_gettime64 timerfd_settime timerfd_settime64",
    ),
    (
        "asynchronous I/O (the old aio family; io_uring stays out, see the module doc)",
        "\
        io_cancel io_destroy io_getevents io_pgetevents io_pgetevents_time64 io_setup io_submit \
        ioctl ioprio_get ioprio_set",
    ),
    (
        "processes and threads",
        "\
        arch_prctl capget capset execve execveat exit exit_group fork get_robust_list \
        get_thread_area getcpu getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups \
        getgroups32 getpgid getpgrp getpid getppid getpriority getresgid getresgid32 getresuid \
        getresuid32 getrlimit getrusage getsid gettid getuid getuid32 modify_ldt pidfd_open \
        pidfd_send_signal prctl prlimit64 restart_syscall rseq sched_get_priority_max \
        sched_get_priority_min sched_getaffinity sched_getattr sched_getparam sched_getscheduler \
        sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr \
        sched_setparam sched_setscheduler sched_yield seccomp set_robust_list set_thread_area \
        set_tid_address setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups \
        setgroups32 setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid \
        setresuid32 setreuid setreuid32 setrlimit setsid setuid setuid32 ugetrlimit vfork wait4 \
        waitid waitpid landlock_add_rule landlock_create_ruleset landlock_restrict_self \
        process_mrelease",
    ),
    (
        "memory",
        "\
        brk futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake madvise \
        map_shadow_stack membarrier memfd_create memfd_secret mincore mlock mlock2 mlockall mmap \
        mmap2 mprotect mremap msync munlock munlockall munmap pkey_alloc pkey_free pkey_mprotect \
        remap_file_pages",
    ),
    (
        "signals",
        "\
        alarm kill pause rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn \
        rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sigaltstack \
        sigprocmask sigreturn tgkill tkill",
    ),
    (
        "time",
        "\
        adjtimex clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime \
        clock_gettime64 clock_nanosleep clock_nanosleep_time64 getitimer gettimeofday nanosleep \
        setitimer time timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 \
        timer_settime timer_settime64 times",
    ),
    (
        "System V and POSIX IPC",
        "\
        ipc mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend \
        mq_timedsend_time64 mq_unlink msgctl msgget msgrcv msgsnd semctl semget semop semtimedop \
        semtimedop_time64 shmat shmctl shmdt shmget",
    ),
    (
        "sockets (`socket` itself is argument-filtered below)",
        "\
        accept accept4 bind connect getpeername getsockname getsockopt listen pipe pipe2 recv \
        recvfrom recvmmsg recvmmsg_time64 recvmsg send sendmmsg sendmsg sendto setsockopt \
        shutdown socketcall socketpair",
    ),
    (
        "system information (`sysinfo` is where a later supervisor hooks in with Action::Notify)",
        "\
        getrandom sysinfo uname",
    ),
];

/// Calls a capability unlocks, as docker pairs them.
const BY_CAP: &[(&str, &str)] = &[
    (
        "CAP_DAC_READ_SEARCH",
        "\
        open_by_handle_at",
    ),
    (
        "CAP_SYS_ADMIN",
        "\
        bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount \
        mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname \
        sethostname setns syslog umount umount2 unshare",
    ),
    (
        "CAP_SYS_BOOT",
        "\
        reboot",
    ),
    (
        "CAP_SYS_CHROOT",
        "\
        chroot",
    ),
    (
        "CAP_SYS_MODULE",
        "\
        delete_module init_module finit_module",
    ),
    (
        "CAP_SYS_PACCT",
        "\
        acct",
    ),
    (
        "CAP_SYS_PTRACE",
        "\
        kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
    ),
    (
        "CAP_SYS_RAWIO",
        "\
        iopl ioperm",
    ),
    (
        "CAP_SYS_TIME",
        "\
        settimeofday stime clock_settime clock_settime64",
    ),
    (
        "CAP_SYS_TTY_CONFIG",
        "\
        vhangup",
    ),
    (
        "CAP_SYS_NICE",
        "\
        get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    ),
    (
        "CAP_SYSLOG",
        "\
        syslog",
    ),
    (
        "CAP_BPF",
        "\
        bpf",
    ),
    (
        "CAP_PERFMON",
        "\
        perf_event_open",
    ),
];

/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// AF_VSOCK: a socket family reaching the host (or other VMs) past the network namespace.
pub const AF_VSOCK: u64 = 40;
/// Personas docker lets through: Linux, UNAME26, PER_LINUX32, both, and the 0xffffffff query.
const PERSONAS: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

fn words(names: &str) -> Vec<&str> {
    names.split_whitespace().collect()
}

fn caps(c: &str) -> Filter {
    Filter {
        caps: vec![c.to_owned()],
        ..Filter::default()
    }
}

fn arg(index: u32, op: CmpOp, value: u64) -> ArgCmp {
    ArgCmp {
        index,
        value,
        value_two: 0,
        op,
    }
}

/// Docker's default semantics; resolve it with the container's capabilities and kernel.
pub fn docker_default() -> Profile {
    let mut rules: Vec<Rule> = ALWAYS
        .iter()
        .map(|(what, names)| Rule {
            comment: Some((*what).to_owned()),
            ..Rule::new(&words(names), Action::Allow)
        })
        .collect();
    rules.push(Rule {
        includes: Filter {
            min_kernel: Some(KernelVersion::new(4, 8)),
            ..Filter::default()
        },
        ..Rule::new(
            &["process_vm_readv", "process_vm_writev", "ptrace"],
            Action::Allow,
        )
    });
    rules.push(Rule {
        args: vec![arg(0, CmpOp::Ne, AF_VSOCK)],
        ..Rule::new(&["socket"], Action::Allow)
    });
    for persona in PERSONAS {
        rules.push(Rule {
            args: vec![arg(0, CmpOp::Eq, persona)],
            ..Rule::new(&["personality"], Action::Allow)
        });
    }
    for (cap, names) in BY_CAP {
        rules.push(Rule {
            includes: caps(cap),
            ..Rule::new(&words(names), Action::Allow)
        });
    }
    // Without CAP_SYS_ADMIN: threads and processes yes, new namespaces no.
    rules.push(Rule {
        args: vec![arg(0, CmpOp::MaskedEq, CLONE_NAMESPACE_FLAGS)],
        excludes: caps("CAP_SYS_ADMIN"),
        comment: Some("clone(2) without namespace flags (arg 0 on x86)".to_owned()),
        ..Rule::new(&["clone"], Action::Allow)
    });
    // clone3 passes its flags in memory seccomp cannot read: say "not implemented" so the libc
    // falls back to clone, whose flags the rule above checks.
    rules.push(Rule {
        excludes: caps("CAP_SYS_ADMIN"),
        ..Rule::new(&["clone3"], Action::Errno(libc::ENOSYS as u16))
    });
    Profile {
        default_action: Action::Errno(libc::EPERM as u16),
        arches: Arches::Map(vec![
            (ScmpArch::X8664, vec![ScmpArch::X86, ScmpArch::X32]),
            (ScmpArch::Aarch64, vec![ScmpArch::Arm]),
            (ScmpArch::S390X, vec![ScmpArch::S390]),
            (ScmpArch::Riscv64, vec![]),
        ]),
        flags: Vec::new(),
        rules,
    }
}
