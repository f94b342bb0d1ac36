#!/bin/sh
# Independent FHIR validator for the mapping tests (tests/it/mapping.rs): fhir.resources 8.3.0 (PyPI, R4B
# models) in a private venv at $HOME/.cache/relais/fhir-venv. Idempotent and quiet.
set -e
V="${HOME}/.cache/relais/fhir-venv"
if [ -x "$V/bin/python" ] && "$V/bin/python" -c 'import fhir.resources.R4B.bundle' 2>/dev/null; then
  exit 0
fi
if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  # Debian ships venv/ensurepip separately.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
mkdir -p "$(dirname "$V")"
python3 -m venv "$V"
"$V/bin/pip" install -q --disable-pip-version-check 'fhir.resources==8.3.0'
"$V/bin/python" -c 'import fhir.resources.R4B.bundle'
