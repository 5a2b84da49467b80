#!/usr/bin/env bash
# Checks issue 15's rule on this machine: every test that needs an outside tool FAILS under CI=1 when
# the tool is absent (PATH emptied: no chromium, python3, mount, openleadr-vtn), and skips (passes, printing SKIPPED)
# without CI. Usage: bash tests/no_skip_check.sh   (builds the test binaries it needs, release profile)
set -euo pipefail
cd "$(dirname "$0")/.."

# test target : test name filter (exact); `lib=CRATE` is that crate's unit tests (the workspace has two)
cases=(
  "status_page:status_page_in_headless_chromium"
  "durability:a_full_disk_applies_the_policy_counts_exactly_and_recovers"
  "ops_e2e:commands::signed_commands_are_checked_and_every_refusal_changes_nothing"
  "lib=district_core:commands::tests::sign_command_script_when_available"
  "lib=district_core:lorawan::multicast::tests::frame_verifies_with_an_independent_implementation"
  "openadr_e2e:vtn_harness_business_logic_creates_a_program_and_an_event_a_ven_sees"
  "openadr_e2e:gateway::the_gateway_follows_a_real_vtn"
)
targets=()
for c in "${cases[@]}"; do
  t=${c%%:*}
  case "$t" in
    lib=*) [[ " ${targets[*]-} " == *" --lib "* ]] || targets+=(--lib) ;; # once, however many lib cases
    *) targets+=(--test "$t") ;;
  esac
done
exe() { # the test executable of target $1
  cargo test --release --no-run "${targets[@]}" --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
want = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        t = m["target"]
        lib = want.startswith("lib=") and "lib" in t["kind"] and t["name"] == want[len("lib="):]
        if lib or (t["name"] == want and "test" in t["kind"]):
            print(m["executable"])
' "$1"
}
cargo test --release --no-run "${targets[@]}" >/dev/null 2>&1
empty=$(mktemp -d)
fail=0
for c in "${cases[@]}"; do
  t=${c%%:*} name=${c#*:}
  bin=$(exe "$t")
  # CI=1, tools absent: must fail, naming what to install.
  if out=$(env -i HOME="$HOME" PATH="$empty" CI=1 "$bin" --exact "$name" 2>&1); then
    echo "BAD  $name: passed under CI=1 without its tools"; fail=1
  elif grep -q "CI is set, so the test fails instead of skipping" <<<"$out"; then
    echo "ok   $name: fails under CI=1 without its tools:"; grep "CI is set" <<<"$out" | head -1 | sed "s/^/       /"
  else
    echo "BAD  $name: failed under CI=1, but not with the missing-tool message:"; echo "$out" | tail -20; fail=1
  fi
  # No CI, tools absent: skips (passes, printing SKIPPED).
  if out=$(env -i HOME="$HOME" PATH="$empty" "$bin" --exact "$name" --nocapture 2>&1) && grep -q SKIPPED <<<"$out"; then
    echo "ok   $name: skips without CI"
  else
    echo "BAD  $name: without CI it should print SKIPPED and pass:"; echo "$out" | tail -20; fail=1
  fi
done
rmdir "$empty"
exit $fail
