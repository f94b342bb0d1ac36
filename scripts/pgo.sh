#!/usr/bin/env bash
# Profile-guided build of the packaged binary (the `dist` profile), as deploy/docker/Dockerfile builds it.
#
#   bash scripts/pgo.sh          # -> target/dist/relais, optimized with the profile of a training run
#   bash scripts/pgo.sh bench    # the same profile, then `cargo bench --profile dist --bench convert`
#
# 1. `relais` is built instrumented (-Cprofile-generate) into target/pgo-gen/.
# 2. Training: that binary serves on a temporary data directory (embedded defaults, loopback ports) and receives
#    every HL7v2 message of test-messages/ over MLLP, 24 rounds (eight at a time on eight connections) with
#    MSH-10 made unique per round (so each one is journaled and mapped, not answered as a duplicate), and every
#    CDA document over HTTP; then `relais convert` converts each HL7v2 message once as a message and once as a
#    transaction Bundle.
#    The benchmark messages (test-messages/bench/, sinkbench/) and the malformed ones (bad/) are NOT in the
#    training set.
# 3. llvm-profdata (rustup component llvm-tools, added if missing) merges the counts into target/pgo/relais.profdata.
# 4. The build with -Cprofile-use. Each build is a full `dist` build (fat LTO): on 2 cores, 15-20 min each.
#    rustc lists the profile among every crate's inputs, so a new profile rebuilds every crate with it.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-build}
case $mode in build | bench) ;; *) echo "usage: $0 [build|bench]" >&2; exit 2 ;; esac

target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target"
target=$(cd "$target" && pwd)
pgo=$target/pgo
raw=$pgo/raw
profile=$pgo/relais.profdata

host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$profdata" ]; then
    rustup component add llvm-tools >&2
fi

echo "pgo: instrumented build" >&2
RUSTFLAGS="-Cprofile-generate=$raw" cargo build --profile dist --locked --bin relais \
    --target-dir "$target/pgo-gen"
trainee=$target/pgo-gen/dist/relais

echo "pgo: training run" >&2
rm -rf "$raw"
mkdir -p "$raw"
work=$(mktemp -d)
server=
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

mapfile -t hl7 < <(find test-messages -path test-messages/bench -prune -o -path test-messages/sinkbench -prune \
    -o -path '*/bad' -prune -o \
    -type f \( -name '*.hl7' -o -name '*.er7' \) -print | sort)
mapfile -t cda < <(find test-messages/cda -path '*/bad' -prune -o -type f -name '*.xml' -print | sort)

# Port 0: the bound addresses are read back from listeners.json.
RELAIS__DATA_DIR=$work/data RELAIS__MLLP__LISTEN=127.0.0.1:0 RELAIS__HTTP__LISTEN=127.0.0.1:0 \
    RELAIS_LOG=warn "$trainee" serve 2> "$work/serve.log" &
server=$!
for _ in $(seq 100); do
    [ -f "$work/data/listeners.json" ] && break
    sleep 0.1
done
if [ ! -f "$work/data/listeners.json" ]; then
    echo "pgo: the instrumented relais serve did not come up:" >&2
    cat "$work/serve.log" >&2
    exit 1
fi
bound() { sed -n "s/.*\"$1\": \"\(.*\)\".*/\1/p" "$work/data/listeners.json"; }
mllp=$(bound mllp)
http_port=$(bound http)
http_port=${http_port##*:}

# Three batches of eight rounds, the eight sent at once on eight connections (so the journal's group commit
# takes several messages per sync, as under load).
for batch in 0 1 2; do
    senders=()
    for connection in $(seq 8); do
        round=$((batch * 8 + connection))
        mkdir -p "$work/round$round"
        for f in "${hl7[@]}"; do
            # MSH-10 (the control id) gets the round number, so the journal takes every round as new messages.
            perl -0777 -pe "s/(^|[\r\n])(MSH(?:\|[^|\r\n]*){8}\|)([^|\r\n]*)/\${1}\${2}\${3}R$round/g" "$f" \
                > "$work/round$round/$(echo "$f" | tr / _)"
        done
        RELAIS_LOG=warn "$trainee" send --to "$mllp" "$work/round$round" > /dev/null 2>> "$work/send.log" &
        senders+=($!)
    done
    # Some samples are refused on purpose (the ANS corpus reuses one control id): send exits 1 then.
    for sender in "${senders[@]}"; do wait "$sender" || true; done
done
echo "pgo: $(grep -c ' sent' "$work/send.log") rounds sent over MLLP; each: $(grep ' sent' "$work/send.log" | sort -u | paste -sd ';')" >&2
accepted=0
for f in "${cda[@]}"; do
    # One HTTP/1.1 POST by hand: the build image has bash, not necessarily curl.
    exec 3<> "/dev/tcp/127.0.0.1/$http_port"
    printf 'POST /cda HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/xml\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' \
        "$(wc -c < "$f")" >&3
    cat "$f" >&3
    read -r _ code _ <&3 || true
    cat <&3 > /dev/null
    exec 3>&-
    case $code in 2??) accepted=$((accepted + 1)) ;; esac
done
echo "pgo: ${#cda[@]} CDA documents posted, $accepted accepted" >&2
kill -TERM "$server"
if ! wait "$server"; then
    echo "pgo: the instrumented relais serve did not stop cleanly (its counts would be lost):" >&2
    cat "$work/serve.log" >&2
    exit 1
fi
server=

for f in "${hl7[@]}"; do
    for kind in message transaction; do
        "$trainee" convert --as "$kind" "$f" > /dev/null 2>&1 || true
    done
done

if [ -z "$(find "$raw" -name '*.profraw' -size +0)" ]; then
    echo "pgo: the training run left no counts in $raw" >&2
    exit 1
fi
"$profdata" merge -o "$profile" "$raw"
echo "pgo: profile $profile" >&2

use="-Cprofile-use=$profile"
if [ "$mode" = bench ]; then
    echo "pgo: convert benchmark with the profile" >&2
    RUSTFLAGS="$use" cargo bench --profile dist --locked --bench convert --target-dir "$target"
else
    echo "pgo: optimized build" >&2
    RUSTFLAGS="$use" cargo build --profile dist --locked --bin relais --target-dir "$target"
    echo "pgo: $target/dist/relais" >&2
fi
