#!/bin/sh
# xmlsec1 (Debian xmlsec1, the XML Security Library's command line): the DMP tests verify the signed VIHF
# assertion with this reference implementation of XML-DSig.
set -e
command -v xmlsec1 >/dev/null 2>&1 && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q xmlsec1 >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q xmlsec1 >/dev/null; }
