#!/usr/bin/env bash
# tests/it/ingest_tls.rs drives `openssl s_client` to prove TLS 1.0/1.1 are refused by the server.
set -euo pipefail
command -v openssl >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
else
    echo "openssl is missing: install it (Debian: apt-get install openssl)" >&2
    exit 1
fi
