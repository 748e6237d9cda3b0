#!/usr/bin/env bash
# Images, side by side in one run (medians of RUNS, interleaved):
#   1. pull + unpack of one image from Debian's docker-registry on 127.0.0.1:
#      `cgsight pull` into an empty store  vs  `skopeo copy` to an OCI layout + `umoci unpack`.
#   2. start latency of /bin/true:
#      `cgsight launch IMAGE` vs `cgsight launch -- ` on the host root vs `crun run` of the
#      image's umoci-unpacked bundle (the same files), all with 256m / 1 cpu, views off.
# The image: three layers built here with umoci (busybox-static, python3's stdlib, perl's),
# ~130 MB unpacked, gzip layers, pushed to the registry by skopeo.
# crun 1.8 refuses this hybrid host (cgroup2 holds hugetlb), so the launch rows run inside a
# private mount namespace where an empty file hides /sys/fs/cgroup/unified/cgroup.controllers.
# Usage: bench/image-bench.sh [RUNS]   (root; default 5 pulls, 40 launches)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
launches=$((runs * 8))
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }
for t in docker-registry skopeo umoci crun busybox; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/install-deps.sh" >&2; exit 2; }
done
cargo build --release -q -p cgsight
bin=$PWD/target/release/cgsight
# On a real disk: overlay needs trusted xattrs on the layers' filesystem.
work=$(mktemp -d /var/tmp/cgsight-bench-img.XXXXXX)
reg_pid=
cleanup() {
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

# The image, one layer per umoci repack.
layout=$work/layout
umoci init --layout "$layout"
umoci new --image "$layout:bench"
add_layer() { # DEST-RELATIVE-DIR SOURCE...
  umoci unpack --rootless --image "$layout:bench" "$work/b" >/dev/null
  local dest="$work/b/rootfs/$1"; shift
  mkdir -p "$dest"
  cp -a "$@" "$dest/"
  umoci repack --image "$layout:bench" "$work/b" >/dev/null
  rm -rf "$work/b"
}
mkdir -p "$work/bin"
cp /bin/busybox "$work/bin/busybox"
for a in sh true cat ls; do ln -s busybox "$work/bin/$a"; done
add_layer / "$work/bin"
add_layer usr/lib /usr/lib/python3.11
add_layer usr/share /usr/share/perl
umoci config --image "$layout:bench" --config.cmd /bin/true >/dev/null
ref=127.0.0.1:$port/bench/image:v1
skopeo copy -q --dest-tls-verify=false "oci:$layout:bench" "docker://$ref"
size=$(du -sb "$work/registry" | cut -f1)
echo "image: 3 layers, $((size / 1000000)) MB compressed in the registry ($ref)"

cat > "$work/run.py" <<PY
import os, shutil, statistics, subprocess, sys, time
work, ref, bin = "$work", "$ref", "$bin"
def run(cmd, env=None):
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    if p.returncode != 0:
        sys.exit(f"{cmd}: exit {p.returncode}: {p.stderr.decode(errors='replace')}")
def timed(cmd, env=None):
    t = time.perf_counter(); run(cmd, env); return (time.perf_counter() - t) * 1000
def fresh(d):
    shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
base_env = dict(os.environ)
pulls = {"cgsight pull (+ unpack into its layer store)": [], "skopeo copy + umoci unpack": []}
for i in range($runs):
    fresh(f"{work}/store")
    env = dict(base_env, CGSIGHT_IMAGE_DIR=f"{work}/store")
    pulls["cgsight pull (+ unpack into its layer store)"].append(timed([bin, "pull", ref], env))
    fresh(f"{work}/sk")
    t = time.perf_counter()
    run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{work}/sk/layout:v1"])
    run(["umoci", "unpack", "--image", f"{work}/sk/layout:v1", f"{work}/sk/bundle"])
    pulls["skopeo copy + umoci unpack"].append((time.perf_counter() - t) * 1000)
peer = statistics.median(pulls["skopeo copy + umoci unpack"])
print(f"\n{'pull + unpack':52} {'median ms':>9} {'vs skopeo+umoci':>15}")
for k, v in pulls.items():
    m = statistics.median(v); print(f"{k:52} {m:9.1f} {m/peer:14.2f}x")

# Launch: the last cgsight store and umoci bundle stay for this part.
env = dict(base_env, CGSIGHT_IMAGE_DIR=f"{work}/store")
bundle = f"{work}/sk/bundle"
import json
cfg = json.load(open(f"{bundle}/config.json"))
cfg["process"]["args"] = ["/bin/true"]; cfg["process"]["terminal"] = False
cfg["linux"]["resources"] = {"memory": {"limit": 256 << 20}, "cpu": {"quota": 100000, "period": 100000}}
json.dump(cfg, open(f"{bundle}/config.json", "w"))
lim = ["--rm", "--memory", "256m", "--cpus", "1", "--no-proc-views", "--net", "none"]  # crun's bundle: an empty netns too
cases = [
    ("crun run (umoci bundle of the image)", ["crun", "run", "--bundle", bundle, "cgsight-bench-img"]),
    ("cgsight launch IMAGE /bin/true", [bin, "launch", *lim, ref, "/bin/true"]),
    ("cgsight launch -- /bin/true (host root)", [bin, "launch", *lim, "--", "/bin/true"]),
]
res = {}
for name, cmd in cases:
    run(cmd, env)  # warm-up (fills the seccomp cache)
for i in range($launches):
    for name, cmd in cases:
        res.setdefault(name, []).append(timed(cmd, env))
crun = statistics.median(res[cases[0][0]])
print(f"\n{'launch of /bin/true (256m, 1 cpu, views off)':52} {'median ms':>9} {'p90 ms':>7} {'vs crun':>8}")
for name, _ in cases:
    v = sorted(res[name]); m = statistics.median(v)
    print(f"{name:52} {m:9.2f} {v[int(len(v)*0.9)-1]:7.2f} {m/crun:7.2f}x")
PY
: > "$work/empty"
unshare -m sh -c "mount --bind '$work/empty' /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null || true
  python3 '$work/run.py'"
