#!/usr/bin/env bash
# The README's main job on a fresh machine: build cgsight, launch a container limited to
# 256 MiB and 1.5 CPUs with the FUSE /proc views, and show `top` (and `free`, `nproc`) inside it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root: containers need namespaces, mounts and cgroups" >&2; exit 2; }
command -v top >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq procps >/dev/null; }
cargo build --release --locked
bin=target/release/cgsight
views=/var/lib/cgsight/fs
# The views daemon is host-wide (like lxcfs): launch starts it when none serves. Stop it again
# afterwards only if this demo started it.
started_views=1
grep -q " $views " /proc/self/mountinfo && started_views=0
stop_views() {
    if [ "$started_views" = 1 ] && [ -s /run/cgsight/fs.pid ]; then
        kill -TERM "$(head -n1 /run/cgsight/fs.pid)" 2>/dev/null || true
    fi
}
trap stop_views EXIT
cmd='top -b -n 1 | head -12; echo; free -m; echo; echo "CPUs: cpuinfo $(grep -c ^processor /proc/cpuinfo), online $(cat /sys/devices/system/cpu/online), getconf $(getconf _NPROCESSORS_ONLN)"; echo "uptime: $(cat /proc/uptime)"'
# --net none: the demo shows the views and leaves this machine's network as it was (the default,
# --net bridge, would create cgsight0 and turn ip_forward on, as docker does).
echo "+ cgsight launch --rm --net none --memory 256m --cpus 1.5 -- sh -c '$cmd'"
"$bin" launch --rm --net none --memory 256m --cpus 1.5 -- sh -c "$cmd"
echo
echo "+ cgsight launch --rm --net none --memory 512m --cpus 0.5 --cpuset-cpus 0 -- sh -c '...'"
"$bin" launch --rm --net none --memory 512m --cpus 0.5 --cpuset-cpus 0 -- sh -c "$cmd"
