#!/usr/bin/env bash
# The test command (README, .ci/run): install what the tests need, then run every test of the workspace.
#
# 1. Runs each scripts/setup.d/*.sh in name order. Each one installs what its own tests need (apt packages,
#    pip or npm tools), is idempotent and quiet, and fails loudly when it cannot.
# 2. Keeps a persistent CARGO_TARGET_DIR (default ~/.cache/relais-target) so repeated runs stay incremental.
# 3. Compiles every target, benches included (they must keep building, but are never run: timed figures
#    come from `cargo bench`), then runs `cargo test --workspace --no-fail-fast`: unit, integration and doc
#    tests, every failing target reported (one failure does not hide the others).
#    Extra arguments go to that last command, e.g. `bash scripts/test.sh --test it crash`.
set -euo pipefail
cd "$(dirname "$0")/.."

for setup in scripts/setup.d/*.sh; do
    [ -e "$setup" ] || continue
    echo "== setup: $setup" >&2
    bash "$setup"
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/relais-target}"
echo "== cargo test (target dir: $CARGO_TARGET_DIR)" >&2
cargo test --workspace --all-targets --no-run
cargo test --workspace --no-fail-fast "$@"
