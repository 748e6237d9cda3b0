#!/usr/bin/env bash
# Installs what cgsight's tests, benchmarks and demo use, from Debian's packages. Idempotent and
# non-interactive: packages already present are not fetched again.
set -euo pipefail
pkgs=(lxcfs prometheus prometheus-node-exporter crun runc busybox-static stress-ng procps htop
      python3 python3-psutil iproute2 nftables util-linux psmisc qemu-system-x86 openssl curl hyperfine
      libseccomp-dev pkg-config docker-registry skopeo umoci)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's lxcfs and prometheus packages would start services where systemd runs; cgsight's
    # tests start their own instances, so keep the package services from starting.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy
