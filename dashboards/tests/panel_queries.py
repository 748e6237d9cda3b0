#!/usr/bin/env python3
"""Run every query of a Grafana dashboard against a Prometheus and report which return data.

What it does
  * walks a dashboard JSON (new `panels` layout, panels nested in collapsed rows, and the old
    `rows[].panels[]` layout; a `{"dashboard": {...}}` API wrapper is unwrapped);
  * resolves the template variables in order, as Grafana would: `query` variables are run against
    Prometheus (`label_values(label)`, `label_values(selector, label)`, `label_names()`,
    `metrics(regex)`, `query_result(expr)`), `custom`/`interval`/`constant`/`textbox` variables take
    their current value, the datasource variable is ignored. A value given with `--var NAME=VALUE`
    wins. A multi/All variable without a given value becomes its `allValue`, or the regex-escaped
    alternation `(a|b|c)` of the values Prometheus returned (Grafana's own formatting), or `.+`
    when nothing was returned;
  * substitutes `$var`, `${var}`, `${var:format}`, `[[var]]` and the built-ins `$__rate_interval`
    (max(`$__interval` + scrape interval, 4 x scrape interval), like Grafana), `$__interval`,
    `$__interval_ms`, `$__range`, `$__range_s`, `$__range_ms`;
  * runs each panel query as an instant query (`/api/v1/query`, or `/api/v1/query_range` with
    `--mode range`) and each variable query against the label-values / series API, and records
    whether it returned non-empty data;
  * classifies each query: `cadvisor` (only container_*/machine_* metrics), `cgsight` (our own
    families and recording rules), or `excepted` (needs node_exporter or Prometheus'
    self-metrics: node_*, prometheus_*, go_*, process_*, up{job="prometheus"}...), and prints the
    share of cAdvisor-metric queries that returned data, plus an inventory of the metric names and
    labels the dashboard uses.

Exit status: 0; 1 with `--require-all` when a non-excepted query returned no data or failed;
2 on usage errors or when Prometheus cannot be reached.

Examples
  panel_queries.py --url http://127.0.0.1:9090 --ours --require-all
  panel_queries.py --url http://127.0.0.1:9090 --community --json report.json
  panel_queries.py --url ... --var instance=10.0.0.5:9723 --var container=web dashboards/container-detail.json

Testing note: `fixture_live.py` next to this file exercises this tool against a real Prometheus
that scrapes a hand-written cAdvisor-style exposition file served by `python3 -m http.server`.
That fixture only proves this tool's substitution and querying logic (and that our dashboards
and rules agree with each other); it is NOT an end-to-end test of the cgsight agent, which is
done by running this tool against a Prometheus that scrapes the real agent.

Standard library only (Python 3.8+).
"""

import argparse
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DASHBOARDS_DIR = os.path.dirname(HERE)
OURS = [os.path.join(DASHBOARDS_DIR, f)
        for f in ("host-overview.json", "container-detail.json", "cgsight-health.json")]
COMMUNITY_DIR = os.path.normpath(os.path.join(DASHBOARDS_DIR, "..", "..", "shared", "reference",
                                              "dashboards"))
COMMUNITY = ["cadvisor-exporter-14282.json", "dockprom-docker-containers.json"]

# ---------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------

_DUR_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text):
    """'1m30s' -> 90.0 seconds."""
    text = text.strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError("bad duration %r" % text)
    return sum(float(a) * _DUR_UNITS[b] for a, b in parts)


def format_duration(seconds):
    """Seconds -> the shortest Prometheus duration ('90' -> '1m30s', '0.5' -> '500ms')."""
    ms = int(round(seconds * 1000))
    if ms <= 0:
        return "1ms"
    out = ""
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            out += "%d%s" % (ms // size, unit)
            ms %= size
    return out


# ---------------------------------------------------------------------------------------------
# Dashboard walking
# ---------------------------------------------------------------------------------------------


def load_dashboard(path):
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if isinstance(data, dict) and isinstance(data.get("dashboard"), dict):
        data = data["dashboard"]
    return data


def iter_panels(dashboard):
    """Yield every panel, including panels nested in rows (new and old layouts)."""
    def walk(panels):
        for panel in panels or []:
            yield panel
            yield from walk(panel.get("panels"))
    yield from walk(dashboard.get("panels"))
    for row in dashboard.get("rows") or []:
        yield from walk(row.get("panels"))


def _ds_type(ds):
    if isinstance(ds, dict):
        return ds.get("type") or ""
    return ""


def is_prometheus_target(panel, target):
    """False for targets of non-Prometheus datasources (Grafana annotations, -- Dashboard --...)."""
    if not isinstance(target, dict) or not isinstance(target.get("expr"), str):
        return False
    for ds in (target.get("datasource"), panel.get("datasource")):
        t = _ds_type(ds)
        if t:
            return t == "prometheus"
        if isinstance(ds, str) and ds.startswith("-- ") and ds.endswith(" --"):
            return False
    return True


def panel_targets(dashboard):
    """[(panel, target)] for every Prometheus query of every panel."""
    out = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets") or []:
            if is_prometheus_target(panel, target) and target["expr"].strip():
                out.append((panel, target))
    return out


def variables(dashboard):
    return (dashboard.get("templating") or {}).get("list") or []


def variable_query_text(var):
    q = var.get("query")
    if isinstance(q, dict):
        q = q.get("query", "")
    if not q:
        q = var.get("definition") or ""
    return q if isinstance(q, str) else ""


# ---------------------------------------------------------------------------------------------
# PromQL scanning (just enough to list metric names and labels; not a full parser)
# ---------------------------------------------------------------------------------------------

PROMQL_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right", "inf", "nan", "atan2", "start", "end",
}
_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VAR_RE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]")
_MATCHER_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')')
_GROUPING_RE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-zA-Z]*|0x[0-9a-fA-F]+|"
                       r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _unquote(s):
    body = s[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def scan_promql(expr):
    """Return {'metrics': set, 'matchers': [(label, op, value)], 'grouping': set, 'name_regex': []}.

    Grafana variables are replaced by placeholders first, so raw dashboard text can be scanned.
    """
    matchers = []
    grouping = set()
    name_regex = []
    # Label matchers (with their quoted values) inside {...}.
    for block in re.findall(r"\{([^{}]*)\}", expr):
        for label, op, value in _MATCHER_RE.findall(block):
            matchers.append((label, op, _unquote(value)))
            if label == "__name__":
                name_regex.append((op, _unquote(value)))
    text = re.sub(r"\{[^{}]*\}", " ", expr)
    text = _STRING_RE.sub('""', text)
    text = _VAR_RE.sub("1", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    for _kw, labels in _GROUPING_RE.findall(text):
        for lab in labels.split(","):
            lab = lab.strip()
            if lab:
                grouping.add(lab)
    text = _GROUPING_RE.sub(" ", text)
    metrics = set()
    for m in _TOKEN_RE.finditer(text):
        tok = m.group(0)
        if tok[0].isdigit():
            continue
        if tok.lower() in PROMQL_KEYWORDS:
            continue
        rest = text[m.end():].lstrip()
        if rest.startswith("("):
            continue  # function or aggregation operator
        metrics.add(tok)
    # `{__name__="foo"}` selects metric foo.
    for op, value in name_regex:
        if op == "=":
            metrics.add(value)
    return {"metrics": metrics, "matchers": matchers, "grouping": grouping,
            "name_regex": name_regex}


def parse_label_values(query):
    """label_values(...) -> (selector or None, label); None if the query is not label_values."""
    m = re.match(r"^\s*label_values\s*\((.*)\)\s*$", query, re.S)
    if not m:
        return None
    inner = m.group(1).strip()
    # Split at the last top-level comma.
    depth, quote, split_at = 0, None, -1
    for i, ch in enumerate(inner):
        if quote:
            if ch == quote and inner[i - 1] != "\\":
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif ch == "," and depth == 0:
            split_at = i
    if split_at < 0:
        return (None, inner.strip())
    return (inner[:split_at].strip(), inner[split_at + 1:].strip())


def variable_query_exprs(query):
    """The PromQL selector/expression inside a variable query (for scanning), or ''."""
    lv = parse_label_values(query)
    if lv is not None:
        return lv[0] or ""
    m = re.match(r"^\s*query_result\s*\((.*)\)\s*$", query, re.S)
    if m:
        return m.group(1)
    return ""


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------

EXCEPTED_PREFIXES = ("node_", "prometheus_", "go_", "process_", "grafana_", "alertmanager_",
                     "promhttp_", "net_conntrack_", "scrape_")


def classify(expr):
    """'excepted' | 'cadvisor' | 'cgsight' | 'other' for one query."""
    info = scan_promql(expr)
    metrics = set(info["metrics"])
    for op, value in info["name_regex"]:
        if op == "=~" and value.startswith("container"):
            metrics.add("container_*")
    if any(m.startswith(EXCEPTED_PREFIXES) for m in metrics):
        return "excepted"
    if "up" in metrics:
        for label, op, value in info["matchers"]:
            if label == "job" and op in ("=", "=~") and "cgsight" not in value:
                return "excepted"
    if metrics and all(m.startswith(("container_", "machine_")) for m in metrics):
        return "cadvisor"
    if metrics:
        return "cgsight"
    return "other"


# ---------------------------------------------------------------------------------------------
# Variable substitution
# ---------------------------------------------------------------------------------------------

_REGEX_SPECIAL = re.compile(r"([\\^$*+?.()|{}\[\]])")


def regex_escape(value):
    """Grafana's prometheusSpecialRegexEscape (escapes the backslash twice for the string)."""
    return _REGEX_SPECIAL.sub(r"\\\\\1", value)


class Var:
    """One resolved template variable."""

    def __init__(self, name, values, multi=False, include_all=False, all_value=None, is_all=False,
                 raw_value=None):
        self.name = name
        self.raw_value = raw_value
        self.values = list(values)
        self.multi = multi
        self.include_all = include_all
        self.all_value = all_value
        self.is_all = is_all

    def render(self, fmt=None):
        if self.raw_value is not None:
            return self.raw_value
        if self.is_all and self.all_value is not None and fmt in (None, "regex", "raw"):
            return self.all_value
        vals = self.values
        if fmt == "raw":
            return ",".join(vals)
        if fmt == "csv":
            return ",".join(vals)
        if fmt == "pipe":
            return "|".join(vals)
        if fmt == "regex":
            if len(vals) == 1:
                return regex_escape(vals[0])
            return "(" + "|".join(regex_escape(v) for v in vals) + ")"
        # Grafana's Prometheus default interpolation.
        if not self.multi and not self.include_all:
            return vals[0] if vals else ""
        if len(vals) == 1:
            return regex_escape(vals[0])
        if not vals:
            return ".+"
        return "(" + "|".join(regex_escape(v) for v in vals) + ")"


def builtin_vars(scrape_interval, interval=None, rate_interval=None, range_s=3600.0):
    interval = interval if interval is not None else scrape_interval
    if rate_interval is None:
        rate_interval = max(interval + scrape_interval, 4 * scrape_interval)
    return {
        "__rate_interval": format_duration(rate_interval),
        "__interval": format_duration(interval),
        "__interval_ms": str(int(interval * 1000)),
        "__range": format_duration(range_s),
        "__range_s": str(int(range_s)),
        "__range_ms": str(int(range_s * 1000)),
    }


def substitute(text, resolved, builtins):
    """Replace Grafana variables in text. Unknown variables are left in place."""
    def lookup(name, fmt):
        if name in builtins:
            return builtins[name]
        var = resolved.get(name)
        if var is None:
            return None
        return var.render(fmt)

    def repl_braced(m):
        body = m.group(1)
        name, _, fmt = body.partition(":")
        out = lookup(name, fmt or None)
        return m.group(0) if out is None else out

    def repl_bracket(m):
        name, _, fmt = m.group(1).partition(":")
        out = lookup(name, fmt or None)
        return m.group(0) if out is None else out

    def repl_plain(m):
        out = lookup(m.group(1), None)
        return m.group(0) if out is None else out

    text = re.sub(r"\$\{([^}]*)\}", repl_braced, text)
    text = re.sub(r"\[\[([^\]]*)\]\]", repl_bracket, text)
    # Longest names first is implicit: \w+ is greedy, so $__range_ms is not read as $__range.
    text = re.sub(r"\$(\w+)", repl_plain, text)
    return text


def apply_var_regex(values, regex):
    if not regex:
        return values
    pattern = regex
    flags = 0
    m = re.match(r"^/(.*)/([gimsuy]*)$", regex, re.S)
    if m:
        pattern = m.group(1)
        if "i" in m.group(2):
            flags |= re.I
    try:
        rx = re.compile(pattern, flags)
    except re.error:
        return values
    out = []
    for v in values:
        mm = rx.search(v)
        if not mm:
            continue
        if mm.groupdict().get("value") is not None:
            out.append(mm.group("value"))
        elif mm.groups():
            out.append(mm.group(1))
        else:
            out.append(v)
    seen, uniq = set(), []
    for v in out:
        if v not in seen:
            seen.add(v)
            uniq.append(v)
    return uniq


def sort_values(values, mode):
    mode = mode or 0
    if mode in (1, 2):
        return sorted(values, reverse=(mode == 2))
    if mode in (3, 4):
        def num(v):
            m = re.search(r"-?\d+(\.\d+)?", v)
            return float(m.group(0)) if m else math.inf
        return sorted(values, key=num, reverse=(mode == 4))
    if mode in (5, 6):
        return sorted(values, key=str.lower, reverse=(mode == 6))
    return values


def _current_values(var):
    cur = var.get("current") or {}
    val = cur.get("value")
    if val is None:
        return []
    if isinstance(val, list):
        return [str(v) for v in val]
    return [str(val)]


# ---------------------------------------------------------------------------------------------
# Prometheus client
# ---------------------------------------------------------------------------------------------


class PromError(Exception):
    pass


class Prometheus:
    def __init__(self, url, timeout=30.0, now=None, range_s=3600.0, step=None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.now = now if now is not None else time.time()
        self.range_s = range_s
        self.step = step or max(range_s / 250.0, 1.0)

    def _get(self, path, params):
        query = urllib.parse.urlencode(params, doseq=True)
        req = urllib.request.Request(self.url + path + "?" + query,
                                     headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                payload = json.loads(body)
                raise PromError("%s: %s" % (payload.get("errorType"), payload.get("error")))
            except ValueError:
                raise PromError("HTTP %d" % err.code)
        except (urllib.error.URLError, OSError) as err:
            raise ConnectionError("cannot reach %s: %s" % (self.url, err))
        payload = json.loads(body)
        if payload.get("status") != "success":
            raise PromError("%s: %s" % (payload.get("errorType"), payload.get("error")))
        return payload.get("data")

    def instant(self, expr):
        return self._get("/api/v1/query", {"query": expr, "time": "%.3f" % self.now})

    def range(self, expr):
        return self._get("/api/v1/query_range", {
            "query": expr, "start": "%.3f" % (self.now - self.range_s),
            "end": "%.3f" % self.now, "step": "%.3f" % self.step})

    def label_values(self, label, selector=None):
        params = {"start": "%.3f" % (self.now - self.range_s), "end": "%.3f" % self.now}
        if selector:
            params["match[]"] = selector
        return self._get("/api/v1/label/%s/values" % urllib.parse.quote(label), params) or []

    def series(self, selector):
        return self._get("/api/v1/series", {
            "match[]": selector, "start": "%.3f" % (self.now - self.range_s),
            "end": "%.3f" % self.now}) or []

    def label_names(self, selector=None):
        params = {"start": "%.3f" % (self.now - self.range_s), "end": "%.3f" % self.now}
        if selector:
            params["match[]"] = selector
        return self._get("/api/v1/labels", params) or []


def summarize_result(data):
    """(non_empty, series_count, all_nan) for a query result."""
    rtype = data.get("resultType")
    result = data.get("result")
    if rtype == "scalar" or rtype == "string":
        val = result[1] if isinstance(result, list) and len(result) > 1 else None
        is_nan = val is None or str(val).lower() == "nan"
        return (not is_nan, 0 if is_nan else 1, is_nan)
    result = result or []
    if not result:
        return (False, 0, False)
    values = []
    for s in result:
        if "value" in s:
            values.append(s["value"][1])
        for v in s.get("values") or []:
            values.append(v[1])
    all_nan = bool(values) and all(str(v).lower() == "nan" for v in values)
    return (True, len(result), all_nan)


# ---------------------------------------------------------------------------------------------
# Resolving variables and running queries
# ---------------------------------------------------------------------------------------------


def run_variable_query(prom, query):
    """Run one variable query -> list of values."""
    lv = parse_label_values(query)
    if lv is not None:
        selector, label = lv
        if selector:
            try:
                return [str(v) for v in prom.label_values(label, selector)]
            except PromError:
                # Old Prometheus without match[] on label values: fall back to /series.
                vals = []
                for s in prom.series(selector):
                    if label in s and s[label] not in vals:
                        vals.append(s[label])
                return vals
        return [str(v) for v in prom.label_values(label)]
    m = re.match(r"^\s*label_names\s*\((.*)\)\s*$", query, re.S)
    if m:
        return [str(v) for v in prom.label_names(m.group(1).strip() or None)]
    m = re.match(r"^\s*metrics\s*\((.*)\)\s*$", query, re.S)
    if m:
        rx = re.compile(m.group(1).strip() or ".*")
        return [v for v in prom.label_values("__name__") if rx.search(v)]
    m = re.match(r"^\s*query_result\s*\((.*)\)\s*$", query, re.S)
    if m:
        data = prom.instant(m.group(1))
        out = []
        for s in data.get("result") or []:
            metric = dict(s.get("metric") or {})
            name = metric.pop("__name__", "")
            labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(metric.items()))
            out.append("%s{%s} %s %s" % (name, labels, s["value"][1], s["value"][0]))
        return out
    raise PromError("unsupported variable query %r" % query)


def resolve_variables(dashboard, prom, overrides, builtins, report):
    """Resolve template variables in order. Appends one entry per query variable to report."""
    resolved = {}
    for var in variables(dashboard):
        name = var.get("name")
        vtype = var.get("type")
        if not name or vtype in ("datasource", "adhoc"):
            continue
        multi = bool(var.get("multi"))
        include_all = bool(var.get("includeAll"))
        all_value = var.get("allValue") or None
        if vtype == "query":
            raw = variable_query_text(var)
            query = substitute(raw, resolved, builtins)
            entry = {"kind": "variable", "variable": name, "raw": raw, "query": query,
                     "class": classify(variable_query_exprs(raw)) if variable_query_exprs(raw)
                     else "other"}
            values = []
            try:
                values = run_variable_query(prom, query)
                values = sort_values(apply_var_regex(values, var.get("regex")), var.get("sort"))
                entry["status"] = "data" if values else "empty"
                entry["count"] = len(values)
                entry["sample"] = values[:5]
            except PromError as err:
                entry["status"] = "error"
                entry["error"] = str(err)
            report.append(entry)
        elif vtype == "custom":
            values = [v.strip() for v in re.split(r"(?<!\\),", var.get("query") or "") if v.strip()]
            values = [v.split(" : ")[-1] for v in values]
        elif vtype == "interval":
            values = [v.strip() for v in (var.get("query") or "").split(",") if v.strip()]
        elif vtype in ("constant", "textbox"):
            values = [var.get("query") or ""]
        else:
            values = _current_values(var)

        if name in overrides:
            given = overrides[name]
            resolved[name] = Var(name, given.split("|"), multi, include_all, raw_value=given)
            continue
        if vtype in ("constant", "textbox"):
            resolved[name] = Var(name, values)
            continue
        current = _current_values(var)
        if vtype in ("custom", "interval") and current and current != ["$__all"]:
            values_now = [v for v in current if v in values] or values[:1]
            resolved[name] = Var(name, values_now, multi, include_all, all_value)
            continue
        if include_all or multi:
            resolved[name] = Var(name, values, multi, include_all, all_value,
                                 is_all=include_all)
            if not values and all_value is None:
                resolved[name] = Var(name, [], multi, include_all, raw_value=".+")
        else:
            resolved[name] = Var(name, values[:1] or [".+"], multi, include_all, all_value)
    return resolved


def run_dashboard(path, prom, overrides, builtins, mode="instant"):
    dashboard = load_dashboard(path)
    entries = []
    resolved = resolve_variables(dashboard, prom, overrides, builtins, entries)
    for panel, target in panel_targets(dashboard):
        raw = target["expr"]
        expr = substitute(raw, resolved, builtins)
        entry = {"kind": "panel", "panel_id": panel.get("id"), "panel": panel.get("title"),
                 "refId": target.get("refId"), "raw": raw, "query": expr,
                 "class": classify(raw), "hidden": bool(target.get("hide"))}
        leftover = re.findall(r"\$\{?\w+\}?|\[\[\w+\]\]", expr)
        if leftover:
            entry["unresolved"] = sorted(set(leftover))
        try:
            data = prom.range(expr) if mode == "range" else prom.instant(expr)
            non_empty, count, all_nan = summarize_result(data)
            entry["status"] = "data" if non_empty else "empty"
            entry["series"] = count
            if all_nan:
                entry["all_nan"] = True
        except PromError as err:
            entry["status"] = "error"
            entry["error"] = str(err)
        entries.append(entry)
    resolved_out = {k: v.render() for k, v in resolved.items()}
    return {"dashboard": os.path.basename(path), "path": path,
            "title": dashboard.get("title"), "uid": dashboard.get("uid"),
            "variables": resolved_out, "builtins": builtins, "queries": entries,
            "summary": summarize(entries), "inventory": inventory(entries)}


def summarize(entries):
    out = {"total": len(entries)}
    for cls in ("cadvisor", "cgsight", "excepted", "other"):
        sel = [e for e in entries if e["class"] == cls]
        ok = [e for e in sel if e["status"] == "data"]
        out[cls] = {"total": len(sel), "data": len(ok),
                    "percent": round(100.0 * len(ok) / len(sel), 1) if sel else None}
    required = [e for e in entries if e["class"] != "excepted"]
    out["required"] = len(required)
    out["required_ok"] = len([e for e in required if e["status"] == "data"])
    out["errors"] = len([e for e in entries if e["status"] == "error"])
    return out


def inventory(entries):
    """Metric names with the labels that queries match on or group by (cAdvisor queries only)."""
    inv = {}
    for e in entries:
        if e["class"] != "cadvisor":
            continue
        expr = e["raw"] if e["kind"] == "panel" else variable_query_exprs(e["raw"])
        info = scan_promql(expr)
        names = set(info["metrics"])
        for op, value in info["name_regex"]:
            names.add('{__name__%s"%s"}' % (op, value))
        names.discard("container_*")
        for name in names:
            slot = inv.setdefault(name, {"matchers": set(), "grouping": set(), "queries": 0})
            slot["queries"] += 1
            for label, op, value in info["matchers"]:
                if label != "__name__":
                    slot["matchers"].add('%s%s"%s"' % (label, op, value))
            slot["grouping"].update(info["grouping"])
        if e["kind"] == "variable":
            lv = parse_label_values(e["raw"])
            if lv:
                for name in names:
                    inv[name]["grouping"].add(lv[1])
    return {k: {"queries": v["queries"], "matchers": sorted(v["matchers"]),
                "grouping": sorted(v["grouping"])} for k, v in sorted(inv.items())}


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def text_report(results, require_all):
    lines = []
    for res in results:
        lines.append("== %s (%s, uid %s)" % (res["dashboard"], res["title"], res["uid"]))
        if res["variables"]:
            lines.append("   variables: " + ", ".join(
                "%s=%s" % (k, v) for k, v in res["variables"].items()))
        for e in res["queries"]:
            status = e["status"].upper()
            if e.get("all_nan"):
                status += "(NaN)"
            where = ("var $%s" % e["variable"]) if e["kind"] == "variable" else (
                "panel %s/%s %r" % (e["panel_id"], e["refId"], e["panel"]))
            lines.append("   [%-5s] %-8s %s" % (status, e["class"], where))
            lines.append("           %s" % e["query"].replace("\n", " "))
            if e.get("error"):
                lines.append("           error: %s" % e["error"])
            if e.get("unresolved"):
                lines.append("           unresolved variables: %s" % ", ".join(e["unresolved"]))
        s = res["summary"]
        cad = s["cadvisor"]
        lines.append("   summary: %d queries; cAdvisor-metric queries with data: %d/%d (%s%%); "
                     "cgsight %d/%d; excepted (node_exporter/Prometheus) %d; errors %d" % (
                         s["total"], cad["data"], cad["total"],
                         "-" if cad["percent"] is None else cad["percent"],
                         s["cgsight"]["data"], s["cgsight"]["total"], s["excepted"]["total"],
                         s["errors"]))
        if res["inventory"]:
            lines.append("   cAdvisor metric inventory:")
            for name, inv in res["inventory"].items():
                lines.append("     %s (%d): match %s; group %s" % (
                    name, inv["queries"], ", ".join(inv["matchers"]) or "-",
                    ", ".join(inv["grouping"]) or "-"))
    required = sum(r["summary"]["required"] for r in results)
    ok = sum(r["summary"]["required_ok"] for r in results)
    lines.append("TOTAL: %d/%d non-excepted queries returned data%s" % (
        ok, required, " (--require-all)" if require_all else ""))
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dashboards", nargs="*", help="dashboard JSON files")
    ap.add_argument("--url", default=os.environ.get("PROMETHEUS_URL", "http://127.0.0.1:9090"),
                    help="Prometheus base URL (default $PROMETHEUS_URL or http://127.0.0.1:9090)")
    ap.add_argument("--ours", action="store_true", help="add cgsight's three dashboards")
    ap.add_argument("--community", action="store_true",
                    help="add the two community dashboards from shared/reference/dashboards")
    ap.add_argument("--community-dir", default=COMMUNITY_DIR)
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                    help="value of a template variable (repeatable); '|' separates multi values")
    ap.add_argument("--scrape-interval", default="15s",
                    help="Prometheus scrape interval, for $__rate_interval (default 15s)")
    ap.add_argument("--interval", default=None, help="$__interval (default: scrape interval)")
    ap.add_argument("--rate-interval", default=None, help="force $__rate_interval")
    ap.add_argument("--range", default="1h", help="dashboard time range: $__range (default 1h)")
    ap.add_argument("--mode", choices=("instant", "range"), default="instant",
                    help="instant query at now, or a range query over --range")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--json", metavar="FILE", help="write the JSON report here ('-' = stdout)")
    ap.add_argument("--quiet", action="store_true", help="no text report")
    ap.add_argument("--require-all", action="store_true",
                    help="exit 1 unless every non-excepted query returned data")
    args = ap.parse_args(argv)
    paths = list(args.dashboards)
    if args.ours:
        paths += OURS
    if args.community:
        paths += [os.path.join(args.community_dir, f) for f in COMMUNITY]
    if not paths:
        ap.error("no dashboards (give files, --ours or --community)")
    args.paths = paths
    args.overrides = {}
    for item in args.var:
        if "=" not in item:
            ap.error("--var wants NAME=VALUE, got %r" % item)
        k, v = item.split("=", 1)
        args.overrides[k] = v
    return args


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    try:
        scrape = parse_duration(args.scrape_interval)
        interval = parse_duration(args.interval) if args.interval else None
        rate = parse_duration(args.rate_interval) if args.rate_interval else None
        range_s = parse_duration(args.range)
    except ValueError as err:
        print("error: %s" % err, file=sys.stderr)
        return 2
    builtins = builtin_vars(scrape, interval, rate, range_s)
    prom = Prometheus(args.url, timeout=args.timeout, range_s=range_s)
    results = []
    try:
        for path in args.paths:
            results.append(run_dashboard(path, prom, args.overrides, builtins, args.mode))
    except ConnectionError as err:
        print("error: %s" % err, file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:
        print("error: %s" % err, file=sys.stderr)
        return 2
    if args.json:
        payload = json.dumps({"url": args.url, "results": results}, indent=2, sort_keys=True)
        if args.json == "-":
            print(payload)
        else:
            with open(args.json, "w", encoding="utf-8") as fh:
                fh.write(payload + "\n")
    if not args.quiet:
        print(text_report(results, args.require_all))
    if args.require_all:
        missing = sum(r["summary"]["required"] - r["summary"]["required_ok"] for r in results)
        return 1 if missing else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
