#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) on the nightly toolchain; a crash fails the script.
# Crashes found are kept under fuzz/artifacts/<target>/; each one becomes a regression test in
# tests/fuzz_regressions.rs (the inputs are copied to tests/data/fuzz/).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${1:-60}"
for t in gwmp_packet phy_payload mac_commands sml_stream wmbus_telegram openadr_event; do
  echo "== fuzz $t for ${SECONDS_PER_TARGET}s"
  # Structured inputs (JSON) start from the seeds in fuzz/seeds/<target>/, if there are any.
  if [ -d "seeds/$t" ]; then mkdir -p "corpus/$t" && cp -n "seeds/$t"/* "corpus/$t"/; fi
  cargo +nightly fuzz run "$t" -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -max_len=1024
done
