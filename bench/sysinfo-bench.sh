#!/bin/sh
# sysinfo(2) inside a container, in ONE run: answered by the supervisor through the seccomp
# listener (the default), the plain syscall under the same filter (--no-proc-views) and with
# no filter (seccomp=unconfined); and, for scale, an open+read+close of /proc/meminfo through
# the FUSE views. Each row: calls/s and p50/p99 latency of N calls by one reader, in a
# `launch --memory 256m --cpus 1.5 --net none` container, the median of ROUNDS containers;
# last, the listener's p50 and calls/s as a fraction of the FUSE read's.
# Uses a private `cgsight fs` (removed on exit). Usage: bench/sysinfo-bench.sh [N [ROUNDS]]
# CGSIGHT_BIN: the binary to measure (default: a release build, in CARGO_TARGET_DIR if set).
set -eu
N=${1:-20000}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=/tmp/cgsight-sysinfo-bench-$$
FS_PID=
mkdir -p "$W/views" "$W/bin"
cleanup() {
    set +e
    [ -n "$FS_PID" ] && kill "$FS_PID" 2>/dev/null && wait "$FS_PID" 2>/dev/null
    umount -l "$W/views" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT INT TERM

BIN=${CGSIGHT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/cgsight}
[ -n "${CGSIGHT_BIN:-}" ] || (cd "$ROOT" && cargo build --release --bin cgsight -q)
gcc -O2 -o "$W/bin/sysinfo-reader" "$ROOT/bench/sysinfo-reader.c"
"$BIN" fs --foreground --mountpoint "$W/views" >"$W/fs.log" 2>&1 & FS_PID=$!
i=0; until [ -r "$W/views/proc/meminfo" ]; do i=$((i+1)); [ $i -lt 100 ] || { cat "$W/fs.log"; exit 1; }; sleep 0.1; done
export CGSIGHT_FS_MOUNTPOINT="$W/views"

# One container's "calls/s p50 p99" for: $1 = sysinfo|FILE, then launch flags.
one() {
    what=$1; shift
    "$BIN" launch --rm --net none --memory 256m --cpus 1.5 -v "$W/bin:/b:ro" "$@" -- /b/sysinfo-reader "$N" "$what"
}
# Median (by calls/s) of ROUNDS runs, also left in $W/row (for the ratio).
row() {
    label=$1; shift
    r=0; : >"$W/rows"
    while [ $r -lt "$ROUNDS" ]; do one "$@" >>"$W/rows"; r=$((r+1)); done
    sort -n "$W/rows" | sed -n "$(( (ROUNDS + 1) / 2 ))p" >"$W/row"
    read -r cps p50 p99 <"$W/row"
    printf '%-48s %10s %9s %9s\n' "$label" "$cps" "$p50" "$p99"
}
printf '%-48s %10s %9s %9s\n' "N=$N, median of $ROUNDS containers" "calls/s" "p50 us" "p99 us"
row "sysinfo() via listener (default)" sysinfo
cp "$W/row" "$W/listener"
row "sysinfo() plain, same filter (--no-proc-views)" sysinfo --no-proc-views
row "sysinfo() plain, no filter (unconfined)" sysinfo --security-opt seccomp=unconfined
row "/proc/meminfo open+read+close via FUSE" /proc/meminfo
cp "$W/row" "$W/fuse"
row "/proc/meminfo host (--no-proc-views)" /proc/meminfo --no-proc-views
read -r l_cps l_p50 l_p99 <"$W/listener"
read -r f_cps f_p50 f_p99 <"$W/fuse"
awk -v lp="$l_p50" -v fp="$f_p50" -v lc="$l_cps" -v fc="$f_cps" 'BEGIN {
    printf "listener/FUSE meminfo: p50 %.2f (%.1fx faster), calls/s %.1fx\n", lp / fp, fp / lp, lc / fc
}'
