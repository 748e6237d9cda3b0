#!/usr/bin/env python3
"""Live test of panel_queries.py against a real Prometheus scraping a FIXTURE, not the agent.

This proves the tool's logic only: variable resolution and substitution, $__rate_interval,
label-values calls, instant queries, classification and the exit code of --require-all, plus
that our dashboards, recording rules and the metric names they assume agree with each other.
It does NOT test the cgsight agent: the exposition is the hand-written file
fixtures/cadvisor-fixture.prom (cAdvisor names and labels as the agent will export them),
served by `python3 -m http.server`. The end-to-end check runs panel_queries.py against a
Prometheus that scrapes the real agent.

Steps: copy the fixture to a private temp dir as `metrics`, rewrite it every 0.5 s with counters
grown (so rates are non-zero), serve it with `python3 -m http.server` on 127.0.0.1, start
`prometheus` on 127.0.0.1 (free ports, --storage.tsdb.path in the temp dir, 1 s scrape and rule
evaluation, our rule files loaded), wait for the recording rules to produce data, run the
checks, then stop both processes (by their own pid) and delete the temp dir.

Prints one line per check and `fixture: N passed, M failed`; exit 1 on failure, 77 when no
`prometheus` binary is installed (skip).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import panel_queries as pq  # noqa: E402

FIXTURE = os.path.join(HERE, "fixtures", "cadvisor-fixture.prom")
COUNTER_RE = re.compile(r"^(\w+?)(_total|_bucket|_sum|_count|_failcnt)?(\{.*\})?\s+(\S+)$")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def counter_families(text):
    return {m.group(1) for m in re.finditer(r"^# TYPE (\S+) (counter|histogram)$", text, re.M)}


def grown(text, tick):
    """The fixture with every counter/histogram sample multiplied by (1 + tick/100)."""
    families = counter_families(text)
    out = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            out.append(line)
            continue
        name = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", line).group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in families or base in families:
            head, _, value = line.rpartition(" ")
            line = "%s %r" % (head, float(value) * (1 + tick / 100.0))
        out.append(line)
    return "\n".join(out) + "\n"


class Writer(threading.Thread):
    def __init__(self, path, text):
        super().__init__(daemon=True)
        self.path, self.text = path, text
        self.stop = threading.Event()

    def run(self):
        tick = 0
        while not self.stop.is_set():
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(grown(self.text, tick))
            os.replace(tmp, self.path)
            tick += 1
            self.stop.wait(0.5)


def http_get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def wait_for(fn, timeout, what):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            if fn():
                return
        except Exception as err:  # noqa: BLE001 - keep polling
            last = err
        time.sleep(0.3)
    raise RuntimeError("timed out waiting for %s (%s)" % (what, last))


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print("ok   %s" % name)
        else:
            self.failed += 1
            print("FAIL %s%s" % (name, (": " + detail) if detail else ""))


def stop(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def empties(result):
    return [e for e in result["queries"] if e["class"] != "excepted" and e["status"] != "data"]


def describe(entries):
    return "; ".join("%s %s: %s" % (e.get("panel") or e.get("variable"), e.get("refId", ""),
                                     e.get("error") or e["status"]) for e in entries)


def run_checks(c, url, http_port, tmp):
    instance = "127.0.0.1:%d" % http_port
    prom = pq.Prometheus(url, range_s=300)
    builtins = pq.builtin_vars(1.0, range_s=300)
    c.check("builtins: $__rate_interval = max(interval + scrape, 4 x scrape) = 4s",
            builtins["__rate_interval"] == "4s", builtins["__rate_interval"])
    c.check("builtins: $__range = 5m", builtins["__range"] == "5m", builtins["__range"])

    ours = {os.path.basename(p): p for p in pq.OURS}
    # Host overview and health: every query must return data.
    for fname, want in (("host-overview.json", instance), ("cgsight-health.json", ".*")):
        res = pq.run_dashboard(ours[fname], prom, {}, builtins)
        c.check("%s: $instance = %s (single: the scraped target; All: allValue)" % (fname, want),
                res["variables"].get("instance") == want, str(res["variables"]))
        c.check("%s: every query returns data (%d)" % (fname, len(res["queries"])),
                not empties(res), describe(empties(res)))
        c.check("%s: no unresolved variables" % fname,
                not any(e.get("unresolved") for e in res["queries"]))
    host = pq.run_dashboard(ours["host-overview.json"], prom, {}, builtins)
    top = [e for e in host["queries"] if e.get("panel") == "Top $topn by CPU"]
    c.check("host-overview: $topn took the custom variable's current value (10)",
            bool(top) and top[0]["query"].startswith("topk(10,"),
            top[0]["query"] if top else "no panel")

    # Container detail, container given: web has every limit, so everything returns data.
    res = pq.run_dashboard(ours["container-detail.json"], prom, {"container": "web"}, builtins)
    c.check("container-detail (container=web): every query returns data (%d)"
            % len(res["queries"]), not empties(res), describe(empties(res)))
    sample = [e for e in res["queries"] if e["kind"] == "panel"][0]["query"]
    c.check("container-detail: $container and $instance substituted in queries",
            'name=~"web"' in sample and 'instance=~"%s"' % instance in sample, sample)

    # Container detail, default: the first container in sort order is db, which has no limits;
    # exactly the limit/CFS queries are empty, the rest returns data.
    res = pq.run_dashboard(ours["container-detail.json"], prom, {}, builtins)
    c.check("container-detail: default $container = first sorted name (db)",
            res["variables"].get("container") == "db", str(res["variables"]))
    limit_words = ("limit", "cfs", "ratio", "pids_max")
    bad = [e for e in empties(res) if not any(w in e["query"] for w in limit_words)]
    c.check("container-detail (db, unlimited): only limit/CFS queries are empty",
            bool(empties(res)) and not bad, describe(bad))

    # Community dashboards: classification and the share of cAdvisor queries with data.
    comm = {f: os.path.join(pq.COMMUNITY_DIR, f) for f in pq.COMMUNITY}
    if all(os.path.exists(p) for p in comm.values()):
        r1 = pq.run_dashboard(comm["cadvisor-exporter-14282.json"], prom, {}, builtins)
        s1 = r1["summary"]
        c.check("14282: all-value .* for $host/$container, 8 cAdvisor queries, all with data",
                r1["variables"] == {"host": ".*", "container": ".*"}
                and s1["cadvisor"]["total"] == 8 and s1["cadvisor"]["data"] == 8,
                json.dumps([r1["variables"], s1]))
        r2 = pq.run_dashboard(comm["dockprom-docker-containers.json"], prom, {}, builtins)
        s2 = r2["summary"]
        missing = [e["query"] for e in r2["queries"]
                   if e["class"] == "cadvisor" and e["status"] != "data"]
        c.check("dockprom: 8 node_exporter queries excepted, 7/8 cAdvisor queries with data",
                s2["excepted"]["total"] == 8 and s2["cadvisor"]["total"] == 8
                and s2["cadvisor"]["data"] == 7, json.dumps(s2))
        c.check("dockprom: the empty one is container_fs_usage_bytes (not exported)",
                missing == ["sum(container_fs_usage_bytes)"], str(missing))
    else:
        print("skip community dashboards: %s not found" % pq.COMMUNITY_DIR)

    # The command line: exit codes and the JSON report.
    script = os.path.join(HERE, "panel_queries.py")
    report = os.path.join(tmp, "report.json")
    base = [sys.executable, script, "--url", url, "--scrape-interval", "1s", "--range", "5m",
            "--quiet"]
    p = subprocess.run(base + ["--ours", "--var", "container=web", "--require-all", "--json",
                               report], capture_output=True, text=True)
    c.check("cli: --ours --var container=web --require-all exits 0", p.returncode == 0,
            p.stdout + p.stderr)
    with open(report, encoding="utf-8") as fh:
        data = json.load(fh)
    c.check("cli: JSON report has the three dashboards",
            [r["uid"] for r in data["results"]] == ["cgsight-host-overview",
                                                    "cgsight-container-detail",
                                                    "cgsight-health"])
    p = subprocess.run(base + ["--ours", "--require-all"], capture_output=True, text=True)
    c.check("cli: --require-all exits 1 when a query is empty (db has no limits)",
            p.returncode == 1, "rc=%d" % p.returncode)
    p = subprocess.run(base + ["--ours"], capture_output=True, text=True)
    c.check("cli: without --require-all exits 0", p.returncode == 0, "rc=%d" % p.returncode)
    p = subprocess.run([sys.executable, script, "--url", "http://127.0.0.1:%d" % free_port(),
                        "--ours", "--quiet"], capture_output=True, text=True)
    c.check("cli: unreachable Prometheus exits 2", p.returncode == 2, "rc=%d" % p.returncode)


def main():
    prom_bin = shutil.which("prometheus")
    if not prom_bin:
        print("skip: no prometheus binary (apt-get install prometheus)")
        return 77
    c = Checks()
    tmp = tempfile.mkdtemp(prefix="cgsight-dash-fixture-")
    serve = os.path.join(tmp, "serve")
    os.makedirs(serve)
    http_proc = prom_proc = writer = None
    try:
        with open(FIXTURE, encoding="utf-8") as fh:
            text = fh.read()
        writer = Writer(os.path.join(serve, "metrics"), text)
        writer.start()
        http_port, prom_port = free_port(), free_port()
        http_proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(http_port), "--bind", "127.0.0.1",
             "--directory", serve], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w", encoding="utf-8") as fh:
            fh.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                     "rule_files:\n  - %s\n  - %s\n"
                     "scrape_configs:\n  - job_name: cgsight\n    metrics_path: /metrics\n"
                     "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % (
                         os.path.join(ROOT, "rules", "cgsight-recording.yml"),
                         os.path.join(ROOT, "rules", "cgsight-alerts.yml"), http_port))
        log = open(os.path.join(tmp, "prometheus.log"), "w")
        prom_proc = subprocess.Popen(
            [prom_bin, "--config.file=" + config, "--storage.tsdb.path=" + os.path.join(tmp, "data"),
             "--web.listen-address=127.0.0.1:%d" % prom_port, "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
        url = "http://127.0.0.1:%d" % prom_port
        prom = pq.Prometheus(url)

        def has(expr):
            prom.now = time.time()
            return bool(prom.instant(expr).get("result"))
        wait_for(lambda: http_get(url + "/-/ready"), 30, "prometheus ready")
        wait_for(lambda: has('up{job="cgsight"} == 1'), 30, "first scrape")
        for rule in ("container:cpu_usage_cores:rate1m", "container:cpu_cfs_throttled_ratio:rate5m",
                     "container:fs_writes:rate1m"):
            wait_for(lambda: has(rule), 30, rule)
        time.sleep(2)  # a few more samples inside every $__rate_interval window
        run_checks(c, url, http_port, tmp)
    except Exception as err:  # noqa: BLE001 - report, then clean up
        c.check("fixture setup", False, str(err))
        logf = os.path.join(tmp, "prometheus.log")
        if os.path.exists(logf):
            with open(logf, encoding="utf-8", errors="replace") as fh:
                print(fh.read()[-2000:])
    finally:
        if writer:
            writer.stop.set()
            writer.join(timeout=5)
        stop(prom_proc)
        stop(http_proc)
        shutil.rmtree(tmp, ignore_errors=True)
    print("fixture: %d passed, %d failed" % (c.passed, c.failed))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
