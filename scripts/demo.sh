#!/usr/bin/env bash
# The README's main job on a fresh machine: build cgsight, launch a container limited to
# 256 MiB and 1.5 CPUs with the FUSE /proc views, and show `top` (and `free`, `nproc`) inside it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root: containers need namespaces, mounts and cgroups" >&2; exit 2; }
command -v top >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq procps >/dev/null; }
cargo build --release --locked
bin=target/release/cgsight
echo "+ cgsight launch --rm --memory 256m --cpus 1.5 -- sh -c 'top -b -n 1 | head -12; free -m; nproc'"
"$bin" launch --rm --memory 256m --cpus 1.5 -- sh -c 'top -b -n 1 | head -12; echo; free -m; echo; echo "nproc: $(nproc)"'
