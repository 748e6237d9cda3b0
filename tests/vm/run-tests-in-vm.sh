#!/usr/bin/env bash
# Build the workspace's test executables on the host, then run them all inside a VM
# (tests/vm/run-in-vm.sh) with the requested cgroup layout.
#
#   tests/vm/run-tests-in-vm.sh --cgroup v2|v1 [VM OPTIONS] [-- TEST ARGS...]
#
# Every test executable cargo reports (integration tests from tests/*.rs of each crate,
# the root package's one binary tests/integration/, plus lib/bin unit tests) runs as root in the guest with
# --test-threads=$CGSIGHT_VM_TEST_THREADS (default 1: under emulation, parallel tests starve each
# other's timing-sensitive CPU measurements) and TEST ARGS (e.g. a name filter, --nocapture, --include-ignored),
# in its crate's directory, with CARGO_MANIFEST_DIR and CARGO_PKG_NAME set as cargo
# would, and CGSIGHT_BIN=<target>/debug/cgsight (built by `cargo build --workspace --bins`
# right after the test executables) when that binary exists.
# One summary line per executable; exits non-zero if any failed.
#
# VM OPTIONS: --cpus N, --mem MIB, --timeout SECS, --accel auto|tcg|kvm, --console,
#   --share DIR (see run-in-vm.sh), --only-integration (skip unit-test executables),
#   --skip-package NAME (repeatable: a package whose tests do not depend on the cgroup layout,
#   run on one lane only),
#   --project DIR (the cargo workspace; default: this repo).
# Environment: CGSIGHT_VM_* as for run-in-vm.sh; CARGO (default cargo); CARGO_TARGET_DIR
#   is honoured (default <project>/target) and shared read-write with the guest.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT=$(cd "$HERE/../.." && pwd)
CGROUP=${CGSIGHT_VM_CGROUP:-v2}
VM_ARGS=()
ONLY_INTEGRATION=0
SKIP_PACKAGES=" "

while [ $# -gt 0 ]; do
	case "$1" in
	--cgroup) CGROUP=$2; shift 2 ;;
	--cpus | --mem | --timeout | --accel | --share) VM_ARGS+=("$1" "$2"); shift 2 ;;
	--console) VM_ARGS+=("$1"); shift ;;
	--only-integration) ONLY_INTEGRATION=1; shift ;;
	--skip-package) SKIP_PACKAGES+="$2 "; shift 2 ;;
	--project) PROJECT=$(cd "$2" && pwd); shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
	--) shift; break ;;
	*) echo "run-tests-in-vm: unknown argument $1 (test args go after --)" >&2; exit 2 ;;
	esac
done
case "$CGROUP" in v1 | v2) ;; *) echo "run-tests-in-vm: --cgroup must be v1 or v2" >&2; exit 2 ;; esac

# Make sure the VM image is ready before the (longer) build, so a setup failure is quick.
"$HERE/setup.sh" --check || "$HERE/setup.sh"

TARGET_DIR=${CARGO_TARGET_DIR:-$PROJECT/target}
mkdir -p "$TARGET_DIR"
TARGET_DIR=$(cd "$TARGET_DIR" && pwd)

echo "vm-tests[$CGROUP]: building test executables (cargo test --workspace --no-run)" >&2
json=$(mktemp /tmp/cgsight-vm-tests.XXXXXX)
trap 'rm -f "$json"' EXIT
(cd "$PROJECT" && "${CARGO:-cargo}" test --workspace --no-run --message-format=json) >"$json"
# The binaries too (fresh, not whatever an older build left), for CGSIGHT_BIN.
(cd "$PROJECT" && "${CARGO:-cargo}" build --workspace --bins --message-format=json) >>"$json"

# One line per test executable: "<kind> <name> <manifest dir> <executable> <package>".
# Cargo's JSON has a fixed field order, so sed is enough (paths contain no quotes).
list=$(grep '"reason":"compiler-artifact"' "$json" | grep '"executable":"' |
	grep -E '"profile":\{[^}]*"test":true' |
	sed -nE 's/.*"manifest_path":"([^"]*)\/Cargo\.toml".*"target":\{"kind":\["([^"]*)"[^]]*\],"crate_types":\[[^]]*\],"name":"([^"]*)".*"executable":"([^"]*)".*/\2 \3 \1 \4/p' | sort -k3,3 -k1,1 -k2,2 -u)
CGSIGHT_BIN=
bin=$(grep '"reason":"compiler-artifact"' "$json" | grep -E '"profile":\{[^}]*"test":false' |
	sed -nE 's/.*"target":\{"kind":\["bin"\],"crate_types":\[[^]]*\],"name":"cgsight".*"executable":"([^"]*)".*/\1/p' | head -n1)
if [ -n "$bin" ] && [ -x "$bin" ]; then
	CGSIGHT_BIN=$bin
elif [ -x "$TARGET_DIR/debug/cgsight" ]; then
	CGSIGHT_BIN=$TARGET_DIR/debug/cgsight
fi

entries=
count=0
while read -r kind name dir exe; do
	[ -n "$exe" ] || continue
	[ "$ONLY_INTEGRATION" = 1 ] && [ "$kind" != test ] && continue
	pkg=$(sed -nE '/^\[package\]/,/^\[/{s/^name *= *"([^"]*)".*/\1/p}' "$dir/Cargo.toml" | head -n1)
	case "$SKIP_PACKAGES" in *" ${pkg:-$name} "*) continue ;; esac
	entries+=$(printf '%s\t%s\t%s\t%s\t%s' "$kind" "$name" "$dir" "$exe" "${pkg:-$name}")$'\n'
	count=$((count + 1))
done <<<"$list"
if [ "$count" = 0 ]; then
	echo "vm-tests[$CGROUP]: cargo reported no test executables" >&2
	exit 1
fi
echo "vm-tests[$CGROUP]: $count test executables; CGSIGHT_BIN=${CGSIGHT_BIN:-<none>}" >&2

# The guest side: a POSIX sh script run by the host's /bin/sh inside the VM.
# Arguments: <cgroup> <cgsight bin> <entries: one executable per line, tab-separated
# kind, name, manifest dir, executable, package> [test args...].
# shellcheck disable=SC2016
guest='
cg=$1 bin=$2 entries=$3
shift 3
tab=$(printf "\t")
tot_pass=0 tot_fail=0 nfail=0 nrun=0 summary=""
log=/tmp/vm-test-output
while IFS="$tab" read -r kind name dir exe pkg; do
	[ -n "$exe" ] || continue
	label="$pkg $kind/$name"
	echo "==== $label: $exe"
	t0=$(date +%s%N)
	{
		(
			cd "$dir" || exit 1
			export CARGO_MANIFEST_DIR="$dir" CARGO_PKG_NAME="$pkg"
			[ -z "$bin" ] || export CGSIGHT_BIN="$bin"
			exec "$exe" --test-threads="${CGSIGHT_VM_TEST_THREADS:-1}" "$@" </dev/null
		)
		echo $? >/tmp/vm-test-rc
	} 2>&1 | while IFS= read -r l; do
		# Under --test-threads=1 a test line ends when the test does: stamp it with the
		# seconds since the executable started, so a slow test shows in any CI log.
		case $l in "test "*" ... "*) echo "[$((($(date +%s%N) - t0) / 1000000000))s] $l" ;; *) echo "$l" ;; esac
	done | tee "$log"
	rc=$(cat /tmp/vm-test-rc)
	ms=$((($(date +%s%N) - t0) / 1000000))
	res=$(sed -nE "s/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p" "$log" | tail -n1)
	p=${res% *} f=${res#* }
	tot_pass=$((tot_pass + ${p:-0}))
	tot_fail=$((tot_fail + ${f:-0}))
	nrun=$((nrun + 1))
	if [ "$rc" = 0 ]; then st=PASS; else st="FAIL(rc=$rc)"; nfail=$((nfail + 1)); fi
	line=$(printf "%-13s %-48s %4s passed %4s failed %4d.%03ds" "$st" "$label" "${p:-?}" "${f:-?}" $((ms / 1000)) $((ms % 1000)))
	summary="$summary
vm-tests[$cg]: $line"
done <<EOF
$entries
EOF
echo
echo "vm-tests[$cg]: ---- kernel $(uname -r), cgroup $cg ----$summary"
echo "vm-tests[$cg]: $nrun executables, $nfail failed"
echo "vm-$cg: $tot_pass passed, $tot_fail failed"
[ "$nfail" = 0 ]
'

test_args=("$@")
run_lane() {
	# In the background so that INT/TERM reach run-in-vm.sh (which then stops the VM).
	"$HERE/run-in-vm.sh" --cgroup "$CGROUP" --share "$TARGET_DIR" "${VM_ARGS[@]+"${VM_ARGS[@]}"}" --cwd "$PROJECT" \
		-- /bin/sh -c "$guest" vm-tests "$CGROUP" "$CGSIGHT_BIN" "$entries" "${test_args[@]+"${test_args[@]}"}" &
	vm=$!
	trap 'kill -TERM "$vm" 2>/dev/null' INT TERM
	lane_rc=0
	wait "$vm" || lane_rc=$?
	# A signal interrupts the first wait; the second one collects run-in-vm.sh's own status.
	if kill -0 "$vm" 2>/dev/null; then wait "$vm" || lane_rc=$?; fi
}
run_lane
# 123: the emulated guest's own kernel locked up (run-in-vm.sh printed its fault report);
# that is no test's result, so the lane runs once more. A test failure is never retried.
if [ "$lane_rc" = 123 ]; then
	echo "vm-tests[$CGROUP]: the guest kernel locked up (report above): running the lane once more" >&2
	run_lane
fi
exit "$lane_rc"
