#!/usr/bin/env bash
# Checks for dashboards/: promtool (rules, config, rule unit tests), the dashboard lint, unit
# tests of the tools, and a live fixture run of panel_queries.py when `prometheus` is installed
# (set CGSIGHT_SKIP_LIVE=1 to skip it). Needs promtool (Debian package `prometheus`) and
# python3. Closing line: `N passed, M failed`; exit status 1 if anything failed.
set -u
cd "$(dirname "$0")/.." || exit 2

passed=0
failed=0
skipped=0

step() { # step NAME COMMAND... : one check, pass on exit 0
    local name=$1; shift
    echo "--- $name"
    if "$@"; then
        passed=$((passed + 1)); echo "ok   $name"
    else
        failed=$((failed + 1)); echo "FAIL $name"
    fi
}

counted() { # counted NAME COMMAND... : add the tool's own `N passed, M failed` line
    local name=$1; shift
    echo "--- $name"
    local out rc line p f
    out=$("$@" 2>&1); rc=$?
    printf '%s\n' "$out"
    if [ "$rc" -eq 77 ]; then
        skipped=$((skipped + 1)); return
    fi
    line=$(printf '%s\n' "$out" | grep -E '^[a-z]+: [0-9]+ passed, [0-9]+ failed$' | tail -n 1)
    if [ -z "$line" ]; then
        failed=$((failed + 1)); echo "FAIL $name (no summary line, exit $rc)"; return
    fi
    p=$(printf '%s' "$line" | sed -E 's/^[a-z]+: ([0-9]+) passed.*/\1/')
    f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed$/\1/')
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        failed=$((failed + 1)); echo "FAIL $name (exit $rc)"
    fi
}

if command -v promtool >/dev/null 2>&1; then
    for f in rules/cgsight-recording.yml rules/cgsight-alerts.yml; do
        step "promtool check rules $f" promtool check rules "$f"
    done
    step "promtool check config prometheus/prometheus.yml" \
        promtool check config prometheus/prometheus.yml
    for f in tests/recording_test.yml tests/alerts_test.yml; do
        step "promtool test rules $f" promtool test rules "$f"
    done
else
    echo "FAIL promtool not found (apt-get install prometheus)"
    failed=$((failed + 1))
fi

counted "dashboard lint" python3 tests/lint_dashboards.py
counted "tool unit tests" python3 tests/test_tools.py
if [ "${CGSIGHT_SKIP_LIVE:-0}" = 1 ]; then
    echo "--- live fixture check skipped (CGSIGHT_SKIP_LIVE=1)"
    skipped=$((skipped + 1))
else
    counted "live fixture check of panel_queries.py" python3 tests/fixture_live.py
fi

echo
if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
