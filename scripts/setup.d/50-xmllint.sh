#!/bin/sh
# xmllint (Debian libxml2-utils): the sinks tests validate XDM METADATA.XML and ITI-41 bodies with it.
set -e
command -v xmllint >/dev/null 2>&1 && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q libxml2-utils >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q libxml2-utils >/dev/null; }
