#!/usr/bin/env bash
# Run one command as root inside a throw-away qemu VM that boots Debian's stock kernel,
# with the host's / as a read-only 9p root, and exit with the command's exit code.
#
#   tests/vm/run-in-vm.sh [options] -- COMMAND [ARG...]
#
# Options (each also settable by the environment variable in brackets):
#   --cgroup v2|v1     cgroup layout in the guest [CGSIGHT_VM_CGROUP, default v2]
#                        v2: pure unified (cgroup_no_v1=all), controllers
#                            +cpu +cpuset +io +memory +pids in the root's subtree_control
#                        v1: legacy, one hierarchy per controller (cpu,cpuacct co-mounted
#                            with symlinks, ...), name=systemd, and no cgroup2 mount
#   --cpus N           vCPUs [CGSIGHT_VM_CPUS, default 2]
#   --mem MIB          memory [CGSIGHT_VM_MEM, default 2048]
#   --timeout SECS     kill the VM and fail after this long [CGSIGHT_VM_TIMEOUT, default 1200]
#   --accel auto|tcg|kvm  [CGSIGHT_VM_ACCEL, default auto: KVM if a cached probe says the
#                      host's /dev/kvm boots this kernel, TCG otherwise]
#   --share DIR        also export DIR read-write, at the same path (repeatable)
#                      [CGSIGHT_VM_SHARES, colon-separated]. The checkout and its target/
#                      are always shared read-write (at their host paths).
#   --cwd DIR          working directory of the command [default: the current one]
#   --env NAME=VALUE   set a variable for the command (repeatable). The command otherwise
#                      gets PATH (the host's, plus sbin dirs, with pyenv's current version
#                      ahead of its slow shims), HOME=/root, TERM=dumb and the
#                      host's RUST_BACKTRACE, RUST_LOG, RUST_TEST_THREADS, CI if set, and
#                      CGSIGHT_VM=tcg|kvm (so a test can tell it runs in this VM).
#   --append ARGS      extra kernel command line [CGSIGHT_VM_APPEND]
#   --console          stream the kernel console to stderr too [CGSIGHT_VM_CONSOLE=1]
#   --lockup SECS      stop the VM once its kernel reports a CPU stuck this long
#                      [CGSIGHT_VM_LOCKUP, default 240; emulation's spurious reports
#                      under host load stay well below it; 0 turns the watch off]
#
# The command's stdout+stderr (merged) stream to this script's stdout through a
# virtio-serial port; stdin is /dev/null. The kernel console (console=ttyS0 quiet) is
# kept in tests/vm/cache/last-console.log.
# Exit status: the command's; 124 on timeout; 123 if the guest kernel locked up (its
# first fault report is printed); 125 if the VM never reported one.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${CGSIGHT_VM_CACHE:-$HERE/cache}

CGROUP=${CGSIGHT_VM_CGROUP:-v2}
CPUS=${CGSIGHT_VM_CPUS:-2}
MEM=${CGSIGHT_VM_MEM:-2048}
TIMEOUT=${CGSIGHT_VM_TIMEOUT:-1200}
ACCEL=${CGSIGHT_VM_ACCEL:-auto}
APPEND=${CGSIGHT_VM_APPEND:-}
CONSOLE=${CGSIGHT_VM_CONSOLE:-0}
LOCKUP=${CGSIGHT_VM_LOCKUP:-240}
CWD=$PWD
SHARES=()
ENVS=()
[ -n "${CGSIGHT_VM_SHARES:-}" ] && IFS=: read -r -a SHARES <<<"$CGSIGHT_VM_SHARES"

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
	exit "${1:-2}"
}
die() {
	echo "run-in-vm: $*" >&2
	exit 125
}

while [ $# -gt 0 ]; do
	case "$1" in
	--cgroup) CGROUP=$2; shift 2 ;;
	--cpus) CPUS=$2; shift 2 ;;
	--mem) MEM=$2; shift 2 ;;
	--timeout) TIMEOUT=$2; shift 2 ;;
	--accel) ACCEL=$2; shift 2 ;;
	--share) SHARES+=("$2"); shift 2 ;;
	--cwd) CWD=$2; shift 2 ;;
	--env) ENVS+=("$2"); shift 2 ;;
	--append) APPEND="$APPEND $2"; shift 2 ;;
	--console) CONSOLE=1; shift ;;
	--lockup) LOCKUP=$2; shift 2 ;;
	-h | --help) usage 0 ;;
	--) shift; break ;;
	-*) echo "run-in-vm: unknown option $1" >&2; usage ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || usage
case "$CGROUP" in v1 | v2) ;; *) die "--cgroup must be v1 or v2" ;; esac

# Kernel + initramfs: setup.sh only does real work when the cache is missing or stale.
if ! "$HERE/setup.sh" --check; then
	"$HERE/setup.sh" || die "tests/vm/setup.sh failed"
fi
# shellcheck disable=SC1091
. "$CACHE/current"

# Accelerator. Some CI machines have a nested /dev/kvm that exists but cannot run this
# kernel (here: qemu aborts on an MSR write with -cpu host), so in auto mode KVM is used
# only after a probe boot (kernel + initramfs, init = poweroff, at most 10 s) succeeded.
# The verdict is cached per host kernel and guest kernel.
kvm_probe() {
	timeout -k 2 10 qemu-system-x86_64 -machine q35 -accel kvm -cpu host -smp 1 -m 256 \
		-nodefaults -no-user-config -display none -monitor none -serial none -no-reboot \
		-kernel "$VMLINUX" -initrd "$INITRD" \
		-append "console=ttyS0 quiet panic=-1 rdinit=/bin/poweroff -- -f" </dev/null >/dev/null 2>&1
}
if [ "$ACCEL" = auto ]; then
	ACCEL=tcg
	if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
		probe_file=$CACHE/kvm-probe-$(uname -r)-$KVER
		if [ ! -e "$probe_file" ]; then
			if (kvm_probe) 2>/dev/null; then echo kvm >"$probe_file"; else echo tcg >"$probe_file"; fi
		fi
		ACCEL=$(cat "$probe_file")
	fi
fi
case "$ACCEL" in
tcg) ACCEL_ARGS=(-accel "tcg,thread=multi${CGSIGHT_VM_TB_SIZE:+,tb-size=$CGSIGHT_VM_TB_SIZE}" -cpu "${CGSIGHT_VM_CPU:-max}") ;;
kvm) ACCEL_ARGS=(-accel kvm -cpu host) ;;
*) die "--accel must be auto, tcg or kvm" ;;
esac

# Per-run job directory (read by the guest through the 9p root before it covers /tmp).
JOB=$(mktemp -d /tmp/cgsight-vm.XXXXXX)
QPID=
CATPID=
TAILPID=
WATCHPID=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	if [ -n "$QPID" ]; then kill "$QPID" 2>/dev/null && wait "$QPID" 2>/dev/null; fi
	if [ -n "$CATPID" ]; then kill "$CATPID" 2>/dev/null; fi
	if [ -n "$TAILPID" ]; then kill "$TAILPID" 2>/dev/null; fi
	if [ -n "$WATCHPID" ]; then kill "$WATCHPID" 2>/dev/null; fi
	# Keep the last console log for post-mortems (tests/vm/cache is gitignored).
	if [ -s "$JOB/console.log" ]; then cp "$JOB/console.log" "$CACHE/last-console.log" 2>/dev/null; fi
	rm -rf "$JOB"
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

{
	path=$PATH
	# pyenv's shims are bash scripts that fork a dozen times per start: ~0.2 s here, ~8 s
	# under TCG. Put the version they would pick (for --cwd) in front of them instead.
	if [[ ":$path:" == *"/.pyenv/shims:"* ]] && command -v pyenv >/dev/null &&
		pyprefix=$(cd "$CWD" 2>/dev/null && pyenv prefix 2>/dev/null) && [ -x "$pyprefix/bin/python3" ]; then
		path=$(echo ":$path:" | sed "s#:\([^:]*/\.pyenv/shims\):#:$pyprefix/bin:\1:#; s#^:##; s#:\$##")
	fi
	for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
		case ":$path:" in *":$d:"*) ;; *) path=$path:$d ;; esac
	done
	printf 'PATH=%s\n' "$(q "$path")"
	for v in RUST_BACKTRACE RUST_LOG RUST_TEST_THREADS CI; do
		[ -n "${!v:-}" ] && printf '%s=%s\n' "$v" "$(q "${!v}")"
	done
	for e in "${ENVS[@]+"${ENVS[@]}"}"; do
		name=${e%%=*}
		[[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "bad --env $e"
		printf '%s=%s\n' "$name" "$(q "${e#*=}")"
	done
	# Lets a test know it runs under emulation (timing-sensitive assertions may relax).
	printf 'CGSIGHT_VM=%s\n' "$ACCEL"
	echo "export PATH HOME TERM CGSIGHT_VM"
	for e in RUST_BACKTRACE RUST_LOG RUST_TEST_THREADS CI "${ENVS[@]+"${ENVS[@]}"}"; do
		name=${e%%=*}
		echo "export $name 2>/dev/null || true"
	done
} >"$JOB/env"
{
	printf 'exec'
	for a in "$@"; do printf ' %s' "$(q "$a")"; done
	echo
} >"$JOB/cmd"
{
	echo "init=$(q "$HERE/init")"
	echo "cwd=$(q "$CWD")"
	echo "overlays='/etc /root /var/lib'"
	echo "hostname=cgsight-vm"
} >"$JOB/meta"

# 9p exports: the host's / read-only, plus read-write shares.
# The checkout itself is exported too: the guest covers /tmp, /run, /var/tmp and /var/lib/cgsight
# with tmpfs, so a clone under one of them (CI clones anywhere) would be invisible otherwise.
SHARES=("$REPO" "${SHARES[@]+"${SHARES[@]}"}")
[ -d "$REPO/target" ] && SHARES=("$REPO/target" "${SHARES[@]+"${SHARES[@]}"}")
QEMU_SHARES=()
n=0
: >"$JOB/shares"
declare -A seen_share=()
for s in "${SHARES[@]+"${SHARES[@]}"}"; do
	[ -n "$s" ] || continue
	s=$(cd "$s" 2>/dev/null && pwd) || die "cannot share $s: not a directory"
	[ -n "${seen_share[$s]:-}" ] && continue
	seen_share[$s]=1
	[[ "$s" = *' '* ]] && die "cannot share a path with spaces: $s"
	QEMU_SHARES+=(-virtfs "local,path=$s,mount_tag=share$n,security_model=none,multidevs=remap")
	echo "share$n $s" >>"$JOB/shares"
	n=$((n + 1))
done
# Mounted in path order, so a share inside another one is mounted after it.
sort -k2 -o "$JOB/shares" "$JOB/shares"

KARGS="console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init"
# A guest kernel that locks up (soft lockup, RCU stall) prints every CPU's stack, so the
# post-mortem below can show who held what.
KARGS+=" softlockup_all_cpu_backtrace=1"
KARGS+=" tsc=reliable no_timer_check i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"
KARGS+=" cgsight.job=$JOB cgsight.cgroup=$CGROUP cgsight.modules=$MODULES"
if [ "$CGROUP" = v2 ]; then
	KARGS+=" cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1"
else
	KARGS+=" systemd.unified_cgroup_hierarchy=0 systemd.legacy_systemd_cgroup_controller=1"
fi
KARGS+=" $APPEND"

mkfifo "$JOB/out"
CONSOLE_LOG=$JOB/console.log
: >"$CONSOLE_LOG"
: >"$JOB/rc"
cat "$JOB/out" &
CATPID=$!

# A scratch ext4 disk for the guest's /var/tmp: a real block device and a disk filesystem
# (device nodes, idmapped mounts and overlay layers behave as on a host; tmpfs on 6.1 cannot
# idmap). Sparse, so it costs only what the tests write; it goes with the job directory.
truncate -s 8G "$JOB/scratch.img"
mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$JOB/scratch.img" || die "mkfs.ext4 of the scratch disk"

# shellcheck disable=SC2054 # the commas are qemu's
QEMU=(qemu-system-x86_64
	-machine q35,vmport=off "${ACCEL_ARGS[@]}"
	-smp "$CPUS" -m "$MEM"
	-nodefaults -no-user-config -display none -vga none -monitor none -no-reboot
	-kernel "$VMLINUX" -initrd "$INITRD" -append "$KARGS"
	-serial "file:$CONSOLE_LOG"
	-device virtio-rng-pci
	-drive "file=$JOB/scratch.img,if=virtio,format=raw,cache=unsafe,discard=unmap"
	-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
	"${QEMU_SHARES[@]+"${QEMU_SHARES[@]}"}"
	-device virtio-serial-pci,max_ports=4
	-chardev "file,id=out,path=$JOB/out"
	-device virtserialport,chardev=out,name=cgsight.out
	-chardev "file,id=rc,path=$JOB/rc"
	-device virtserialport,chardev=rc,name=cgsight.rc
)
if [ "$CONSOLE" = 1 ]; then
	tail -n +1 -f "$CONSOLE_LOG" >&2 &
	TAILPID=$!
fi

start=$(date +%s%N)
# timeout(1) is the watchdog: TERM after $TIMEOUT s, KILL 5 s later; it exits 124 then.
timeout -k 5 "$TIMEOUT" "${QEMU[@]}" </dev/null >"$JOB/qemu.log" 2>&1 &
QPID=$!
# A guest whose kernel is locked up never finishes: stop it at once rather than at the
# timeout (the soft-lockup detector reports the stuck time every ~30 s).
watch_lockup() {
	local worst
	while kill -0 "$QPID" 2>/dev/null; do
		sleep 10
		worst=$(grep -oE 'soft lockup - CPU#[0-9]+ stuck for [0-9]+s' "$CONSOLE_LOG" |
			sed -E 's/.* ([0-9]+)s$/\1/' | sort -n | tail -n1) || true
		if [ -n "$worst" ] && [ "$worst" -ge "$LOCKUP" ]; then
			echo "$worst" >"$JOB/lockup"
			kill -TERM "$QPID" 2>/dev/null
			return 0
		fi
	done
}
if [ "$LOCKUP" -gt 0 ]; then
	watch_lockup &
	WATCHPID=$!
fi
set +e
wait "$QPID"
qrc=$?
set -e
QPID=
if [ -n "$WATCHPID" ]; then
	kill "$WATCHPID" 2>/dev/null || true
	wait "$WATCHPID" 2>/dev/null || true
	WATCHPID=
fi
timed_out=0
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then timed_out=1; fi
# cat ends at EOF, once qemu has closed the fifo; a brief open+close of our own wakes
# it up in case qemu died before opening it (O_RDWR never blocks on a fifo).
exec 3<>"$JOB/out"
exec 3>&-
wait "$CATPID" 2>/dev/null || true
CATPID=
if [ -n "$TAILPID" ]; then
	sleep 0.2
	kill "$TAILPID" 2>/dev/null || true
	TAILPID=
fi
ms=$((($(date +%s%N) - start) / 1000000))
elapsed=$((ms / 1000)).$(printf '%03d' $((ms % 1000)))

rc=$(sed -n 's/^rc=\([0-9]*\).*/\1/p' "$JOB/rc" | head -n1)
show_console() {
	echo "run-in-vm: ---- kernel console (tail; full log: $CACHE/last-console.log) ----" >&2
	tail -n 12 "$CONSOLE_LOG" >&2
	# The first kernel fault report with its stacks (the tail only repeats its summary); last,
	# so an excerpt of this output's end still holds it.
	local first
	first=$(grep -n -m1 -E 'soft lockup|rcu.*stall|BUG:|Oops|blocked for more than|WARNING:' "$CONSOLE_LOG" | cut -d: -f1)
	if [ -n "$first" ]; then
		echo "run-in-vm: ---- kernel console (first fault report, from line $first) ----" >&2
		tail -n "+$first" "$CONSOLE_LOG" | head -n 100 >&2
	fi
	[ -s "$JOB/qemu.log" ] && { echo "run-in-vm: ---- qemu ----" >&2; cat "$JOB/qemu.log" >&2; }
}
if [ -s "$JOB/lockup" ]; then
	echo "run-in-vm: the guest kernel locked up (a CPU stuck for $(cat "$JOB/lockup")s); VM stopped" >&2
	show_console
	exit 123
fi
if [ "$timed_out" = 1 ]; then
	echo "run-in-vm: timed out after ${TIMEOUT}s; VM killed" >&2
	show_console
	exit 124
fi
if [ -z "$rc" ]; then
	echo "run-in-vm: the VM exited (qemu status $qrc) without reporting an exit code" >&2
	show_console
	exit 125
fi
if [ -n "${CGSIGHT_VM_TIME:-}" ]; then echo "run-in-vm: $ACCEL, ${elapsed}s, rc=$rc" >&2; fi
exit "$rc"
