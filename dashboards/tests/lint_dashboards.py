#!/usr/bin/env python3
"""Lint cgsight's Grafana dashboards, rule files and provisioning (standard library only).

Checks, per dashboard:
  json          the file is valid JSON and is the dashboard object itself
  uid           the uid is the stable one listed in STABLE_UIDS, schemaVersion >= 36, id null
  variables     a `datasource` variable (type datasource, Prometheus); every query variable and
                its datasource reference ${datasource}; an `instance` variable from label_values
  panel-ids     panel ids are unique, including panels nested in rows
  datasource    every panel and every target references ${datasource}
  units         every panel (rows excepted) has fieldConfig.defaults.unit
  layout        every panel has a title and a gridPos; refIds are unique within a panel
  no-hardcoded  no literal instance/host values: instance matchers use $instance, no IPs,
                host:port pairs or localhost in queries
  rate-interval every range selector in a panel query is [$__rate_interval] or [$__range]
  metrics       every metric a query (panel or variable) names is an exported family, a
                histogram series of one, a Prometheus synthetic series, or a recording rule
  labels        every label matched or grouped on is one the agent or Prometheus sets
  syntax        brackets, braces, parentheses and quotes balance in every query
  generated     the JSON equals what dashboards/build.py generates
and for the rule files, README and provisioning:
  alerts        the required alerts exist, each with summary, description and a `runbook`
                annotation (no runbook_url) whose anchor is a heading in dashboards/README.md
  provisioning  the datasource and dashboard provider files and prometheus.yml say what the
                README says (job cgsight, 127.0.0.1:9723, rule_files, provider path)

Prints one line per check and a closing line `lint: N passed, M failed`; exit 1 on failure.
"""

import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import panel_queries as pq  # noqa: E402

STABLE_UIDS = {
    "host-overview.json": "cgsight-host-overview",
    "container-detail.json": "cgsight-container-detail",
    "cgsight-health.json": "cgsight-health",
}
INSTANCE_VAR_QUERY = {
    "host-overview.json": "label_values(container_last_seen, instance)",
    "container-detail.json": "label_values(container_last_seen, instance)",
    "cgsight-health.json": 'label_values(up{job="cgsight"}, instance)',
}

# The families the cgsight agent and fs daemon export (names as cAdvisor's).
EXPORTED = set("""
container_cpu_usage_seconds_total container_cpu_user_seconds_total
container_cpu_system_seconds_total container_cpu_cfs_periods_total
container_cpu_cfs_throttled_periods_total container_cpu_cfs_throttled_seconds_total
container_memory_usage_bytes container_memory_working_set_bytes container_memory_rss
container_memory_cache container_memory_swap container_memory_mapped_file
container_memory_max_usage_bytes container_memory_failcnt container_memory_failures_total
container_spec_memory_limit_bytes container_spec_memory_swap_limit_bytes
container_spec_cpu_quota container_spec_cpu_period container_spec_cpu_shares
container_spec_cpuset_cpus_count container_spec_pids_max
container_network_receive_bytes_total container_network_receive_packets_total
container_network_receive_errors_total container_network_receive_packets_dropped_total
container_network_transmit_bytes_total container_network_transmit_packets_total
container_network_transmit_errors_total container_network_transmit_packets_dropped_total
container_fs_reads_total container_fs_writes_total
container_fs_reads_bytes_total container_fs_writes_bytes_total
container_processes container_threads container_threads_max container_oom_events_total
container_start_time_seconds container_last_seen
container_pressure_cpu_waiting_seconds_total container_pressure_cpu_stalled_seconds_total
container_pressure_memory_waiting_seconds_total container_pressure_memory_stalled_seconds_total
container_pressure_io_waiting_seconds_total container_pressure_io_stalled_seconds_total
container_info machine_cpu_cores machine_memory_bytes
cgsight_scrape_duration_seconds cgsight_scrape_errors_total cgsight_build_info
cgsight_fs_reads_total cgsight_fs_fallbacks_total
""".split())
HISTOGRAMS = {"cgsight_fs_read_duration_seconds"}
for _h in HISTOGRAMS:
    EXPORTED.update({_h + "_bucket", _h + "_sum", _h + "_count"})
# Series Prometheus itself creates for every target / for alerting.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
             "scrape_samples_post_metric_relabeling", "scrape_series_added", "ALERTS",
             "ALERTS_FOR_STATE"}
KNOWN_LABELS = {
    "id", "name", "image", "pod", "namespace", "container", "instance", "job", "cpu",
    "interface", "device", "failure_type", "scope", "runtime", "kind", "file", "reason", "le",
    "version", "alertname", "alertstate", "severity", "__name__",
}
REQUIRED_ALERTS = ["ContainerMemoryNearLimit", "ContainerCpuThrottled", "ContainerOomKilled",
                   "ContainerPidsNearLimit", "CgsightScrapeErrors", "CgsightFsFallbacks",
                   "TargetDown"]
RULE_FILES = [os.path.join(ROOT, "rules", f)
              for f in ("cgsight-recording.yml", "cgsight-alerts.yml")]


class Results:
    def __init__(self, out=None):
        self.passed = 0
        self.failed = 0
        self.failures = {}
        self.out = out if out is not None else sys.stdout

    def check(self, name, problems):
        problems = [p for p in problems if p]
        if problems:
            self.failed += 1
            self.failures[name] = problems
            print("FAIL %s" % name, file=self.out)
            for p in problems[:25]:
                print("     - %s" % p, file=self.out)
            if len(problems) > 25:
                print("     ... and %d more" % (len(problems) - 25), file=self.out)
        else:
            self.passed += 1
            print("ok   %s" % name, file=self.out)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def recording_rules():
    names = set()
    for path in RULE_FILES:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                m = re.match(r"^\s*-?\s*record:\s*['\"]?([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
                if m:
                    names.add(m.group(1))
    return names


def is_ds_ref(ds):
    if isinstance(ds, dict):
        return ds.get("uid") in ("${datasource}", "$datasource")
    return ds in ("${datasource}", "$datasource")


def is_var_ref(value, var):
    return value in ("$" + var, "${%s}" % var, "${%s:regex}" % var, "[[%s]]" % var)


def balance_problems(expr):
    stack = []
    pairs = {")": "(", "]": "[", "}": "{"}
    quote = None
    prev = ""
    for ch in expr:
        if quote:
            if ch == quote and prev != "\\":
                quote = None
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in ")]}":
            if not stack or stack.pop() != pairs[ch]:
                return "unbalanced %r" % ch
        prev = ch if prev != "\\" else ""
    if quote:
        return "unterminated string"
    if stack:
        return "unclosed %r" % stack[-1]
    return None


HOST_LITERAL = re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b|localhost|\b[\w.-]+:\d{2,5}\b")


def hardcoded_problems(where, expr):
    out = []
    info = pq.scan_promql(expr)
    for label, op, value in info["matchers"]:
        if label == "instance" and not is_var_ref(value, "instance"):
            out.append("%s: instance%s\"%s\" is hard-coded (use $instance)" % (where, op, value))
        if label in ("host", "hostname", "node", "nodename") and "$" not in value:
            out.append("%s: %s%s\"%s\" is hard-coded" % (where, label, op, value))
    stripped = re.sub(r"\[[^\]]*\]", "", expr)
    m = HOST_LITERAL.search(stripped)
    if m:
        out.append("%s: host-like literal %r" % (where, m.group(0)))
    return out


# ---------------------------------------------------------------------------------------------
# Dashboard checks
# ---------------------------------------------------------------------------------------------


def lint_dashboard(res, fname, allowed_metrics, path=None, check_generated=True):
    """Lint one dashboard; fname selects the expected uid and instance query."""
    path = path or os.path.join(ROOT, fname)
    tag = fname[:-5]
    try:
        with open(path, encoding="utf-8") as fh:
            dash = json.load(fh)
        problems = [] if isinstance(dash, dict) and "panels" in dash else [
            "not a dashboard object with panels"]
    except (OSError, ValueError) as err:
        res.check("%s: json" % tag, ["%s" % err])
        return
    res.check("%s: json" % tag, problems)

    uid = dash.get("uid")
    res.check("%s: uid" % tag, [
        None if uid == STABLE_UIDS[fname] else "uid %r, expected %r" % (uid, STABLE_UIDS[fname]),
        None if isinstance(uid, str) and re.match(r"^[a-zA-Z0-9_-]{1,40}$", uid or "")
        else "uid has invalid characters or length",
        None if isinstance(dash.get("schemaVersion"), int) and dash["schemaVersion"] >= 36
        else "schemaVersion %r < 36" % dash.get("schemaVersion"),
        None if dash.get("id") is None else "id must be null for import/provisioning",
        None if dash.get("title") else "no title",
    ])

    variables = pq.variables(dash)
    by_name = {v.get("name"): v for v in variables}
    problems = []
    dsv = by_name.get("datasource")
    if not dsv or dsv.get("type") != "datasource" or dsv.get("query") != "prometheus":
        problems.append("no datasource variable of type datasource/prometheus")
    for v in variables:
        if v.get("type") == "query":
            if not is_ds_ref(v.get("datasource")):
                problems.append("variable %s: datasource is not ${datasource}" % v.get("name"))
            q = pq.variable_query_text(v)
            if not q:
                problems.append("variable %s: empty query" % v.get("name"))
    inst = by_name.get("instance")
    if not inst:
        problems.append("no instance variable")
    elif pq.variable_query_text(inst) != INSTANCE_VAR_QUERY[fname]:
        problems.append("instance variable query %r, expected %r" % (
            pq.variable_query_text(inst), INSTANCE_VAR_QUERY[fname]))
    if fname == "container-detail.json":
        cv = by_name.get("container")
        lv = pq.parse_label_values(pq.variable_query_text(cv)) if cv else None
        if not lv or lv[1] != "name":
            problems.append("container variable must be label_values(..., name)")
    res.check("%s: variables" % tag, problems)

    panels = list(pq.iter_panels(dash))
    ids = [p.get("id") for p in panels]
    dup = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    res.check("%s: panel-ids" % tag, [
        "duplicate panel ids: %s" % dup if dup else None,
        "panels without id: %d" % ids.count(None) if None in ids else None])

    ds_problems, unit_problems, layout_problems = [], [], []
    for p in panels:
        label = "panel %s %r" % (p.get("id"), p.get("title"))
        if "gridPos" not in p:
            layout_problems.append("%s: no gridPos" % label)
        if p.get("type") == "row":
            continue
        if not p.get("title"):
            layout_problems.append("%s: no title" % label)
        if not p.get("targets"):
            layout_problems.append("%s: no targets" % label)
        refs = [t.get("refId") for t in p.get("targets") or []]
        if len(refs) != len(set(refs)) or None in refs:
            layout_problems.append("%s: refIds not unique: %s" % (label, refs))
        if not is_ds_ref(p.get("datasource")):
            ds_problems.append("%s: panel datasource %r" % (label, p.get("datasource")))
        for t in p.get("targets") or []:
            if not is_ds_ref(t.get("datasource")):
                ds_problems.append("%s/%s: target datasource %r" % (
                    label, t.get("refId"), t.get("datasource")))
        unit = ((p.get("fieldConfig") or {}).get("defaults") or {}).get("unit")
        if not unit:
            unit_problems.append("%s: no fieldConfig.defaults.unit" % label)
    res.check("%s: datasource" % tag, ds_problems)
    res.check("%s: units" % tag, unit_problems)
    res.check("%s: layout" % tag, layout_problems)

    queries = []  # (where, expr, is_panel)
    for p, t in pq.panel_targets(dash):
        queries.append(("panel %s/%s" % (p.get("id"), t.get("refId")), t["expr"], True))
    for p in panels:
        for t in p.get("targets") or []:
            if p.get("type") != "row" and not (isinstance(t.get("expr"), str)
                                                and t["expr"].strip()):
                queries.append(("panel %s/%s" % (p.get("id"), t.get("refId")), "", True))
    for v in variables:
        if v.get("type") == "query":
            queries.append(("variable %s" % v.get("name"),
                            pq.variable_query_exprs(pq.variable_query_text(v)), False))

    hard, rate, metric, labels, syntax = [], [], [], [], []
    for where, expr, is_panel in queries:
        if not expr.strip():
            if is_panel:
                syntax.append("%s: empty expr" % where)
            continue
        hard.extend(hardcoded_problems(where, expr))
        b = balance_problems(expr)
        if b:
            syntax.append("%s: %s" % (where, b))
        if is_panel:
            for sel in re.findall(r"\[([^\[\]]*)\]", pq._STRING_RE.sub('""', expr)):
                if sel.strip() not in ("$__rate_interval", "$__range"):
                    rate.append("%s: range [%s] (use $__rate_interval)" % (where, sel))
        info = pq.scan_promql(expr)
        if not info["metrics"]:
            metric.append("%s: names no metric" % where)
        for name in sorted(info["metrics"]):
            if name not in allowed_metrics:
                metric.append("%s: unknown metric %s" % (where, name))
        for op, value in info["name_regex"]:
            metric.append("%s: __name__%s%r matches metrics by pattern" % (where, op, value))
        used = {lab for lab, _op, _v in info["matchers"]} | info["grouping"]
        for lab in sorted(used - KNOWN_LABELS):
            labels.append("%s: unknown label %s" % (where, lab))
    res.check("%s: no-hardcoded" % tag, hard)
    res.check("%s: rate-interval" % tag, rate)
    res.check("%s: metrics" % tag, metric)
    res.check("%s: labels" % tag, labels)
    res.check("%s: syntax" % tag, syntax)

    if not check_generated:
        return
    build = os.path.join(ROOT, "build.py")
    proc = subprocess.run([sys.executable, build, "--check"], capture_output=True, text=True)
    stale = fname in proc.stdout
    res.check("%s: generated" % tag, [
        "differs from build.py output (run python3 dashboards/build.py)" if stale else None,
        "build.py --check failed: %s" % (proc.stdout + proc.stderr).strip()
        if proc.returncode not in (0, 1) else None])


# ---------------------------------------------------------------------------------------------
# Rules, README, provisioning
# ---------------------------------------------------------------------------------------------


def github_anchor(heading):
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def lint_alerts(res):
    with open(os.path.join(ROOT, "rules", "cgsight-alerts.yml"), encoding="utf-8") as fh:
        text = fh.read()
    readme_path = os.path.join(ROOT, "README.md")
    anchors = set()
    if os.path.exists(readme_path):
        with open(readme_path, encoding="utf-8") as fh:
            for line in fh:
                m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
                if m:
                    anchors.add(github_anchor(m.group(1)))
    problems = [] if anchors else ["dashboards/README.md missing or without headings"]
    blocks = re.split(r"\n\s*-\s+alert:\s*", text)[1:]
    found = {}
    for block in blocks:
        name = block.split()[0].strip("'\"")
        found[name] = block
    for name in REQUIRED_ALERTS:
        if name not in found:
            problems.append("missing alert %s" % name)
    for name, block in found.items():
        for key in ("summary", "description", "runbook"):
            if not re.search(r"\n\s+%s:\s*\S" % key, block):
                problems.append("%s: no %s annotation" % (name, key))
        if "runbook_url" in block:
            problems.append("%s: uses runbook_url (use runbook)" % name)
        m = re.search(r"\n\s+runbook:\s*['\"]?([^'\"\n]+)", block)
        if m:
            ref = m.group(1).strip()
            if "#" not in ref:
                problems.append("%s: runbook %r has no anchor" % (name, ref))
            else:
                anchor = ref.split("#", 1)[1]
                if anchor != name.lower():
                    problems.append("%s: runbook anchor %r, expected %r" % (
                        name, anchor, name.lower()))
                if anchor not in anchors:
                    problems.append("%s: anchor #%s is not a heading in dashboards/README.md"
                                    % (name, anchor))
        if not re.search(r"\n\s+severity:\s*\S", block):
            problems.append("%s: no severity label" % name)
    res.check("rules: alerts", problems)


def read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return None


def lint_provisioning(res):
    problems = []
    ds = read(os.path.join(ROOT, "provisioning", "datasources", "prometheus.yaml"))
    if ds is None:
        problems.append("provisioning/datasources/prometheus.yaml missing")
    else:
        for needle in ("apiVersion: 1", "type: prometheus", "url:"):
            if needle not in ds:
                problems.append("datasources/prometheus.yaml: no %r" % needle)
    dp = read(os.path.join(ROOT, "provisioning", "dashboards", "cgsight.yaml"))
    if dp is None:
        problems.append("provisioning/dashboards/cgsight.yaml missing")
    else:
        for needle in ("apiVersion: 1", "type: file", "path:"):
            if needle not in dp:
                problems.append("dashboards/cgsight.yaml: no %r" % needle)
    prom = read(os.path.join(ROOT, "prometheus", "prometheus.yml"))
    if prom is None:
        problems.append("prometheus/prometheus.yml missing")
    else:
        if not re.search(r"job_name:\s*['\"]?cgsight['\"]?\s*$", prom, re.M):
            problems.append("prometheus.yml: no job_name cgsight")
        if "127.0.0.1:9723" not in prom:
            problems.append("prometheus.yml: no 127.0.0.1:9723 target")
        for f in ("cgsight-recording.yml", "cgsight-alerts.yml"):
            if f not in prom:
                problems.append("prometheus.yml: rule_files does not list %s" % f)
    res.check("provisioning", problems)


def allowed_metrics():
    return EXPORTED | SYNTHETIC | recording_rules()


def main():
    res = Results()
    allowed = allowed_metrics()
    for fname in STABLE_UIDS:
        lint_dashboard(res, fname, allowed)
    lint_alerts(res)
    lint_provisioning(res)
    print("lint: %d passed, %d failed" % (res.passed, res.failed))
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
