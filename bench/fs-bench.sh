#!/bin/sh
# Side-by-side: open+read+close latency (p50/p99) and reads/s of meminfo, cpuinfo, stat and
# uptime with 1 and 2 readers, for cgsight fs (over io_uring where the kernel has it, and over
# /dev/fuse) vs Debian's lxcfs vs the host's /proc, in ONE run,
# with the reader in a real cgroup (256 MiB, quota 150000/100000, cpuset 0-1) in a new pid
# namespace. Everything it makes is removed on exit. Usage: bench/fs-bench.sh [ITERS [ROUNDS]]
# PIN=N pins the reader to CPU N (a diagnostic: it takes the scheduler's wakeup placement, which
# moves a lone reader to the idle CPU on every reply, out of the picture for every server).
# Each cell is the median over ROUNDS runs of ITERS open+read+close per reader, the three
# targets interleaved run by run: on a small VM one run's numbers swing by 2x with where the
# scheduler happens to put the reader and the server threads (same vCPU or not).
# The last row, "noisy", is the p99 of a lone meminfo reader in one container, quiet and while 8
# readers hammer meminfo in a second container (same limits), for cgsight and lxcfs.
# NOISY_ONLY=1 runs only that row.
set -eu
ITERS=${1:-20000}
ROUNDS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=/tmp/cgsight-bench-$$
CG=/cgsight-bench-$$
OURS_PID= ; DEV_PID= ; LXCFS_PID=
mkdir -p "$W/ours" "$W/dev" "$W/lxcfs"

cleanup() {
    set +e
    [ -n "$OURS_PID" ] && kill "$OURS_PID" 2>/dev/null && wait "$OURS_PID" 2>/dev/null
    [ -n "$DEV_PID" ] && kill "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null
    [ -n "$LXCFS_PID" ] && kill "$LXCFS_PID" 2>/dev/null && wait "$LXCFS_PID" 2>/dev/null
    umount -l "$W/ours" 2>/dev/null; umount -l "$W/dev" 2>/dev/null; umount -l "$W/lxcfs" 2>/dev/null
    for d in $CGDIRS; do rmdir "$d" 2>/dev/null; done
    rm -rf "$W"
}
CGDIRS=
trap cleanup EXIT INT TERM

command -v lxcfs >/dev/null || { apt-get install -y lxcfs >/dev/null; }
(cd "$ROOT" && cargo build --release --bin cgsight -q)
gcc -O2 -pthread -o "$W/fs-reader" "$ROOT/bench/fs-reader.c"

# A cgroup (256 MiB, quota 1.5 CPUs, cpuset 0-1) named $CG$1: v1/hybrid hierarchies or a v2
# tree. Adds its directories to CGDIRS (removed on exit).
mkcg() {
    n=$CG$1
    if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
        d=/sys/fs/cgroup$n; mkdir "$d"; CGDIRS="$d $CGDIRS"
        echo 268435456 > "$d/memory.max"; echo "150000 100000" > "$d/cpu.max"; echo 0-1 > "$d/cpuset.cpus"
    else
        for c in memory cpu cpuacct cpuset blkio pids; do
            d=/sys/fs/cgroup/$c$n; [ -d "/sys/fs/cgroup/$c" ] || continue
            [ -d "$d" ] || mkdir "$d"; CGDIRS="$d $CGDIRS"
        done
        [ -d /sys/fs/cgroup/unified ] && { mkdir /sys/fs/cgroup/unified$n; CGDIRS="/sys/fs/cgroup/unified$n $CGDIRS"; }
        echo 268435456 > /sys/fs/cgroup/memory$n/memory.limit_in_bytes
        echo 100000 > /sys/fs/cgroup/cpu$n/cpu.cfs_period_us; echo 150000 > /sys/fs/cgroup/cpu$n/cpu.cfs_quota_us
        echo 0-1 > /sys/fs/cgroup/cpuset$n/cpuset.cpus; cat /sys/fs/cgroup/cpuset/cpuset.mems > /sys/fs/cgroup/cpuset$n/cpuset.mems
    fi
}
# cgroup.procs files of the cgroup named $CG$1
procs_of() { for d in $CGDIRS; do case $d in *"$CG$1") echo "$d/cgroup.procs";; esac; done; }
mkcg ""; mkcg -noisy
PROCS=$(procs_of "" | tr "\n" " "); NOISY_PROCS=$(procs_of -noisy | tr "\n" " ")

lxcfs -p "$W/lxcfs.pid" "$W/lxcfs" >"$W/lxcfs.log" 2>&1 & LXCFS_PID=$!
# io_uring where the kernel has it (Linux 6.14+; `on` switches fuse.enable_uring on), else the
# same /dev/fuse server twice.
URING=on; [ -e /sys/module/fuse/parameters/enable_uring ] || URING=off
"$ROOT/target/release/cgsight" fs --foreground --io-uring $URING --mountpoint "$W/ours" --pidfile "$W/ours.pid" >"$W/ours.log" 2>&1 & OURS_PID=$!
"$ROOT/target/release/cgsight" fs --foreground --io-uring off --mountpoint "$W/dev" --pidfile "$W/dev.pid" >"$W/dev.log" 2>&1 & DEV_PID=$!
for i in $(seq 100); do
    [ -r "$W/lxcfs/proc/uptime" ] && cat "$W/ours/proc/uptime" "$W/dev/proc/uptime" >/dev/null 2>&1 && break; sleep 0.1
done

# reader: in the cgroup, pid 1 of a new pid namespace
measure() { # FILE THREADS
    sh -c "for f in $PROCS; do echo \$\$ > \$f; done; exec unshare --fork --pid --mount-proc ${PIN:+taskset -c $PIN} $W/fs-reader $1 $ITERS $2"
}
median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
# REL THREADS: sets o50 o99 ors d50 d99 drs l50 l99 lrs h50 h99 hrs (medians over ROUNDS
# interleaved runs)
measure_all() {
    : >"$W/o"; : >"$W/d"; : >"$W/l"; : >"$W/h"
    for r in $(seq "$ROUNDS"); do
        measure "$W/ours/$1" "$2" >>"$W/o"; measure "$W/dev/$1" "$2" >>"$W/d"
        measure "$W/lxcfs/$1" "$2" >>"$W/l"; measure "/$1" "$2" >>"$W/h"
    done
    for x in o d l h; do
        for c in 1 2 3; do eval "${x}_$c=\$(cut -d' ' -f$c \"$W/$x\" | median)"; done
    done
    o50=$o_1 o99=$o_2 ors=$o_3 d50=$d_1 d99=$d_2 drs=$d_3 l50=$l_1 l99=$l_2 lrs=$l_3 h50=$h_1 h99=$h_2 hrs=$h_3
}
# noisy: p99 (µs) of 1 reader of proc/meminfo in one container, alone and while 8 readers
# hammer proc/meminfo in the other; medians over ROUNDS, servers interleaved.
noisy_row() {
    : >"$W/nq"; : >"$W/nn"; : >"$W/lq"; : >"$W/ln"
    for r in $(seq "$ROUNDS"); do
        for x in n l; do
            case $x in n) mp=$W/ours;; l) mp=$W/lxcfs;; esac
            measure "$mp/proc/meminfo" 1 | cut -d' ' -f2 >>"$W/${x}q"
            sh -c "for f in $NOISY_PROCS; do echo \$\$ > \$f; done; exec unshare --fork --kill-child --pid --mount-proc $W/fs-reader $mp/proc/meminfo 2000000 8" >/dev/null & H=$!
            sleep 0.5
            measure "$mp/proc/meminfo" 1 | cut -d' ' -f2 >>"$W/${x}n"
            # unshare ignores SIGTERM while it waits; SIGKILL ends it and --kill-child the readers.
            kill -KILL "$H" 2>/dev/null; wait "$H" 2>/dev/null || true
        done
    done
    printf '%-8s %2s | cgsight p99 µs quiet %s, 8 readers next door %s | lxcfs p99 µs quiet %s, 8 readers next door %s\n' \
        noisy 1 "$(median <"$W/nq")" "$(median <"$W/nn")" "$(median <"$W/lq")" "$(median <"$W/ln")"
}
echo "cgsight = cgsight fs --io-uring $URING; /dev/fuse = cgsight fs --io-uring off${PIN:+; reader pinned to CPU $PIN}"
if [ "${NOISY_ONLY:-0}" = 1 ]; then noisy_row; exit 0; fi
printf '%-8s %2s | %-23s | %-23s | %-23s | %-23s | %s\n' file rd "cgsight p50/p99 µs r/s" "/dev/fuse p50/p99 r/s" "lxcfs p50/p99 µs r/s" "host p50/p99 µs r/s" "ours/lxcfs r/s, ours p99 < lxcfs p50"
# The last row, sys/devices/system/cpu/online, is a view with next to no work on either side:
# it shows the FUSE round-trip floor (open, read, read at EOF, close) on this machine.
for rel in proc/meminfo proc/cpuinfo proc/stat proc/uptime sys/devices/system/cpu/online; do
    f=${rel##*/}
    for t in 1 2; do
        measure_all "$rel" "$t"
        ratio=$(awk "BEGIN{printf \"%.1fx\", $ors/$lrs}")
        p99ok=$(awk "BEGIN{print ($o99 < $l50) ? \"yes\" : \"no\"}")
        printf '%-8s %2s | %6s %7s %8s | %6s %7s %8s | %6s %7s %8s | %6s %7s %8s | %s, %s\n' \
            "$f" "$t" "$o50" "$o99" "$ors" "$d50" "$d99" "$drs" "$l50" "$l99" "$lrs" "$h50" "$h99" "$hrs" "$ratio" "$p99ok"
    done
done
noisy_row
echo "(container view check) ours meminfo: $(sh -c "for f in $PROCS; do echo \$\$ > \$f; done; exec unshare --fork --pid --mount-proc head -1 $W/ours/proc/meminfo")"
