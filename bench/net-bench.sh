#!/usr/bin/env bash
# What bridge networking costs, side by side in one run, all inside a private network namespace
# (the bridge, its rules and the traffic never touch the machine's own interfaces):
#   1. launch latency of `/bin/true`: --net none vs --net bridge vs --net bridge with one -p,
#      plus the launcher's own "network ready" span (its clock: the part host noise cannot hide);
#   2. TCP throughput with iperf3: container -> host over the veth and bridge vs the host's
#      loopback, same server, same duration.
# Usage: bench/net-bench.sh [RUNS] [SECONDS]   (root; defaults 40 launches, 5 s per iperf3 run)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-40}
secs=${2:-5}
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }
command -v iperf3 >/dev/null || { echo "iperf3 missing: scripts/install-deps.sh installs it" >&2; exit 2; }
cargo build --release -q -p cgsight
bin=$PWD/target/release/cgsight
work=$(mktemp -d /tmp/cgsight-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

cat > "$work/run.py" <<PY
import json, re, statistics, subprocess, sys, time
bin, runs, secs = "$bin", $runs, $secs
env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CGSIGHT_STATE_DIR": "$work/state",
       "CGSIGHT_ROOT_DIR": "$work/root"}
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
base = [bin, "launch", "--rm", "--no-proc-views", "--memory", "256m", "--cpus", "1"]
cases = [
    ("launch --net none", base + ["--net", "none", "--", "/bin/true"]),
    ("launch --net bridge", base + ["--", "/bin/true"]),
    ("launch --net bridge -p 8080:80", base + ["-p", "8080:80", "--", "/bin/true"]),
]
for _, cmd in cases:  # warm-up; the first bridge launch creates cgsight0
    subprocess.run(cmd, check=True, env=env)
res = {}
for _ in range(runs):  # interleaved, so drift hits every case alike
    for name, cmd in cases:
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env)
        res.setdefault(name, []).append((time.perf_counter() - t) * 1000)
spans = {name: [] for name, _ in cases[1:]}
for _ in range(20):
    for name, cmd in cases[1:]:
        log = subprocess.run(cmd, check=True, capture_output=True, text=True,
                             env=dict(env, CGSIGHT_LOG="cgsight_launcher=debug")).stderr
        for line in re.sub(r"\x1b\[[0-9;]*m", "", log).splitlines():
            m = re.search(r"\bus=(\d+)", line)
            if "network ready" in line and m:
                spans[name].append(int(m.group(1)))
none = statistics.median(res[cases[0][0]])
print(f"{'launch /bin/true (256m, 1 cpu)':40} {'median ms':>9} {'p90 ms':>7} {'added ms':>8}")
for name, _ in cases:
    v = sorted(res[name]); med = statistics.median(v)
    print(f"{name:40} {med:9.2f} {v[int(len(v) * 0.9) - 1]:7.2f} {med - none:8.2f}")
for name, v in spans.items():
    if not v:
        sys.exit(f"no 'network ready' span for {name}")
    print(f"  'network ready' span, {name:30} median {statistics.median(v) / 1000:6.2f} ms")

addr = json.loads(subprocess.run(["ip", "-j", "-4", "addr", "show", "cgsight0"], check=True,
                                 capture_output=True, text=True).stdout)
gw = addr[0]["addr_info"][0]["local"]
server = subprocess.Popen(["iperf3", "-s", "-p", "5201"], stdout=subprocess.DEVNULL)
time.sleep(0.5)
def gbps(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
try:
    rows = []
    for _ in range(3):  # alternated
        rows.append(("host loopback", gbps(["iperf3", "-J", "-c", "127.0.0.1", "-t", str(secs)])))
        rows.append(("container -> host (veth + bridge)",
                     gbps(base + ["--", "iperf3", "-J", "-c", gw, "-t", str(secs)])))
finally:
    server.terminate()
    server.wait()
print()
lo = statistics.median([g for n, g in rows if n == "host loopback"])
for name in ["host loopback", "container -> host (veth + bridge)"]:
    med = statistics.median([g for n, g in rows if n == name])
    print(f"iperf3 {name:36} median {med:7.2f} Gbit/s  {med / lo:5.2f}x loopback")
PY
# A private network namespace (and mount namespace, for the views' defaults): nothing here
# outlives the script.
unshare -n python3 "$work/run.py"
