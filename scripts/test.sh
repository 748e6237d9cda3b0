#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every check: formatting,
# clippy, all workspace tests on this host's real kernel (as root), the dashboards/rules suite,
# and the cgroup v1/v2 VM lanes. Ends with one `N passed, M failed` line.
set -uo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root: the tests create real cgroups, mounts and namespaces" >&2; exit 2; }

./scripts/install-deps.sh || { echo "installing test dependencies failed" >&2; exit 1; }

# The machine's own network before the tests: they may only change test-made namespaces.
net_before=$( { ip -br link; nft list tables; sysctl -n net.ipv4.ip_forward; ip netns list; } 2>&1)

passed=0; failed=0; failures=()
run() { # run NAME CMD...
    local name=$1; shift
    echo "=== $name"
    if "$@"; then passed=$((passed + 1)); echo "=== ok: $name"
    else failed=$((failed + 1)); failures+=("$name"); echo "=== FAILED: $name"; fi
}

run "cargo fmt --check" cargo fmt --all --check
run "cargo clippy -D warnings" cargo clippy --workspace --all-targets --locked -- -D warnings
run "cargo test (host kernel)" cargo test --workspace --locked --no-fail-fast -- --test-threads=4
run "dashboards and rules" bash dashboards/tests/run.sh
if [ -x tests/vm/run-tests-in-vm.sh ] && [ "${CGSIGHT_SKIP_VM:-0}" != 1 ]; then
    # The VM lanes run what depends on the kernel (Debian's 6.1) or the cgroup layout; the
    # emulated guests are ~20x slower, so what depends on neither stays on the host lane:
    # the agent's HTTP, TLS and basic-auth handling.
    host_only=(--skip agent::connections_without_a_complete_request_are_closed
        --skip agent::tls_and_basic_auth_from_web_config
        --skip agent::wrong_password_hammer_does_not_stall_an_authenticated_scrape
        --skip agent::a_connection_accepted_before_sigterm_is_answered)
    # Not changed by the cgroup layout: images, networking, seccomp, the terminal, and the views'
    # hand-over and repair (the v1 lane still runs every view's content). The v2 lane covers
    # 6.1's kernel for them; per-test times in the lanes' logs ("[123s] test ...") show the cost.
    layout_free=(--skip images:: --skip network:: --skip containment::seccomp:: --skip launch_tty::
        --skip fs_handover:: --skip fs_repair::)
    run "vm setup" bash tests/vm/setup.sh
    run "tests on a pure cgroup v2 kernel (VM)" bash tests/vm/run-tests-in-vm.sh --cgroup v2 --timeout 2700 \
        -- "${host_only[@]}"
    # The image, network and seccomp crates' own tests do not depend on the layout either.
    run "tests on a legacy cgroup v1 kernel (VM)" bash tests/vm/run-tests-in-vm.sh --cgroup v1 --timeout 2700 \
        --skip-package cgsight-image --skip-package cgsight-network --skip-package cgsight-seccomp \
        -- "${host_only[@]}" "${layout_free[@]}"
fi

# Nothing the tests made may outlive them.
left=$( { grep cgsight-test /proc/self/mountinfo; find /sys/fs/cgroup -maxdepth 3 -type d -name 'cgsight-test*'; pgrep -af 'cgsight-test' ; } 2>/dev/null | grep -v pgrep || true)
net_after=$( { ip -br link; nft list tables; sysctl -n net.ipv4.ip_forward; ip netns list; } 2>&1)
if [ "$net_before" != "$net_after" ]; then
    left+=$'\n'"the machine's network changed (links, nft tables, ip_forward, netns):"$'\n'"$(diff <(echo "$net_before") <(echo "$net_after"))"
fi
if [ -n "$left" ]; then
    failed=$((failed + 1)); failures+=("leftovers"); echo "=== FAILED: tests left behind:"; echo "$left"
else
    passed=$((passed + 1))
fi

[ ${#failures[@]} -eq 0 ] || printf 'failed step: %s\n' "${failures[@]}"
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
