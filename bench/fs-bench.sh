#!/bin/sh
# Side-by-side: open+read+close latency (p50/p99) and reads/s of meminfo, cpuinfo, stat and
# uptime with 1 and 2 readers, in ONE run, for:
#   holder   cgsight fs (--io-uring off): the holder keeps the mount, a server process answers
#            over /dev/fuse (the views survive the server's death and upgrades)
#   io_uring cgsight fs --io-uring on: in-process over io_uring (column left out where the
#            kernel has no FUSE over io_uring)
#   before   $BEFORE fs --io-uring off: an older cgsight (BEFORE=/path/to/cgsight) serving
#            in-process over /dev/fuse with fuser (column left out without BEFORE)
#   lxcfs    Debian's lxcfs
#   host     the host's /proc (the floor)
# with the reader in a real cgroup (256 MiB, quota 150000/100000, cpuset 0-1) in a new pid
# namespace. Everything it makes is removed on exit; its mounts, pid files and logs live in its
# own /tmp/cgsight-bench-PID, so it never meets another cgsight fs on the machine.
# Usage: [BEFORE=old-cgsight] bench/fs-bench.sh [ITERS [ROUNDS]]
# PIN=N pins the reader to CPU N (a diagnostic: it takes the scheduler's wakeup placement, which
# moves a lone reader to the idle CPU on every reply, out of the picture for every server).
# Each cell is the median over ROUNDS runs of ITERS open+read+close per reader, the targets
# interleaved run by run, in reverse order every other round (so a drift in the machine's load
# over a round does not favour whoever goes first): on a small VM one run's numbers swing by 2x
# with where the scheduler happens to put the reader and the server threads (same vCPU or not).
# The last rows, "noisy", are the p99 of a lone meminfo reader in one container, quiet and while
# 8 readers hammer meminfo in a second container (same limits), for each server.
# NOISY_ONLY=1 runs only those rows.
set -eu
ITERS=${1:-20000}
ROUNDS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# cargo builds into CARGO_TARGET_DIR when it is set: take the binary from there too.
CGSIGHT=${CARGO_TARGET_DIR:-$ROOT/target}/release/cgsight
BEFORE=${BEFORE:-}
W=/tmp/cgsight-bench-$$
CG=/cgsight-bench-$$
HOLDER_PID= ; URING_PID= ; BEFORE_PID= ; LXCFS_PID=
mkdir -p "$W/holder" "$W/uring" "$W/before" "$W/lxcfs"

cleanup() {
    set +e
    # The holder stops its server and unmounts on SIGTERM; its server dies with it anyway.
    for p in $HOLDER_PID $URING_PID $BEFORE_PID $LXCFS_PID; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    for m in holder uring before lxcfs; do umount -l "$W/$m" 2>/dev/null; done
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

# Targets, by key: h holder, u io_uring, b before, l lxcfs, p host. SERVERS: the FUSE ones.
SERVERS=h
lxcfs -p "$W/lxcfs.pid" "$W/lxcfs" >"$W/lxcfs.log" 2>&1 & LXCFS_PID=$!
# Each cgsight gets its own --pidfile: the default is named after the mount point, but the
# holder also writes a status file next to it, and nothing of ours may land in /run/cgsight.
"$CGSIGHT" fs --foreground --io-uring off --mountpoint "$W/holder" --pidfile "$W/holder.pid" >"$W/holder.log" 2>&1 & HOLDER_PID=$!
# io_uring where the kernel has it (Linux 6.14+; `on` switches fuse.enable_uring on).
if [ -e /sys/module/fuse/parameters/enable_uring ]; then
    "$CGSIGHT" fs --foreground --io-uring on --mountpoint "$W/uring" --pidfile "$W/uring.pid" >"$W/uring.log" 2>&1 & URING_PID=$!
    SERVERS="$SERVERS u"
fi
if [ -n "$BEFORE" ]; then
    "$BEFORE" fs --foreground --io-uring off --mountpoint "$W/before" --pidfile "$W/before.pid" >"$W/before.log" 2>&1 & BEFORE_PID=$!
    SERVERS="$SERVERS b"
fi
SERVERS="$SERVERS l"
TARGETS="$SERVERS p"
REVERSED=$(echo "$TARGETS" | tr ' ' '\n' | tac | tr '\n' ' ')
# where a target's files are ($1: key)
root_of() { case $1 in h) echo "$W/holder";; u) echo "$W/uring";; b) echo "$W/before";; l) echo "$W/lxcfs";; p) echo "";; esac; }
name_of() { case $1 in h) echo holder;; u) echo io_uring;; b) echo before;; l) echo lxcfs;; p) echo host;; esac; }
for i in $(seq 100); do
    up=0; for x in $SERVERS; do [ -r "$(root_of $x)/proc/uptime" ] && cat "$(root_of $x)/proc/uptime" >/dev/null 2>&1 && up=$((up + 1)); done
    [ "$up" = "$(echo $SERVERS | wc -w)" ] && break; sleep 0.1
done
[ "$up" = "$(echo $SERVERS | wc -w)" ] || { echo "a server did not come up:" >&2; tail -n 5 "$W"/*.log >&2; exit 1; }
# The holder serves from a child process: its pid is in the status file beside the pid file.
HOLDER_SERVER=$(cut -d' ' -f2 "$W/holder.server" 2>/dev/null | head -1)

# reader: in the cgroup, pid 1 of a new pid namespace
measure() { # FILE THREADS
    sh -c "for f in $PROCS; do echo \$\$ > \$f; done; exec unshare --fork --pid --mount-proc ${PIN:+taskset -c $PIN} $W/fs-reader $1 $ITERS $2"
}
median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
# REL THREADS: sets ${key}50 ${key}99 ${key}rs for every target (medians over ROUNDS
# interleaved runs)
measure_all() {
    for x in $TARGETS; do : >"$W/$x"; done
    for r in $(seq "$ROUNDS"); do
        order=$TARGETS; [ $((r % 2)) = 0 ] && order=$REVERSED
        for x in $order; do measure "$(root_of $x)/$1" "$2" >>"$W/$x"; done
    done
    for x in $TARGETS; do
        eval "${x}50=\$(cut -d' ' -f1 \"$W/$x\" | median)"
        eval "${x}99=\$(cut -d' ' -f2 \"$W/$x\" | median)"
        eval "${x}rs=\$(cut -d' ' -f3 \"$W/$x\" | median)"
    done
}
# holder's reads/s over target $1's, or - when that target is not in the run
ratio() { case " $TARGETS " in *" $1 "*) eval "d=\$${1}rs"; awk "BEGIN{printf \"%.2f\", $hrs/$d}";; *) echo -;; esac; }
# noisy: p99 (µs) of 1 reader of proc/meminfo in one container, alone and while 8 readers
# hammer proc/meminfo in the other; medians over ROUNDS, servers interleaved.
noisy_row() {
    for x in $SERVERS; do : >"$W/${x}q"; : >"$W/${x}n"; done
    for r in $(seq "$ROUNDS"); do
        for x in $SERVERS; do
            mp=$(root_of $x)
            measure "$mp/proc/meminfo" 1 | cut -d' ' -f2 >>"$W/${x}q"
            sh -c "for f in $NOISY_PROCS; do echo \$\$ > \$f; done; exec unshare --fork --kill-child --pid --mount-proc $W/fs-reader $mp/proc/meminfo 2000000 8" >/dev/null & H=$!
            sleep 0.5
            measure "$mp/proc/meminfo" 1 | cut -d' ' -f2 >>"$W/${x}n"
            # unshare ignores SIGTERM while it waits; SIGKILL ends it and --kill-child the readers.
            kill -KILL "$H" 2>/dev/null; wait "$H" 2>/dev/null || true
        done
    done
    for x in $SERVERS; do
        printf '%-8s %2s | %-8s p99 µs quiet %6s, 8 readers next door %6s\n' \
            noisy 1 "$(name_of $x)" "$(median <"$W/${x}q")" "$(median <"$W/${x}n")"
    done
}
echo "holder = cgsight fs --io-uring off (server pid $HOLDER_SERVER, child of holder $HOLDER_PID)${URING_PID:+; io_uring = cgsight fs --io-uring on}${BEFORE:+; before = $BEFORE fs --io-uring off}${PIN:+; reader pinned to CPU $PIN}"
echo "ITERS=$ITERS ROUNDS=$ROUNDS; load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "${NOISY_ONLY:-0}" = 1 ]; then noisy_row; exit 0; fi
printf '%-8s %2s |' file rd
for x in $TARGETS; do printf ' %-21s |' "$(name_of $x) p50/p99 µs r/s"; done
printf ' %s\n' "holder r/s over before, io_uring, lxcfs"
# The last row, sys/devices/system/cpu/online, is a view with next to no work on either side:
# it shows the FUSE round-trip floor (open, read, read at EOF, close) on this machine.
for rel in proc/meminfo proc/cpuinfo proc/stat proc/uptime sys/devices/system/cpu/online; do
    f=${rel##*/}
    for t in 1 2; do
        measure_all "$rel" "$t"
        printf '%-8s %2s |' "$f" "$t"
        for x in $TARGETS; do eval "printf ' %5s %6s %8s |' \"\$${x}50\" \"\$${x}99\" \"\$${x}rs\""; done
        rb=$(ratio b) ru=$(ratio u) rl=$(ratio l)
        printf ' %s %s %s\n' "$rb" "$ru" "$rl"; echo "$rb $ru $rl" >>"$W/ratios"
    done
done
# One number per comparison: a single row swings by ±20 % on a busy VM, the geometric mean of
# all ten rows much less.
awk '{for (i = 1; i <= 3; i++) if ($i != "-") { s[i] += log($i); n[i]++ }}
     END {printf "%-11s | holder r/s over before %s, over io_uring %s, over lxcfs %s (geometric mean of the rows)\n", "all rows",
          n[1] ? sprintf("%.3f", exp(s[1] / n[1])) : "-", n[2] ? sprintf("%.3f", exp(s[2] / n[2])) : "-", n[3] ? sprintf("%.3f", exp(s[3] / n[3])) : "-"}' "$W/ratios"
noisy_row
for x in $SERVERS; do
    echo "(container view check) $(name_of $x) meminfo: $(sh -c "for f in $PROCS; do echo \$\$ > \$f; done; exec unshare --fork --pid --mount-proc head -1 $(root_of $x)/proc/meminfo")"
done
