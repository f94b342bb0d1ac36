#!/bin/sh
# Debian chromium and playwright-core (npm) for the console test (tests/it/admin.rs drives the real browser).
# Idempotent and quiet. playwright-core goes to /var/cache/relais-test/playwright (no browser download: it
# drives /usr/bin/chromium).
set -eu
if ! command -v chromium >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
fi
if ! command -v node >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
fi
dir=/var/cache/relais-test/playwright
if [ ! -d "$dir/node_modules/playwright-core" ]; then
    mkdir -p "$dir"
    ( cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund playwright-core@1 >/dev/null )
fi
