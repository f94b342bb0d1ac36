#!/bin/sh
# promtool (checks the /metrics output and deploy/prometheus/*.rules.yml) and PyYAML (parses the deploy YAML).
# Idempotent and quiet. promtool is taken out of Debian's `prometheus` package without installing the server
# (installing it would start a service listening on every interface).
set -eu
if ! command -v promtool >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    ( cd "$tmp"
      apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download prometheus >/dev/null; }
      dpkg --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool
      install -m 0755 usr/bin/promtool /usr/local/bin/promtool )
fi
# The tests run `python3` from PATH: make sure that one imports yaml.
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
    apt-get install -y -qq python3-yaml >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq python3-yaml >/dev/null 2>&1; } || true
    python3 -c 'import yaml' >/dev/null 2>&1 || python3 -m pip install -q pyyaml 2>/dev/null \
        || python3 -m pip install -q --break-system-packages pyyaml
fi
