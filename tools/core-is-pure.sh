#!/usr/bin/env bash
# The core crate (crates/core) is pure: no async runtime, no store, no MQTT, no GPIO/SPI, no serial
# ports, no system calls beyond std, and no clock. This checks what the compiler can be asked:
#  1. its dependency tree (normal and build dependencies) has none of the I/O crates;
#  2. it builds on its own, where chrono has no `clock` feature: `Utc::now()` does not compile there.
# Run by .ci/run; exits non-zero and names the offender.
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(tokio|tokio-serial|mio|sled|rumqttc|rumqttd|rppal|nix|serialport|socket2|hyper|tracing-journald) '
tree=$(cargo tree -p district-core -e normal,build --prefix none --no-dedupe | sort -u)
if bad=$(grep -E "$forbidden" <<<"$tree"); then
    echo "core-is-pure: district-core depends on I/O crates:" >&2
    echo "$bad" >&2
    cargo tree -p district-core -e normal,build -i "$(head -n1 <<<"$bad" | cut -d' ' -f1)" >&2 || true
    exit 1
fi
if cargo tree -p district-core -e features -i chrono 2>/dev/null | grep -q 'chrono feature "clock"'; then
    echo "core-is-pure: chrono's clock feature is enabled in district-core's tree (Utc::now would compile)" >&2
    exit 1
fi
cargo check -q -p district-core --lib
echo "core-is-pure: district-core's tree has none of the I/O crates and no clock ($(wc -l <<<"$tree") crates)"
