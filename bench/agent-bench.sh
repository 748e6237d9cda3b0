#!/usr/bin/env bash
# Agent scrape cost at N real cgroups, beside the floor (agent/examples/floor.rs: the same walk
# and the same accounting files, kept open and pread, no parsing or encoding) and
# node_exporter's scrape. Per N: scrape p50/p99 wall, CPU µs per cgroup per scrape (the agent
# process's own CPU time around the scrapes), RSS, and the agent/floor CPU ratio.
# Usage: bench/agent-bench.sh [N...]   (default: 100 1000 5000 10000). Root; cgroups
# /cgsight-bench-<pid>-*, removed by the trap. A tenth of the cgroups hold a sleeping process.
# BEFORE=<cgsight binary> also measures that binary in the same run, interleaved (before/after).
set -euo pipefail
cd "$(dirname "$0")/.."
NS=("$@"); [ $# -eq 0 ] && NS=(100 1000 5000 10000)
SCRAPES=${SCRAPES:-40}
TAG="cgsight-bench-$$"
PIDS=()
HIER=()
cleanup() {
  rm -f "${RES:-}"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  for h in "${HIER[@]}"; do
    for _ in 1 2 3; do
      compgen -G "$h/$TAG-*" >/dev/null || break
      rmdir "$h/$TAG-"* 2>/dev/null || sleep 0.2
    done
  done
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One invocation: built apart, the two would unify dependency features differently and rebuild.
cargo build -q --release -p cgsight --bin cgsight -p cgsight-agent --example floor
T=${CARGO_TARGET_DIR:-target}
BIN=$T/release/cgsight; FLOOR=$T/release/examples/floor

# The hierarchies that hold cgroups: every v1 controller mount (except name=systemd), and the
# cgroup2 mount (unified on v2, /sys/fs/cgroup/unified on hybrid).
while read -r _ mp _ opts; do
  case "$mp" in /sys/fs/cgroup/systemd|/sys/fs/cgroup/net_cls*|/sys/fs/cgroup/perf_event|/sys/fs/cgroup/misc|/sys/fs/cgroup/rdma|/sys/fs/cgroup/hugetlb) continue;; esac
  HIER+=("$mp")
done < <(awk '$3=="cgroup"||$3=="cgroup2"{print $1, $2, $3, $4}' /proc/mounts)

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
pctl() { sort -n | awk -v p="$1" '{a[NR]=$1} END{i=int(NR*p/100+0.5); if(i<1)i=1; if(i>NR)i=NR; printf "%.2f", a[i]}'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
TCK=$(getconf CLK_TCK)

scrape_series() { # url count -> ms per scrape, one per line
  for _ in $(seq "$2"); do curl -s -o /dev/null -w '%{time_total}\n' "$1"; done | awk '{printf "%.3f\n", $1*1000}'
}

measure() { # name pid url scrapes cgroups
  local name=$1 pid=$2 url=$3 n=$4 cg=$5
  scrape_series "$url" 3 >/dev/null
  local t0; t0=$(cpu_ticks "$pid")
  local lat; lat=$(scrape_series "$url" "$n")
  local t1; t1=$(cpu_ticks "$pid")
  local body; body=$(curl -s "$url")
  local p50 p99; p50=$(echo "$lat" | pctl 50); p99=$(echo "$lat" | pctl 99)
  local cpu_ms; cpu_ms=$(awk -v a="$t0" -v b="$t1" -v n="$n" -v hz="$TCK" 'BEGIN{printf "%.2f", (b-a)*1000/hz/n}')
  local per_cg; per_cg=$(awk -v c="$cpu_ms" -v g="$cg" 'BEGIN{printf "%.1f", c*1000/g}')
  local fb; fb=$(echo "$body" | awk '$1=="cgsight_agent_open_per_read_cgroups"{print $2}')
  printf "%-14s p50 %8s ms  p99 %8s ms  cpu/scrape %8s ms  cpu/cgroup %7s us  rss %7s KiB  body %9s B%s\n" \
    "$name" "$p50" "$p99" "$cpu_ms" "$per_cg" "$(rss_kib "$pid")" "$(echo "$body" | wc -c)" "${fb:+  open-per-read cgroups $fb}"
  echo "$name $p50 $p99 $cpu_ms $(rss_kib "$pid")" >> "$RES"
}

start_agent() { # binary -> "pid port"
  local p; p=$(free_port)
  "$1" agent --all-cgroups --listen "127.0.0.1:$p" 2>/dev/null & local ap=$!
  for _ in $(seq 600); do curl -sf -o /dev/null "http://127.0.0.1:$p/healthz" && break; sleep 0.1; done
  echo "$ap $p"
}

RES=$(mktemp /tmp/cgsight-bench-res.XXXXXX)
for N in "${NS[@]}"; do
  echo "== N=$N cgroups ($(date +%T))"
  for h in "${HIER[@]}"; do (cd "$h" && mkdir $(seq -f "$TAG-%.0f" 1 "$N")); done
  for i in $(seq 10 10 "$N"); do
    sleep 3600 & sp=$!; PIDS+=("$sp")
    for h in "${HIER[@]}"; do echo "$sp" > "$h/$TAG-$i/cgroup.procs" 2>/dev/null || true; done
  done
  : > "$RES"
  # About SCRAPES*1000 cgroup-reads per agent: enough CPU ticks (10 ms) at small N.
  n=$(( SCRAPES * 1000 / N )); (( n > 400 )) && n=400; (( n < 10 )) && n=10
  FL=$($FLOOR $(( n + 1 )) | tail -n +2)
  CG=$(echo "$FL" | awk 'NR==1{print $6}')
  for bin in ${BEFORE:+"$BEFORE"} "$BIN"; do
    read -r AP P < <(start_agent "$bin"); PIDS+=("$AP")
    name=cgsight-agent; [ "$bin" = "${BEFORE:-}" ] && name=agent-before
    measure "$name" "$AP" "http://127.0.0.1:$P/metrics" "$n" "$CG"
    kill "$AP"; wait "$AP" 2>/dev/null || true
  done
  NP=$(free_port); prometheus-node-exporter --web.listen-address="127.0.0.1:$NP" >/dev/null 2>&1 & NEP=$!; PIDS+=("$NEP")
  for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$NP/metrics" && break; sleep 0.1; done
  measure "node_exporter" "$NEP" "http://127.0.0.1:$NP/metrics" "$n" "$CG"
  kill "$NEP"; wait "$NEP" 2>/dev/null || true
  fw50=$(echo "$FL" | awk '{print $2}' | pctl 50); fw99=$(echo "$FL" | awk '{print $2}' | pctl 99)
  fcpu=$(echo "$FL" | awk '{print $4/1000}' | pctl 50)
  printf "%-14s p50 %8s ms  p99 %8s ms  cpu/scrape %8s ms  cpu/cgroup %7s us  (cgroups %s, files %s, kept open %s)\n" "floor" "$fw50" "$fw99" "$fcpu" \
    "$(awk -v c="$fcpu" -v g="$CG" 'BEGIN{printf "%.1f", c*1000/g}')" "$CG" "$(echo "$FL" | awk 'NR==1{print $8}')" "$(echo "$FL" | awk 'END{print $10}')"
  echo "floor $fw50 $fw99 $fcpu 0" >> "$RES"
  awk '{p50[$1]=$2; cpu[$1]=$4} END{
    printf "ratio agent/floor: cpu %.2fx  wall p50 %.2fx; agent/node_exporter wall p50 %.2fx", cpu["cgsight-agent"]/cpu["floor"], p50["cgsight-agent"]/p50["floor"], p50["cgsight-agent"]/p50["node_exporter"]
    if ("agent-before" in cpu) printf "; before/after cpu %.2fx", cpu["agent-before"]/cpu["cgsight-agent"]
    printf "\n"}' "$RES"
  cleanup
done
rm -f "$RES"; PIDS=()

# cAdvisor's reported setting (#2523): 29 containers, 15 s scrape. 29 cgroups at /cgsight/<id>
# with a sleeping process each, the agent in its default mode (containers, services, root).
if [ "${CADVISOR_SETTING:-1}" = 1 ]; then
  echo "== cAdvisor setting: 29 containers"
  IDS=()
  for i in $(seq 29); do
    id=$(printf 'b0b0%08x%04x%048d' $$ "$i" 0); IDS+=("$id")
    sleep 3600 & sp=$!; PIDS+=("$sp")
    for h in "${HIER[@]}"; do mkdir -p "$h/cgsight/$id"; echo "$sp" > "$h/cgsight/$id/cgroup.procs" 2>/dev/null || true; done
  done
  RES=$(mktemp /tmp/cgsight-bench-res.XXXXXX)
  P=$(free_port); $BIN agent --listen "127.0.0.1:$P" 2>/dev/null & AP=$!; PIDS+=("$AP")
  for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$P/healthz" && break; sleep 0.1; done
  measure "cgsight-agent" "$AP" "http://127.0.0.1:$P/metrics" "$SCRAPES" 31
  awk '{printf "cAdvisor setting: %.3f ms CPU per scrape / 15 s = %.4f %% of a core (cAdvisor: ~7 %%)\n", $4, $4/15000*100}' "$RES"
  kill "$AP"; wait "$AP" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for id in "${IDS[@]}"; do for h in "${HIER[@]}"; do rmdir "$h/cgsight/$id" 2>/dev/null || true; done; done
  rm -f "$RES"
fi
