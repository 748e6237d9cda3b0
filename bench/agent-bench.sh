#!/usr/bin/env bash
# Agent scrape cost at N real cgroups, side by side with the floor (agent/examples/floor.rs:
# the same walk and file reads, no parsing/encoding) and node_exporter's scrape.
# Usage: bench/agent-bench.sh [N...]   (default: 100 1000). Root; cgroups /cgsight-bench-<pid>-*,
# removed by the trap. A tenth of the cgroups hold a sleeping process.
set -euo pipefail
cd "$(dirname "$0")/.."
NS=("${@:-100 1000}"); [ $# -eq 0 ] && NS=(100 1000)
SCRAPES=${SCRAPES:-40}
TAG="cgsight-bench-$$"
PIDS=()
cleanup() {
  rm -f "${RES:-}"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for d in /sys/fs/cgroup/*/"$TAG"-* /sys/fs/cgroup/"$TAG"-*; do
    [ -d "$d" ] || continue
    for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  done
  for d in /sys/fs/cgroup/*/"$TAG"-* /sys/fs/cgroup/"$TAG"-*; do [ -d "$d" ] && rmdir "$d" 2>/dev/null || true; done
  for d in /sys/fs/cgroup/*/"$TAG"-* /sys/fs/cgroup/"$TAG"-*; do [ -d "$d" ] && sleep 0.2 && rmdir "$d" 2>/dev/null || true; done
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build -q --release -p cgsight --bin cgsight
cargo build -q --release -p cgsight-agent --example floor
BIN=target/release/cgsight; FLOOR=target/release/examples/floor

# The hierarchies that hold cgroups: every v1 controller mount (except name=systemd), and the
# cgroup2 mount (unified on v2, /sys/fs/cgroup/unified on hybrid).
HIER=()
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

measure() { # name pid url
  local name=$1 pid=$2 url=$3
  scrape_series "$url" 3 >/dev/null
  local t0; t0=$(cpu_ticks "$pid")
  local lat; lat=$(scrape_series "$url" "$SCRAPES")
  local t1; t1=$(cpu_ticks "$pid")
  local size; size=$(curl -s "$url" | wc -c)
  local p50 p99; p50=$(echo "$lat" | pctl 50); p99=$(echo "$lat" | pctl 99)
  local cpu_ms; cpu_ms=$(awk -v a="$t0" -v b="$t1" -v n="$SCRAPES" -v hz="$TCK" 'BEGIN{printf "%.2f", (b-a)*1000/hz/n}')
  printf "%-14s p50 %8s ms  p99 %8s ms  cpu/scrape %7s ms  rss %6s KiB  body %8s B\n" "$name" "$p50" "$p99" "$cpu_ms" "$(rss_kib "$pid")" "$size"
  echo "$name $p50 $p99 $cpu_ms $(rss_kib "$pid")" >> "$RES"
}

RES=$(mktemp /tmp/cgsight-bench-res.XXXXXX)
for N in "${NS[@]}"; do
  echo "== N=$N cgroups ($(date +%T))"
  for i in $(seq "$N"); do
    for h in "${HIER[@]}"; do mkdir -p "$h/$TAG-$i"; done
    if (( i % 10 == 0 )); then
      sleep 3600 & sp=$!; PIDS+=("$sp")
      for h in "${HIER[@]}"; do echo "$sp" > "$h/$TAG-$i/cgroup.procs" 2>/dev/null || true; done
    fi
  done
  : > "$RES"
  P=$(free_port); $BIN agent --all-cgroups --listen "127.0.0.1:$P" 2>/dev/null & AP=$!; PIDS+=("$AP")
  NP=$(free_port); prometheus-node-exporter --web.listen-address="127.0.0.1:$NP" >/dev/null 2>&1 & NEP=$!; PIDS+=("$NEP")
  for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$P/healthz" && curl -sf -o /dev/null "http://127.0.0.1:$NP/metrics" && break; sleep 0.1; done
  measure "cgsight-agent" "$AP" "http://127.0.0.1:$P/metrics"
  measure "node_exporter" "$NEP" "http://127.0.0.1:$NP/metrics"
  FL=$($FLOOR "$SCRAPES" | awk '{print $2}')
  printf "%-14s p50 %8s ms  p99 %8s ms  (%s)\n" "floor" "$(echo "$FL" | pctl 50)" "$(echo "$FL" | pctl 99)" "$($FLOOR 1 | cut -d' ' -f3-)"
  echo "floor $(echo "$FL" | pctl 50) $(echo "$FL" | pctl 99) 0 0" >> "$RES"
  awk '{p50[$1]=$2; p99[$1]=$3} END{printf "ratio agent/floor p50 %.2fx  p99 %.2fx; agent/node_exporter p50 %.2fx\n", p50["cgsight-agent"]/p50["floor"], p99["cgsight-agent"]/p99["floor"], p50["cgsight-agent"]/p50["node_exporter"]}' "$RES"
  kill "$AP" "$NEP"; wait "$AP" "$NEP" 2>/dev/null || true
  cleanup; PIDS=()
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
  measure "cgsight-agent" "$AP" "http://127.0.0.1:$P/metrics"
  awk '{printf "cAdvisor setting: %.3f ms CPU per scrape / 15 s = %.4f %% of a core (cAdvisor: ~7 %%)\n", $4, $4/15000*100}' "$RES"
  kill "$AP"; wait "$AP" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for id in "${IDS[@]}"; do for h in "${HIER[@]}"; do rmdir "$h/cgsight/$id" 2>/dev/null || true; done; done
  rm -f "$RES"
fi
