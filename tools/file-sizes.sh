#!/usr/bin/env bash
# No Rust file over 1,000 lines (ARCHITECTURE.md: small modules whose names say what they do; long
# unit tests go in sibling files). Run by .ci/run; lists the offenders and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
max=${MAX_LINES:-1000}
bad=$(git ls-files '*.rs' | xargs wc -l | awk -v max="$max" '$2 != "total" && $1 > max {print}')
if [ -n "$bad" ]; then
    echo "file-sizes: Rust files over $max lines:" >&2
    echo "$bad" >&2
    exit 1
fi
echo "file-sizes: every Rust file has at most $max lines"
