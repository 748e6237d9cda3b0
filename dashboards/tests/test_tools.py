#!/usr/bin/env python3
"""Unit tests of panel_queries.py (no Prometheus needed) and negative tests of the lint.

Prints `unit: N passed, M failed`; exit 1 on failure. Standard library only.
"""

import copy
import io
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lint_dashboards as lint  # noqa: E402
import panel_queries as pq  # noqa: E402


class FakeProm:
    """Answers label-values and instant queries from canned data; records what it was asked."""

    def __init__(self, labels=None, instant=None):
        self.labels = labels or {}
        self.instant_results = instant or {}
        self.asked = []

    def label_values(self, label, selector=None):
        self.asked.append(("label_values", label, selector))
        return self.labels.get(label, [])

    def series(self, selector):
        return []

    def label_names(self, selector=None):
        return sorted(self.labels)

    def instant(self, expr):
        self.asked.append(("instant", expr))
        return self.instant_results.get(expr, {"resultType": "vector", "result": []})

    def range(self, expr):
        return self.instant(expr)


class Durations(unittest.TestCase):
    def test_parse(self):
        self.assertEqual(pq.parse_duration("1m30s"), 90)
        self.assertEqual(pq.parse_duration("500ms"), 0.5)
        self.assertRaises(ValueError, pq.parse_duration, "5 minutes")

    def test_format(self):
        self.assertEqual(pq.format_duration(90), "1m30s")
        self.assertEqual(pq.format_duration(3600), "1h")
        self.assertEqual(pq.format_duration(0.25), "250ms")

    def test_rate_interval_like_grafana(self):
        # max($__interval + scrape, 4 * scrape)
        self.assertEqual(pq.builtin_vars(15)["__rate_interval"], "1m")
        self.assertEqual(pq.builtin_vars(15, interval=60)["__rate_interval"], "1m15s")
        self.assertEqual(pq.builtin_vars(15, rate_interval=120)["__rate_interval"], "2m")
        b = pq.builtin_vars(15, range_s=21600)
        self.assertEqual((b["__range"], b["__range_s"], b["__range_ms"]),
                         ("6h", "21600", "21600000"))


class Substitution(unittest.TestCase):
    def setUp(self):
        self.b = pq.builtin_vars(15, range_s=3600)

    def test_forms(self):
        v = {"instance": pq.Var("instance", ["h:9723"]),
             "container": pq.Var("container", ["web"])}
        text = 'x{instance="$instance",name="${container}",n2="[[container]]"}[$__rate_interval]'
        self.assertEqual(pq.substitute(text, v, self.b),
                         'x{instance="h:9723",name="web",n2="web"}[1m]')

    def test_builtin_prefixes(self):
        out = pq.substitute("$__range_ms $__range_s $__range $__interval_ms $__interval",
                            {}, self.b)
        self.assertEqual(out, "3600000 3600 1h 15000 15s")

    def test_all_and_multi(self):
        all_ = pq.Var("c", ["a.b", "c"], multi=True, include_all=True, all_value=".*",
                      is_all=True)
        self.assertEqual(all_.render(), ".*")
        multi = pq.Var("c", ["a.b", "c"], multi=True)
        self.assertEqual(multi.render(), "(a\\\\.b|c)")
        self.assertEqual(multi.render("pipe"), "a.b|c")
        self.assertEqual(multi.render("csv"), "a.b,c")
        one = pq.Var("c", ["a.b"])
        self.assertEqual(one.render(), "a.b")
        self.assertEqual(pq.substitute("${c:regex}", {"c": one}, self.b), "a\\\\.b")

    def test_unknown_left_alone(self):
        self.assertEqual(pq.substitute("$nope ${nope}", {}, self.b), "$nope ${nope}")


class Scanning(unittest.TestCase):
    def test_metrics_and_labels(self):
        info = pq.scan_promql(
            'sum by (name) (rate(container_cpu_usage_seconds_total{instance=~"$instance", '
            'cpu="total"}[$__rate_interval])) / on (name) group_left '
            'container:cpu_limit_cores offset 5m > bool 0.5 and up{job="x"}')
        self.assertEqual(info["metrics"], {"container_cpu_usage_seconds_total",
                                           "container:cpu_limit_cores", "up"})
        self.assertIn(("cpu", "=", "total"), info["matchers"])
        self.assertEqual(info["grouping"], {"name"})

    def test_histogram_and_strings(self):
        info = pq.scan_promql('histogram_quantile(0.99, sum by (le) (rate(x_bucket{a=~"[0-9]+ '
                              'y"}[5m]))) * 1e3')
        self.assertEqual(info["metrics"], {"x_bucket"})

    def test_name_matcher(self):
        info = pq.scan_promql('{__name__="foo", a="b"}')
        self.assertEqual(info["metrics"], {"foo"})

    def test_label_values(self):
        self.assertEqual(pq.parse_label_values("label_values(instance)"), (None, "instance"))
        self.assertEqual(pq.parse_label_values('label_values(up{job="a,b"}, instance)'),
                         ('up{job="a,b"}', "instance"))
        self.assertIsNone(pq.parse_label_values("query_result(up)"))

    def test_classify(self):
        self.assertEqual(pq.classify("machine_cpu_cores"), "cadvisor")
        self.assertEqual(pq.classify("sum(rate(container_cpu_user_seconds_total[1m])) / "
                                     "count(node_cpu_seconds_total)"), "excepted")
        self.assertEqual(pq.classify('up{job="prometheus"}'), "excepted")
        self.assertEqual(pq.classify('up{job="cgsight"}'), "cgsight")
        self.assertEqual(pq.classify("container:cpu_usage_cores:rate1m"), "cgsight")
        self.assertEqual(pq.classify(pq.variable_query_exprs(
            'label_values({__name__=~"container.*"},instance)')), "cadvisor")

    def test_var_regex_and_sort(self):
        self.assertEqual(pq.apply_var_regex(["a:1", "b:2"], "/(.*):\\d/"), ["a", "b"])
        self.assertEqual(pq.sort_values(["b", "a", "C"], 5), ["a", "b", "C"])
        self.assertEqual(pq.sort_values(["10", "9"], 3), ["9", "10"])

    def test_summarize(self):
        self.assertEqual(pq.summarize_result({"resultType": "scalar", "result": [1, "NaN"]})[0],
                         False)
        self.assertEqual(pq.summarize_result({"resultType": "vector", "result": []})[0], False)
        ok = pq.summarize_result({"resultType": "vector",
                                  "result": [{"metric": {}, "value": [1, "NaN"]}]})
        self.assertEqual(ok, (True, 1, True))


class Resolve(unittest.TestCase):
    def dash(self):
        return {"templating": {"list": [
            {"type": "datasource", "name": "datasource", "query": "prometheus"},
            {"type": "query", "name": "instance", "query": {
                "query": "label_values(container_last_seen, instance)"}, "sort": 1},
            {"type": "query", "name": "container", "sort": 1,
             "query": 'label_values(container_last_seen{instance=~"$instance"}, name)'},
            {"type": "query", "name": "multi", "multi": True, "includeAll": True,
             "query": "label_values(image)"},
            {"type": "custom", "name": "topn", "query": "5,10,20",
             "current": {"text": "10", "value": "10"}},
        ]}, "panels": [
            {"id": 1, "type": "row", "panels": [
                {"id": 2, "datasource": {"type": "prometheus", "uid": "${datasource}"},
                 "targets": [{"refId": "A", "expr": 'topk($topn, x{instance="$instance", '
                                                    'name="$container", image=~"$multi"})'}]}]},
            {"id": 3, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
             "targets": [{"refId": "A", "expr": "ignored"}]},
        ]}

    def test_resolution_order_and_values(self):
        prom = FakeProm(labels={"instance": ["h2:9723", "h1:9723"], "name": ["web", "db"],
                                "image": ["a", "b.c"]})
        report = []
        b = pq.builtin_vars(15)
        resolved = pq.resolve_variables(self.dash(), prom, {}, b, report)
        self.assertEqual(resolved["instance"].render(), "h1:9723")  # sorted, first
        self.assertEqual(resolved["container"].render(), "db")
        self.assertEqual(resolved["multi"].render(), "(a|b\\\\.c)")
        self.assertEqual(resolved["topn"].render(), "10")
        # $instance was substituted into the container query before it ran.
        self.assertIn(("label_values", "name", 'container_last_seen{instance=~"h1:9723"}'),
                      prom.asked)
        self.assertEqual([e["status"] for e in report], ["data", "data", "data"])

    def test_overrides_and_targets(self):
        prom = FakeProm(labels={"instance": ["h1"], "name": ["web"], "image": []})
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump({"dashboard": self.dash()}, fh)  # API wrapper is unwrapped
        try:
            res = pq.run_dashboard(fh.name, prom, {"container": "db"}, pq.builtin_vars(15))
        finally:
            os.unlink(fh.name)
        panels = [e for e in res["queries"] if e["kind"] == "panel"]
        self.assertEqual(len(panels), 1)  # the Grafana-datasource target is skipped
        self.assertEqual(panels[0]["query"],
                         'topk(10, x{instance="h1", name="db", image=~".+"})')
        self.assertEqual(panels[0]["status"], "empty")
        self.assertEqual(res["summary"]["required"], 4)

    def test_old_rows_layout(self):
        d = {"rows": [{"panels": [{"id": 1, "datasource": "Prometheus",
                                   "targets": [{"expr": "machine_cpu_cores"}]}]}]}
        self.assertEqual(len(pq.panel_targets(d)), 1)


class LintNegative(unittest.TestCase):
    """A broken copy of host-overview must fail the matching lint checks."""

    def run_lint(self, mutate):
        with open(os.path.join(lint.ROOT, "host-overview.json"), encoding="utf-8") as fh:
            dash = json.load(fh)
        dash = copy.deepcopy(dash)
        mutate(dash)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(dash, fh)
        try:
            res = lint.Results(out=io.StringIO())
            lint.lint_dashboard(res, "host-overview.json", lint.allowed_metrics(), path=fh.name,
                                check_generated=False)
        finally:
            os.unlink(fh.name)
        return set(res.failures)

    def first_panel(self, dash):
        return [p for p in dash["panels"] if p["type"] != "row"][0]

    def test_clean_copy_passes(self):
        self.assertEqual(self.run_lint(lambda d: None), set())

    def test_hardcoded_instance(self):
        def m(d):
            self.first_panel(d)["targets"][0]["expr"] = 'machine_cpu_cores{instance="10.0.0.1:9723"}'
        self.assertEqual(self.run_lint(m), {"host-overview: no-hardcoded"})

    def test_unknown_metric_and_label(self):
        def m(d):
            self.first_panel(d)["targets"][0]["expr"] = 'node_load1{hostname=~"$instance"}'
        self.assertEqual(self.run_lint(m), {"host-overview: metrics", "host-overview: labels"})

    def test_fixed_rate_window(self):
        def m(d):
            self.first_panel(d)["targets"][0]["expr"] = "rate(container_cpu_usage_seconds_total[5m])"
        self.assertEqual(self.run_lint(m), {"host-overview: rate-interval"})

    def test_missing_unit_datasource_duplicate_id(self):
        def m(d):
            p = self.first_panel(d)
            del p["fieldConfig"]["defaults"]["unit"]
            p["datasource"] = "Prometheus"
            d["panels"][-1]["id"] = p["id"]
        self.assertEqual(self.run_lint(m), {"host-overview: units", "host-overview: datasource",
                                            "host-overview: panel-ids"})

    def test_nested_row_panel_checked(self):
        def m(d):
            p = self.first_panel(d)
            d["panels"].remove(p)
            del p["fieldConfig"]["defaults"]["unit"]
            d["panels"].append({"type": "row", "id": 999, "title": "collapsed",
                                "collapsed": True, "gridPos": {"h": 1, "w": 24, "x": 0, "y": 99},
                                "panels": [p]})
        self.assertEqual(self.run_lint(m), {"host-overview: units"})

    def test_uid_and_syntax(self):
        def m(d):
            d["uid"] = "random-uid"
            self.first_panel(d)["targets"][0]["expr"] = "sum(machine_cpu_cores"
        self.assertEqual(self.run_lint(m), {"host-overview: uid", "host-overview: syntax"})


def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=1, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors)
    print("unit: %d passed, %d failed" % (result.testsRun - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
