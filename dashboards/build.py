#!/usr/bin/env python3
"""Generate cgsight's Grafana dashboards (host-overview, container-detail, cgsight-health).

The JSON files next to this script are generated: edit this script, then run
    python3 dashboards/build.py          # rewrite the JSON files
    python3 dashboards/build.py --check  # exit 1 if a JSON file differs from what it would write
Panel ids, grid positions and uids are deterministic, so the output is stable.
Standard library only.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39

# Selectors. Host overview and detail work on named containers (cgroups with a `name` label);
# raw cgroups (system.slice/...) have name="" and the root cgroup is id="/".
HOST = 'instance=~"$instance"'
CONT = 'instance=~"$instance", name!=""'
ONE = 'instance=~"$instance", name=~"$container"'
ROOT = 'instance=~"$instance", id="/"'
SELF = 'job="cgsight", instance=~"$instance"'


# ---------------------------------------------------------------------------------------------
# Panel builders
# ---------------------------------------------------------------------------------------------


def target(expr, legend="", ref="A", instant=False, table=False, hide=False):
    t = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend or "__auto",
         "range": not instant, "instant": instant, "editorMode": "code"}
    if table:
        t["format"] = "table"
    if hide:
        t["hide"] = True
    return t


def limit_override(ref, color="red"):
    """Draw the series of query `ref` as a dashed, unfilled limit line."""
    return {"matcher": {"id": "byFrameRefID", "options": ref},
            "properties": [
                {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                {"id": "custom.fillOpacity", "value": 0},
                {"id": "custom.lineWidth", "value": 2},
                {"id": "color", "value": {"mode": "fixed", "fixedColor": color}}]}


def negative_y(ref):
    return {"matcher": {"id": "byFrameRefID", "options": ref},
            "properties": [{"id": "custom.transform", "value": "negative-Y"}]}


def thresholds(*steps):
    out = [{"color": "green", "value": None}]
    for value, color in steps:
        out.append({"color": color, "value": value})
    return {"mode": "absolute", "steps": out}


def timeseries(title, targets, unit, desc="", overrides=(), min_=None, max_=None, stack=False,
               bars=False, thresh=None, legend_calcs=("mean", "max", "lastNotNull")):
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1,
              "fillOpacity": 30 if bars else 10, "gradientMode": "none", "showPoints": "never",
              "spanNulls": False, "axisPlacement": "auto", "axisSoftMin": 0,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    if thresh is not None:
        custom["thresholdsStyle"] = {"mode": "dashed"}
    defaults = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"},
                "thresholds": thresh or thresholds()}
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    return {"type": "timeseries", "title": title, "description": desc, "datasource": DS,
            "targets": list(targets),
            "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
            "options": {"legend": {"displayMode": "table", "placement": "bottom",
                                   "showLegend": True, "calcs": list(legend_calcs)},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title, targets, unit, desc="", thresh=None, mappings=(), text_mode="auto",
         graph=True, decimals=None, color_mode="value"):
    defaults = {"unit": unit, "color": {"mode": "thresholds"},
                "thresholds": thresh or thresholds(), "mappings": list(mappings)}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"type": "stat", "title": title, "description": desc, "datasource": DS,
            "targets": list(targets),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                          "values": False},
                        "colorMode": color_mode, "graphMode": "area" if graph else "none",
                        "justifyMode": "auto", "orientation": "auto", "textMode": text_mode}}


def zero_means(text):
    """Value mapping: 0 -> text (limits where 0 means unlimited)."""
    return {"type": "value", "options": {"0": {"text": text, "index": 0}}}


def table(title, targets, unit, columns, desc="", sort_by=None, links=None, hide=()):
    """Instant-query table. columns: [(field name, display name, unit)]; queries are merged."""
    overrides = []
    for field, display, col_unit in columns:
        props = [{"id": "displayName", "value": display}]
        if col_unit:
            props.append({"id": "unit", "value": col_unit})
        overrides.append({"matcher": {"id": "byName", "options": field}, "properties": props})
    if links:
        overrides.append({"matcher": {"id": "byName", "options": "name"},
                          "properties": [{"id": "links", "value": links}]})
    exclude = {"Time": True}
    for h in hide:
        exclude[h] = True
    panel = {"type": "table", "title": title, "description": desc, "datasource": DS,
             "targets": list(targets),
             "fieldConfig": {"defaults": {"unit": unit, "custom": {"align": "auto"},
                                          "thresholds": thresholds()},
                             "overrides": overrides},
             "options": {"showHeader": True, "cellHeight": "sm",
                         "footer": {"show": False, "reducer": ["sum"], "fields": ""}},
             "transformations": [{"id": "merge", "options": {}},
                                 {"id": "organize", "options": {"excludeByName": exclude}}]}
    if sort_by:
        panel["options"]["sortBy"] = [{"displayName": sort_by, "desc": True}]
    return panel


def row(title, collapsed=False):
    return {"type": "row", "title": title, "collapsed": collapsed, "panels": []}


class Layout:
    """Assigns ids and grid positions. add(panel, w, h) flows left to right, 24 columns wide."""

    def __init__(self):
        self.panels = []
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_h = 0

    def _newline(self):
        if self.x:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0

    def row(self, title):
        self._newline()
        panel = row(title)
        panel["id"] = self.next_id
        self.next_id += 1
        panel["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": self.y}
        self.panels.append(panel)
        self.y += 1

    def add(self, panel, w=12, h=8):
        if self.x + w > 24:
            self._newline()
        panel["id"] = self.next_id
        self.next_id += 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)


# ---------------------------------------------------------------------------------------------
# Variables and dashboard shell
# ---------------------------------------------------------------------------------------------


def ds_var():
    return {"type": "datasource", "name": "datasource", "label": "Data source",
            "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
            "options": [], "includeAll": False, "multi": False, "skipUrlSync": False}


def query_var(name, label, query, multi=False, include_all=False, all_value=None, sort=1):
    var = {"type": "query", "name": name, "label": label, "datasource": DS,
           "definition": query, "query": {"query": query, "refId": "StandardVariableQuery"},
           "refresh": 2, "sort": sort, "regex": "", "hide": 0, "current": {}, "options": [],
           "multi": multi, "includeAll": include_all, "skipUrlSync": False}
    if all_value is not None:
        var["allValue"] = all_value
    return var


def custom_var(name, label, values, current):
    return {"type": "custom", "name": name, "label": label, "query": ",".join(values),
            "current": {"selected": True, "text": current, "value": current},
            "options": [{"selected": v == current, "text": v, "value": v} for v in values],
            "hide": 0, "multi": False, "includeAll": False, "skipUrlSync": False}


INSTANCE_VAR = query_var("instance", "Instance", "label_values(container_last_seen, instance)")


def dashboard(uid, title, description, variables, layout, tags=("cgsight",)):
    return {
        "__comment": "Generated by dashboards/build.py; edit that script, not this file.",
        "uid": uid, "title": title, "description": description, "tags": list(tags),
        "id": None, "version": 1, "schemaVersion": SCHEMA_VERSION, "editable": True,
        "graphTooltip": 1, "timezone": "browser", "refresh": "30s", "fiscalYearStartMonth": 0,
        "liveNow": False, "weekStart": "",
        "time": {"from": "now-1h", "to": "now"}, "timepicker": {},
        "templating": {"list": [ds_var()] + list(variables)},
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"type": "dashboards", "tags": ["cgsight"], "asDropdown": True,
                   "title": "cgsight", "includeVars": True, "keepTime": True,
                   "icon": "external link", "targetBlank": False, "tooltip": "", "url": ""}],
        "panels": layout.panels,
    }


# Expressions shared by several panels.
def cpu_cores_raw(sel):
    """Cores used; cpu="total" if exported, else the per-CPU sum (never both)."""
    return ('sum without (cpu) (rate(container_cpu_usage_seconds_total{%s, cpu="total"}'
            '[$__rate_interval]))\nor\nsum without (cpu) (rate(container_cpu_usage_seconds_total'
            '{%s, cpu=~"cpu[0-9]+"}[$__rate_interval]))' % (sel, sel))


DETAIL_LINK = [{"title": "Container detail",
                "url": "/d/cgsight-container-detail/cgsight-container-detail?var-datasource="
                       "${datasource}&var-instance=${instance}&var-container=${__value.raw}"
                       "&${__url_time_range}"}]


# ---------------------------------------------------------------------------------------------
# 1. Host overview
# ---------------------------------------------------------------------------------------------


def host_overview():
    L = Layout()
    L.row("Host")
    L.add(stat("Containers", [target('count(container_last_seen{%s})' % CONT, "containers",
                                     instant=True)], "none",
               "Named containers the agent currently tracks on this host.", graph=False), 4, 4)
    L.add(stat("Host CPU used (cores)",
               [target('sum(container:cpu_usage_cores:rate1m{%s})' % ROOT, "used")], "short",
               "CPU used by the whole host (root cgroup), in cores.", decimals=2), 4, 4)
    L.add(stat("Host CPU used",
               [target('sum(container:cpu_usage_cores:rate1m{%s}) / sum(machine_cpu_cores{%s})'
                       % (ROOT, HOST), "used")], "percentunit",
               "Root-cgroup CPU use divided by machine_cpu_cores.",
               thresh=thresholds((0.7, "orange"), (0.9, "red"))), 4, 4)
    L.add(stat("Host memory working set",
               [target('sum(container_memory_working_set_bytes{%s}) / sum(machine_memory_bytes{%s})'
                       % (ROOT, HOST), "used")], "percentunit",
               "Root-cgroup working set divided by machine_memory_bytes.",
               thresh=thresholds((0.8, "orange"), (0.9, "red"))), 4, 4)
    L.add(stat("OOM kills (time range)",
               [target('sum(increase(container_oom_events_total{%s}[$__range]))' % CONT, "kills",
                       instant=True)], "none",
               "OOM kills in named containers over the dashboard's time range.",
               thresh=thresholds((1, "red")), graph=False, decimals=0), 4, 4)
    L.add(stat("Containers throttled > 25%",
               [target('count(container:cpu_cfs_throttled_ratio:rate5m{%s} > 0.25) or vector(0)'
                       % CONT, "throttled")], "none",
               "Containers throttled in more than a quarter of their CFS periods (5m rate).",
               thresh=thresholds((1, "orange")), decimals=0), 4, 4)

    L.row("Containers")
    L.add(table(
        "All containers: usage vs limits",
        [target('sum by (name) (container:cpu_usage_cores:rate1m{%s})' % CONT, "", "A",
                instant=True, table=True),
         target('sum by (name) (container:cpu_limit_cores{%s})' % CONT, "", "B",
                instant=True, table=True),
         target('sum by (name) (container:cpu_cfs_throttled_ratio:rate5m{%s})' % CONT, "", "C",
                instant=True, table=True),
         target('sum by (name) (container_memory_working_set_bytes{%s})' % CONT, "", "D",
                instant=True, table=True),
         target('sum by (name) (container_spec_memory_limit_bytes{%s} > 0)' % CONT, "", "E",
                instant=True, table=True),
         target('sum by (name) (container_threads{%s})' % CONT, "", "F", instant=True,
                table=True),
         target('sum by (name) (container_spec_pids_max{%s} > 0)' % CONT, "", "G",
                instant=True, table=True),
         target('sum by (name) (increase(container_oom_events_total{%s}[$__range]))' % CONT, "",
                "H", instant=True, table=True),
         target('time() - max by (name) (container_start_time_seconds{%s})' % CONT, "", "I",
                instant=True, table=True)],
        "short",
        [("Value #A", "CPU (cores)", "short"), ("Value #B", "CPU limit (cores)", "short"),
         ("Value #C", "Throttled", "percentunit"), ("Value #D", "Working set", "bytes"),
         ("Value #E", "Memory limit", "bytes"), ("Value #F", "Tasks", "none"),
         ("Value #G", "Pids limit", "none"), ("Value #H", "OOM kills", "none"),
         ("Value #I", "Up for", "s")],
        "One row per named container. An empty limit cell means unlimited. Click a name for "
        "the detail dashboard.", sort_by="CPU (cores)", links=DETAIL_LINK), 24, 9)

    L.row("CPU")
    L.add(timeseries(
        "CPU used vs limit (cores)",
        [target('container:cpu_usage_cores:rate1m{%s}' % CONT, "{{name}}", "A"),
         target('container:cpu_limit_cores{%s}' % CONT, "{{name}} limit", "B")],
        "short", "Cores used per container (solid) and its CFS limit quota/period (dashed).",
        overrides=[limit_override("B")], min_=0))
    L.add(timeseries(
        "CPU used / limit",
        [target('container:cpu_usage_ratio:rate1m{%s}' % CONT, "{{name}}")], "percentunit",
        "Cores used divided by the CFS limit; only containers with a CPU quota.", min_=0,
        thresh=thresholds((1, "red"))))
    L.add(timeseries(
        "CFS periods throttled",
        [target('container:cpu_cfs_throttled_ratio:rate5m{%s}' % CONT, "{{name}}")],
        "percentunit", "throttled_periods / periods (5m rate). Alert at 25% for 10m.", min_=0,
        max_=1, thresh=thresholds((0.25, "red"))))
    L.add(timeseries(
        "Throttled time (s per s)",
        [target('rate(container_cpu_cfs_throttled_seconds_total{%s}[$__rate_interval])' % CONT,
                "{{name}}")], "short",
        "Seconds the container's tasks spent throttled, per second of wall time.", min_=0))

    L.row("Memory")
    L.add(timeseries(
        "Memory working set vs limit",
        [target('container_memory_working_set_bytes{%s}' % CONT, "{{name}}", "A"),
         target('container_spec_memory_limit_bytes{%s} > 0' % CONT, "{{name}} limit", "B")],
        "bytes", "Working set (usage - inactive file) per container; dashed: memory limit "
                 "(containers without a limit have none).",
        overrides=[limit_override("B")], min_=0))
    L.add(timeseries(
        "Memory working set / limit",
        [target('container:memory_working_set_ratio{%s}' % CONT, "{{name}}")], "percentunit",
        "Only containers with a memory limit. Alert at 90% for 5m.", min_=0,
        thresh=thresholds((0.9, "red"))))
    L.add(timeseries(
        "OOM kills",
        [target('increase(container_oom_events_total{%s}[$__rate_interval])' % CONT,
                "{{name}}")], "none", "OOM kills per container per interval.", bars=True,
        min_=0))
    L.add(timeseries(
        "Swap used",
        [target('container_memory_swap{%s}' % CONT, "{{name}}")], "bytes",
        "Swap used per container.", min_=0))

    L.row("Processes")
    L.add(timeseries(
        "Tasks vs pids limit",
        [target('container_threads{%s}' % CONT, "{{name}}", "A"),
         target('container_spec_pids_max{%s} > 0' % CONT, "{{name}} limit", "B")],
        "none", "Tasks (pids.current) per container; dashed: pids.max when set.",
        overrides=[limit_override("B")], min_=0))
    L.add(timeseries(
        "Tasks / pids limit",
        [target('container:pids_usage_ratio{%s}' % CONT, "{{name}}")], "percentunit",
        "Only containers with a pids limit. Alert at 90% for 5m.", min_=0,
        thresh=thresholds((0.9, "red"))))

    L.row("Disk and network")
    L.add(timeseries(
        "Disk throughput (read up, write down)",
        [target('container:fs_read_bytes:rate1m{%s}' % CONT, "{{name}} read", "A"),
         target('container:fs_write_bytes:rate1m{%s}' % CONT, "{{name}} write", "B")],
        "Bps", "Block I/O bytes per second, summed over devices.",
        overrides=[negative_y("B")]))
    L.add(timeseries(
        "Disk operations (read up, write down)",
        [target('container:fs_reads:rate1m{%s}' % CONT, "{{name}} reads", "A"),
         target('container:fs_writes:rate1m{%s}' % CONT, "{{name}} writes", "B")],
        "iops", "Block I/O operations per second, summed over devices.",
        overrides=[negative_y("B")]))
    L.add(timeseries(
        "Network throughput (receive up, transmit down)",
        [target('container:network_receive_bytes:rate1m{%s}' % CONT, "{{name}} rx", "A"),
         target('container:network_transmit_bytes:rate1m{%s}' % CONT, "{{name}} tx", "B")],
        "Bps", "Bytes per second, summed over the container's interfaces.",
        overrides=[negative_y("B")]))
    L.add(timeseries(
        "Network errors and drops",
        [target('sum by (name) (rate(container_network_receive_errors_total{%s}'
                '[$__rate_interval]))' % CONT, "{{name}} rx errors", "A"),
         target('sum by (name) (rate(container_network_transmit_errors_total{%s}'
                '[$__rate_interval]))' % CONT, "{{name}} tx errors", "B"),
         target('sum by (name) (rate(container_network_receive_packets_dropped_total{%s}'
                '[$__rate_interval]))' % CONT, "{{name}} rx dropped", "C"),
         target('sum by (name) (rate(container_network_transmit_packets_dropped_total{%s}'
                '[$__rate_interval]))' % CONT, "{{name}} tx dropped", "D")],
        "pps", "Packets per second with errors or dropped, summed over interfaces.", min_=0))

    L.row("Pressure (cgroup v2 only)")
    for res, what in (("cpu", "CPU"), ("memory", "Memory"), ("io", "I/O")):
        L.add(timeseries(
            "%s pressure" % what,
            [target('rate(container_pressure_%s_waiting_seconds_total{%s}[$__rate_interval])'
                    % (res, CONT), "{{name}} some", "A"),
             target('rate(container_pressure_%s_stalled_seconds_total{%s}[$__rate_interval])'
                    % (res, CONT), "{{name}} full", "B")],
            "percentunit",
            "Share of time some (at least one) / all tasks of the container waited for %s "
            "(PSI). Empty or zero on cgroup v1." % what, min_=0), 8, 8)

    L.row("Top $topn")
    tops = [
        ("Top $topn by CPU", 'topk($topn, sum by (name) (container:cpu_usage_cores:rate1m{%s}))'
         % CONT, "CPU (cores)", "short"),
        ("Top $topn by memory working set",
         'topk($topn, sum by (name) (container_memory_working_set_bytes{%s}))' % CONT,
         "Working set", "bytes"),
        ("Top $topn by CPU throttling",
         'topk($topn, sum by (name) (container:cpu_cfs_throttled_ratio:rate5m{%s}))' % CONT,
         "Throttled", "percentunit"),
        ("Top $topn by network (rx + tx)",
         'topk($topn, sum by (name) (container:network_receive_bytes:rate1m{%s})'
         ' + sum by (name) (container:network_transmit_bytes:rate1m{%s}))' % (CONT, CONT),
         "Network", "Bps"),
        ("Top $topn by disk (read + write)",
         'topk($topn, sum by (name) (container:fs_read_bytes:rate1m{%s})'
         ' + sum by (name) (container:fs_write_bytes:rate1m{%s}))' % (CONT, CONT),
         "Disk", "Bps"),
        ("Top $topn by tasks",
         'topk($topn, sum by (name) (container_threads{%s}))' % CONT, "Tasks", "none"),
    ]
    for title, expr, col, unit in tops:
        L.add(table(title, [target(expr, "", "A", instant=True, table=True)], unit,
                    [("Value", col, unit)], "Instant values now.", sort_by=col,
                    links=DETAIL_LINK), 8, 8)

    return dashboard(
        "cgsight-host-overview", "cgsight / Host overview",
        "Every container on one host: CPU, memory, pids against their limits, throttling, OOM "
        "kills, disk, network, pressure.",
        [INSTANCE_VAR, custom_var("topn", "Top N", ["5", "10", "20", "50"], "10")], L)


# ---------------------------------------------------------------------------------------------
# 2. Container detail
# ---------------------------------------------------------------------------------------------


def container_detail():
    L = Layout()
    L.row("Summary")
    L.add(stat("Image", [target('container_info{%s}' % ONE, "{{image}}", instant=True)],
               "none", "Image and runtime of the container.", text_mode="name", graph=False,
               color_mode="none"), 6, 4)
    L.add(stat("CPU used (cores)", [target(cpu_cores_raw(ONE), "used")], "short",
               decimals=2), 3, 4)
    L.add(stat("CPU limit (cores)",
               [target('container:cpu_limit_cores{%s}' % ONE, "limit")], "short",
               "CFS quota / period. No value: no CPU quota.", graph=False, decimals=2), 3, 4)
    L.add(stat("Memory working set", [target('container_memory_working_set_bytes{%s}' % ONE,
                                             "working set")], "bytes"), 3, 4)
    L.add(stat("Memory limit", [target('container_spec_memory_limit_bytes{%s}' % ONE,
                                       "limit")], "bytes", "0 means unlimited.",
               mappings=[zero_means("unlimited")], graph=False), 3, 4)
    L.add(stat("Pids limit", [target('container_spec_pids_max{%s}' % ONE, "limit")], "none",
               "pids.max; 0 means unlimited.", mappings=[zero_means("unlimited")],
               graph=False), 3, 4)
    L.add(stat("Up for", [target('time() - container_start_time_seconds{%s}' % ONE, "up")],
               "s", "Time since the container started.", graph=False), 3, 4)
    L.add(stat("CPU shares", [target('container_spec_cpu_shares{%s}' % ONE, "shares")], "none",
               "cpu.shares (v2: derived from cpu.weight).", graph=False), 4, 4)
    L.add(stat("Cpuset CPUs", [target('container_spec_cpuset_cpus_count{%s}' % ONE, "cpus")],
               "none", "CPUs in the container's cpuset.", graph=False), 4, 4)
    L.add(stat("OOM kills (time range)",
               [target('sum(increase(container_oom_events_total{%s}[$__range]))' % ONE, "kills",
                       instant=True)], "none", thresh=thresholds((1, "red")), graph=False,
               decimals=0), 4, 4)
    L.add(stat("Processes", [target('container_processes{%s}' % ONE, "processes")], "none"),
          4, 4)
    L.add(stat("Tasks", [target('container_threads{%s}' % ONE, "tasks")], "none"), 4, 4)
    L.add(stat("Last seen", [target('time() - container_last_seen{%s}' % ONE, "age")], "s",
               "Seconds since the agent last reported this container.", graph=False,
               thresh=thresholds((60, "red"))), 4, 4)

    L.row("CPU")
    L.add(timeseries(
        "CPU used vs limit (cores)",
        [target(cpu_cores_raw(ONE), "used", "A"),
         target('container:cpu_limit_cores{%s}' % ONE, "limit (quota / period)", "B"),
         target('container_spec_cpuset_cpus_count{%s}' % ONE, "cpuset CPUs", "C")],
        "short", "Cores used; dashed: the CFS limit and the number of CPUs in the cpuset.",
        overrides=[limit_override("B"), limit_override("C", "orange")], min_=0))
    L.add(timeseries(
        "CPU user / system (cores)",
        [target('rate(container_cpu_user_seconds_total{%s}[$__rate_interval])' % ONE, "user",
                "A"),
         target('rate(container_cpu_system_seconds_total{%s}[$__rate_interval])' % ONE,
                "system", "B")], "short", stack=True, min_=0))
    L.add(timeseries(
        "Per-CPU usage (cores)",
        [target('rate(container_cpu_usage_seconds_total{%s, cpu=~"cpu[0-9]+"}'
                '[$__rate_interval])' % ONE, "{{cpu}}")], "short",
        "Usage per host CPU (cpuacct.usage_percpu; cgroup v1 only).", stack=True, min_=0))
    L.add(timeseries(
        "CFS throttling",
        [target('rate(container_cpu_cfs_throttled_periods_total{%s}[$__rate_interval])\n/ '
                'rate(container_cpu_cfs_periods_total{%s}[$__rate_interval])' % (ONE, ONE),
                "periods throttled", "A"),
         target('rate(container_cpu_cfs_throttled_seconds_total{%s}[$__rate_interval])' % ONE,
                "throttled s/s", "B")],
        "percentunit", "Share of CFS periods throttled; throttled seconds per second "
                       "(right axis).",
        overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"},
                    "properties": [{"id": "unit", "value": "short"},
                                   {"id": "custom.axisPlacement", "value": "right"}]}],
        min_=0, thresh=thresholds((0.25, "red"))))

    L.row("Memory")
    L.add(timeseries(
        "Memory usage vs limit",
        [target('container_memory_usage_bytes{%s}' % ONE, "usage", "A"),
         target('container_memory_working_set_bytes{%s}' % ONE, "working set", "B"),
         target('container_memory_max_usage_bytes{%s}' % ONE, "max usage", "C"),
         target('container_spec_memory_limit_bytes{%s} > 0' % ONE, "limit", "D")],
        "bytes", "Usage, working set (usage - inactive file), peak usage; dashed: limit.",
        overrides=[limit_override("D"),
                   {"matcher": {"id": "byFrameRefID", "options": "C"},
                    "properties": [{"id": "custom.lineStyle",
                                    "value": {"fill": "dot", "dash": [0, 10]}}]}], min_=0))
    L.add(timeseries(
        "Memory breakdown",
        [target('container_memory_rss{%s}' % ONE, "rss (anon)", "A"),
         target('container_memory_cache{%s}' % ONE, "cache (file)", "B"),
         target('container_memory_mapped_file{%s}' % ONE, "mapped file", "C"),
         target('container_memory_swap{%s}' % ONE, "swap", "D")],
        "bytes", "rss = anonymous memory, cache = page cache (mapped file is part of it), swap.",
        min_=0))
    L.add(timeseries(
        "Swap vs swap limit",
        [target('container_memory_swap{%s}' % ONE, "swap", "A"),
         target('container_spec_memory_swap_limit_bytes{%s} > 0' % ONE, "swap limit", "B")],
        "bytes", "Swap used; dashed: swap limit (v1 memsw limit is memory+swap, v2 swap only).",
        overrides=[limit_override("B")], min_=0))
    L.add(timeseries(
        "Working set / limit",
        [target('container:memory_working_set_ratio{%s}' % ONE, "working set / limit")],
        "percentunit", "Only with a memory limit. Alert at 90% for 5m.", min_=0,
        thresh=thresholds((0.9, "red"))))
    L.add(timeseries(
        "Page faults",
        [target('rate(container_memory_failures_total{%s, scope="container"}'
                '[$__rate_interval])' % ONE, "{{failure_type}}")], "short",
        "Page faults per second (pgfault = minor, pgmajfault = major).", min_=0))
    L.add(timeseries(
        "Limit hits and OOM kills",
        [target('rate(container_memory_failcnt{%s}[$__rate_interval])' % ONE,
                "limit hits /s (v1 failcnt)", "A"),
         target('increase(container_oom_events_total{%s}[$__rate_interval])' % ONE,
                "OOM kills", "B")], "short",
        "memory.failcnt rate (cgroup v1) and OOM kills per interval.", min_=0))

    L.row("Processes")
    L.add(timeseries(
        "Tasks vs limit",
        [target('container_threads{%s}' % ONE, "tasks", "A"),
         target('container_processes{%s}' % ONE, "processes", "B"),
         target('container_spec_pids_max{%s} > 0' % ONE, "pids limit", "C")],
        "none", "Tasks (threads, pids.current) and processes; dashed: pids.max.",
        overrides=[limit_override("C")], min_=0))
    L.add(timeseries(
        "Tasks / limit",
        [target('container:pids_usage_ratio{%s}' % ONE, "tasks / limit")], "percentunit",
        "Only with a pids limit. Alert at 90% for 5m.", min_=0,
        thresh=thresholds((0.9, "red"))))

    L.row("Network")
    L.add(timeseries(
        "Network throughput (receive up, transmit down)",
        [target('rate(container_network_receive_bytes_total{%s}[$__rate_interval])' % ONE,
                "{{interface}} rx", "A"),
         target('rate(container_network_transmit_bytes_total{%s}[$__rate_interval])' % ONE,
                "{{interface}} tx", "B")], "Bps", overrides=[negative_y("B")]))
    L.add(timeseries(
        "Packets (receive up, transmit down)",
        [target('rate(container_network_receive_packets_total{%s}[$__rate_interval])' % ONE,
                "{{interface}} rx", "A"),
         target('rate(container_network_transmit_packets_total{%s}[$__rate_interval])' % ONE,
                "{{interface}} tx", "B")], "pps", overrides=[negative_y("B")]))
    L.add(timeseries(
        "Errors and drops",
        [target('rate(container_network_receive_errors_total{%s}[$__rate_interval])' % ONE,
                "{{interface}} rx errors", "A"),
         target('rate(container_network_transmit_errors_total{%s}[$__rate_interval])' % ONE,
                "{{interface}} tx errors", "B"),
         target('rate(container_network_receive_packets_dropped_total{%s}[$__rate_interval])'
                % ONE, "{{interface}} rx dropped", "C"),
         target('rate(container_network_transmit_packets_dropped_total{%s}[$__rate_interval])'
                % ONE, "{{interface}} tx dropped", "D")], "pps", min_=0), 24, 8)

    L.row("Disk I/O")
    L.add(timeseries(
        "Disk throughput (read up, write down)",
        [target('rate(container_fs_reads_bytes_total{%s}[$__rate_interval])' % ONE,
                "{{device}} read", "A"),
         target('rate(container_fs_writes_bytes_total{%s}[$__rate_interval])' % ONE,
                "{{device}} write", "B")], "Bps", overrides=[negative_y("B")]))
    L.add(timeseries(
        "Disk operations (read up, write down)",
        [target('rate(container_fs_reads_total{%s}[$__rate_interval])' % ONE,
                "{{device}} reads", "A"),
         target('rate(container_fs_writes_total{%s}[$__rate_interval])' % ONE,
                "{{device}} writes", "B")], "iops", overrides=[negative_y("B")]))

    L.row("Pressure (cgroup v2 only)")
    for res, what in (("cpu", "CPU"), ("memory", "Memory"), ("io", "I/O")):
        L.add(timeseries(
            "%s pressure" % what,
            [target('rate(container_pressure_%s_waiting_seconds_total{%s}[$__rate_interval])'
                    % (res, ONE), "some (waiting)", "A"),
             target('rate(container_pressure_%s_stalled_seconds_total{%s}[$__rate_interval])'
                    % (res, ONE), "full (stalled)", "B")],
            "percentunit", "Share of time tasks waited for %s (PSI some / full)." % what,
            min_=0), 8, 8)

    container_var = query_var(
        "container", "Container",
        'label_values(container_last_seen{instance=~"$instance", name!=""}, name)')
    return dashboard(
        "cgsight-container-detail", "cgsight / Container detail",
        "One container in depth: CPU (total, user/system, per CPU, throttling), memory "
        "breakdown, limits as dashed lines, tasks, network per interface, disk per device, PSI.",
        [INSTANCE_VAR, container_var], L)


# ---------------------------------------------------------------------------------------------
# 3. cgsight health
# ---------------------------------------------------------------------------------------------


def cgsight_health():
    L = Layout()
    L.row("Agent")
    L.add(stat("Targets up",
               [target('sum(up{%s})' % SELF, "up")], "none",
               "cgsight targets Prometheus scraped successfully.", graph=False, decimals=0),
          4, 4)
    L.add(stat("Targets down",
               [target('count(up{%s} == 0) or vector(0)' % SELF, "down")], "none",
               thresh=thresholds((1, "red")), graph=False, decimals=0), 4, 4)
    L.add(stat("Version", [target('cgsight_build_info{%s}' % SELF, "{{version}}",
                                  instant=True)], "none", text_mode="name", graph=False,
               color_mode="none"), 4, 4)
    L.add(stat("Tracked cgroups",
               [target('count(container_last_seen{%s})' % SELF, "cgroups")], "none",
               "Series of container_last_seen: every cgroup the agent exports."), 4, 4)
    L.add(stat("Samples per scrape",
               [target('sum(scrape_samples_scraped{%s})' % SELF, "samples")], "short",
               "Exposition size (cardinality) as Prometheus counts it."), 4, 4)
    L.add(stat("Scrape errors (time range)",
               [target('sum(increase(cgsight_scrape_errors_total{%s}[$__range]))' % SELF,
                       "errors", instant=True)], "none", thresh=thresholds((1, "red")),
               graph=False, decimals=0), 4, 4)
    L.add(timeseries(
        "Up",
        [target('up{%s}' % SELF, "{{instance}}")], "none", "1 = scraped, 0 = down.", min_=0,
        max_=1))
    L.add(timeseries(
        "Scrape duration",
        [target('cgsight_scrape_duration_seconds{%s}' % SELF, "{{instance}} agent", "A"),
         target('scrape_duration_seconds{%s}' % SELF, "{{instance}} as seen by Prometheus",
                "B")], "s",
        "The agent's own measurement of its last scrape, and Prometheus' round trip.", min_=0))
    L.add(timeseries(
        "Scrape errors",
        [target('sum by (instance, kind) (rate(cgsight_scrape_errors_total{%s}'
                '[$__rate_interval]))' % SELF, "{{instance}} {{kind}}")], "short",
        "Errors per second by kind. Alert when non-zero for 10m.", min_=0))
    L.add(timeseries(
        "Samples per scrape",
        [target('scrape_samples_scraped{%s}' % SELF, "{{instance}}")], "short", min_=0))

    L.row("fs daemon")
    L.add(timeseries(
        "Reads per second by file",
        [target('sum by (file) (rate(cgsight_fs_reads_total{%s}[$__rate_interval]))' % SELF,
                "{{file}}")], "ops", "FUSE reads of each virtual file.", min_=0))
    L.add(timeseries(
        "Read latency",
        [target('histogram_quantile(%s, sum by (le) (rate(cgsight_fs_read_duration_seconds_bucket'
                '{%s}[$__rate_interval])))' % (q, SELF), "p%s" % label, ref)
         for q, label, ref in (("0.5", "50", "A"), ("0.9", "90", "B"), ("0.99", "99", "C"))],
        "s", "Quantiles over all files, from the read-duration histogram.", min_=0))
    L.add(timeseries(
        "p99 read latency by file",
        [target('histogram_quantile(0.99, sum by (le, file) (rate('
                'cgsight_fs_read_duration_seconds_bucket{%s}[$__rate_interval])))' % SELF,
                "{{file}}")], "s", min_=0))
    L.add(timeseries(
        "Mean read latency by file",
        [target('sum by (file) (rate(cgsight_fs_read_duration_seconds_sum{%s}[$__rate_interval]))'
                '\n/ sum by (file) (rate(cgsight_fs_read_duration_seconds_count{%s}'
                '[$__rate_interval]))' % (SELF, SELF), "{{file}}")], "s", min_=0))
    L.add(timeseries(
        "Fallbacks to host files",
        # The counter only has series once a fallback happened: a zero per file read (`or on
        # (file)`) shows a healthy daemon as 0 rather than "No data".
        [target('sum by (file, reason) (rate(cgsight_fs_fallbacks_total{%s}[$__rate_interval]))'
                '\nor on (file)\nsum by (file) (rate(cgsight_fs_reads_total{%s}[$__rate_interval]))'
                ' * 0' % (SELF, SELF), "{{file}} {{reason}}")], "ops",
        "Reads answered with the host's file instead of a container view (0 per file when "
        "there were none). Alert when non-zero for 15m.", min_=0))
    L.add(timeseries(
        "Fallback share of reads",
        [target('(sum by (file) (rate(cgsight_fs_fallbacks_total{%s}[$__rate_interval]))\n'
                'or on (file)\nsum by (file) (rate(cgsight_fs_reads_total{%s}[$__rate_interval]))'
                ' * 0)\n/ sum by (file) (rate(cgsight_fs_reads_total{%s}[$__rate_interval]))'
                % (SELF, SELF, SELF), "{{file}}")], "percentunit", min_=0))

    inst = query_var("instance", "Instance", 'label_values(up{job="cgsight"}, instance)',
                     multi=True, include_all=True, all_value=".*")
    return dashboard(
        "cgsight-health", "cgsight / Health",
        "The cgsight agent and fs daemon themselves: scrape health, errors, FUSE read rate and "
        "latency, fallbacks to host files.", [inst], L)


DASHBOARDS = {
    "host-overview.json": host_overview,
    "container-detail.json": container_detail,
    "cgsight-health.json": cgsight_health,
}


def render(builder):
    return json.dumps(builder(), indent=2, ensure_ascii=False) + "\n"


def main(argv):
    check = "--check" in argv
    stale = []
    for fname, builder in DASHBOARDS.items():
        path = os.path.join(HERE, fname)
        text = render(builder)
        if check:
            try:
                with open(path, encoding="utf-8") as fh:
                    current = fh.read()
            except OSError:
                current = None
            if current != text:
                stale.append(fname)
        else:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            print("wrote %s" % path)
    if stale:
        print("out of date (run python3 dashboards/build.py): %s" % ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
