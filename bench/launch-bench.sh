#!/usr/bin/env bash
# Start latency of `/bin/true` with a memory and CPU limit, side by side in one run:
#   cgsight launch (release build; containment on by default: seccomp filter + device rules;
#   with `--security-opt seccomp=unconfined`; with the /proc views; with the default bridge
#   network, in a private network namespace) vs crun run on an
#   equivalent bundle vs the `unshare -fpmuin --mount-proc chroot` floor.
# The device rules have no off switch (the allow-list is always applied), so the seccomp row
# is the difference that can be shown; the filter must come from the compiled-program cache,
# which the script checks (cache_hit=true in the launcher's debug log) before measuring.
# crun 1.8 refuses this hybrid host (cgroup2 holds hugetlb), so everything runs inside a
# private mount namespace where an empty file hides /sys/fs/cgroup/unified/cgroup.controllers.
# Usage: bench/launch-bench.sh [RUNS]   (root)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-40}
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }
cargo build --release -q -p cgsight
bin=$PWD/target/release/cgsight
work=$(mktemp -d /tmp/cgsight-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bundle"
( cd "$work/bundle" && crun spec )
mkdir -p "$work/rootfs"
python3 - "$work/bundle/config.json" "$work/rootfs" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["root"] = {"path": sys.argv[2], "readonly": True}
c["process"]["args"] = ["/bin/true"]; c["process"]["terminal"] = False
c["linux"]["resources"] = {"memory": {"limit": 256 << 20}, "cpu": {"quota": 100000, "period": 100000}}
json.dump(c, open(p, "w"))
PY
: > "$work/empty"
cat > "$work/run.py" <<PY
import re, subprocess, time, statistics, sys
runs = $runs
cases = [
  ("floor: unshare -fpmuin --mount-proc chroot ROOTFS /bin/true", ["unshare", "-fpmuin", "--mount-proc", "chroot", "$work/rootfs", "/bin/true"]),
  ("crun run (256m, 1 cpu)", ["crun", "run", "--bundle", "$work/bundle", "cgsight-bench"]),
  ("cgsight launch --rm --memory 256m --cpus 1 --no-proc-views --net none", ["$bin", "launch", "--rm", "--memory", "256m", "--cpus", "1", "--no-proc-views", "--net", "none", "--", "/bin/true"]),
  ("  same, --security-opt seccomp=unconfined", ["$bin", "launch", "--rm", "--memory", "256m", "--cpus", "1", "--no-proc-views", "--net", "none", "--security-opt", "seccomp=unconfined", "--", "/bin/true"]),
  ("  same, views on", ["$bin", "launch", "--rm", "--memory", "256m", "--cpus", "1", "--net", "none", "--", "/bin/true"]),
  ("  same, views on, --net bridge (the default)", ["$bin", "launch", "--rm", "--memory", "256m", "--cpus", "1", "--", "/bin/true"]),
]
res = {}
for name, cmd in cases:  # warm-up (also starts the views daemon, fills the filter cache)
    subprocess.run(cmd, check=True)
log = subprocess.run(cases[2][1], check=True, capture_output=True, text=True,
                     env={"CGSIGHT_LOG": "cgsight_launcher=debug", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}).stderr
log = re.sub(r"\x1b\[[0-9;]*m", "", log)  # the log is coloured
if "cache_hit=true" not in log:
    sys.exit("the seccomp filter did not come from the cache:\n" + log)
print("seccomp filter: from the compiled-program cache (cache_hit=true)")
for i in range(runs):  # interleaved so drift hits every case alike
    for name, cmd in cases:
        t = time.perf_counter(); subprocess.run(cmd, check=True); res.setdefault(name, []).append((time.perf_counter() - t) * 1000)
# What containment itself costs on the launch path, from the launcher's debug log (its own
# clock, so host noise that dwarfs a sub-millisecond difference in the rows above is out).
spans = {"seccomp filter ready": [], "device rules applied": []}
for i in range(20):
    log = subprocess.run(cases[2][1], check=True, capture_output=True, text=True,
                         env={"CGSIGHT_LOG": "cgsight_launcher=debug", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}).stderr
    for line in re.sub(r"\x1b\[[0-9;]*m", "", log).splitlines():
        for k in spans:
            m = re.search(r"\bus=(\d+)", line)
            if k in line and m:
                spans[k].append(int(m.group(1)))
crun = statistics.median(res[cases[1][0]])
print(f"{'case':60} {'median ms':>9} {'p90 ms':>7} {'vs crun':>7}")
for name, _ in cases:
    v = sorted(res[name]); med = statistics.median(v)
    print(f"{name:60} {med:9.2f} {v[int(len(v)*0.9)-1]:7.2f} {med/crun:7.2f}x")
print()
for k, v in spans.items():
    if not v:
        sys.exit(f"no '{k}' span in the launcher's debug log")
    print(f"containment: {k:40} median {statistics.median(v):6.0f} µs  max {max(v):6d} µs  ({len(v)} launches)")
PY
# The rootfs for crun and the floor: a bind of the host / (no submounts, like cgsight's lower).
# A private network namespace too: the bridge row's cgsight0 and its rules vanish with it.
unshare -mn sh -c "ip link set lo up; mount --bind '$work/empty' /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null || true
  mount --bind / '$work/rootfs' && python3 '$work/run.py'"
# The filter's install (seccomp(2) in the container's child, just before exec), and the cold
# compile the cache saves.
cargo run --release -q -p cgsight-seccomp --example seccomp_timing
