#!/usr/bin/env python3
"""Independent check of Relais FHIR Bundles: fhir.resources (R4B models) plus the rules it does not check.

Usage: validate_fhir.py FILE.json...   (exit 0 when every Bundle is valid; one line per problem otherwise)

fhir.resources checks structure, cardinality, required elements, choice types and primitive formats. On
top of it this script checks what it does not: fullUrl and literal references are urn:uuid values that
resolve inside the Bundle, a message Bundle starts with a MessageHeader whose focus is in the Bundle
(FHIR bdl-12 and the messaging rules), a transaction entry has a request, and ids are unique.
"""
import json
import re
import sys

from fhir.resources.R4B.bundle import Bundle

UUID = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def references(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def check(path):
    problems = []
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    try:
        Bundle.model_validate(data)
    except Exception as e:  # pydantic ValidationError: report it whole, on one line
        problems.append("fhir.resources: " + " ".join(str(e).split()))
    entries = data.get("entry", [])
    urls = [e.get("fullUrl", "") for e in entries]
    for url in urls:
        if not UUID.match(url):
            problems.append(f"fullUrl {url!r} is not a urn:uuid")
    if len(set(urls)) != len(urls):
        problems.append("duplicate fullUrl")
    for e in entries:
        rid = e.get("resource", {}).get("id")
        if rid and e.get("fullUrl") != f"urn:uuid:{rid}":
            problems.append(f"fullUrl {e.get('fullUrl')!r} does not match id {rid!r}")
    for ref in references(entries):
        if ref.startswith("urn:uuid:") and ref not in urls:
            problems.append(f"reference {ref} does not resolve in the Bundle")
    kind = data.get("type")
    if kind == "message":
        first = entries[0]["resource"] if entries else {}
        if first.get("resourceType") != "MessageHeader":
            problems.append("a message Bundle must start with a MessageHeader (bdl-12)")
        if "timestamp" not in data:
            problems.append("a message Bundle should carry a timestamp")
        for f in first.get("focus", []):
            if f.get("reference") not in urls:
                problems.append("MessageHeader.focus is not in the Bundle")
        for e in entries:
            if "request" in e:
                problems.append("a message Bundle entry has a request")
    elif kind == "transaction":
        for e in entries:
            req = e.get("request", {})
            if req.get("method") not in ("PUT", "POST") or not req.get("url"):
                problems.append(f"transaction entry {e.get('fullUrl')} has no request")
    else:
        problems.append(f"unexpected Bundle.type {kind!r}")
    return problems


def main():
    failed = 0
    for path in sys.argv[1:]:
        for p in check(path):
            print(f"{path}: {p}")
            failed += 1
    print(f"{len(sys.argv) - 1} bundles checked, {failed} problems", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
