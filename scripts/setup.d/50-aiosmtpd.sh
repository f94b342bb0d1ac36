#!/bin/sh
# aiosmtpd (PyPI) in a venv under $HOME/.cache/relais-aiosmtpd: the MSSanté sink tests start it as a real
# SMTP server with STARTTLS on 127.0.0.1 (tests/it/sinks/mail.rs finds it there).
set -e
VENV="${RELAIS_AIOSMTPD_VENV:-$HOME/.cache/relais-aiosmtpd}"
"$VENV/bin/python" -c 'import aiosmtpd' >/dev/null 2>&1 && exit 0
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q python3-venv >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null; }
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q 'aiosmtpd==1.4.6'
"$VENV/bin/python" -c 'import aiosmtpd'
