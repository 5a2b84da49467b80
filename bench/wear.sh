#!/usr/bin/env bash
# Flash wear: bytes the daemon writes to disk (write_bytes of /proc/PID/io: every page the process
# dirties, counted once each time it goes from clean to dirty) per reading and per second, one
# reading per PUSH_DATA as real concentrators send them, mosquitto up, the shipped defaults otherwise.
# Rate 0 is an idle gateway (nothing heard). Loopback only.
#
#   SECS=300 SETTLE=12 bench/wear.sh      MODES="interval commit" RATES="0 1 10 100 1000" SECS=30
#   MODES=interval RATES="0 1" SECS=60 bench/wear.sh
#
# Steady state: DevStatusReq (default once a day per device) and ADR (a LinkADRReq or two per device
# until it has converged) are off (DEV_STATUS_S=86400 ADR=true to measure them): each is a downlink,
# fsynced at once in every mode; after the warm-up (1,000 devices in 4 s) most of them still wait
# for the duty cycle, so the next rows would carry a downlink with almost every reading (a fsync
# each, as in commit mode) instead of the steady state.
#
# Prints one markdown table row per mode and rate. Each mode gets a fresh daemon and data dir. Not
# counted: the first 3 s (opening the store), a warm-up with one uplink per device and the first
# 5-minute save of the control loops' state (SKIP_FIRST_SAVE=0 to skip the wait). Use SECS=300 for rows that each carry one such
# save (of the devices heard in that row). After each rate the daemon gets SETTLE seconds (default
# 7; use the sync window + 2 s) to fsync and log the broker's acknowledgements, which are counted
# (B/s is over SECS + SETTLE). Readings counted are the acknowledged ones.
#
# FS=ext4 (root, loop devices): the data dir lives on a fresh ext4 file system on a loop device, and a
# second figure counts what reached that device (sectors written in /sys/block/loopN/stat): the
# file system's journal and metadata included, which is what an SD card receives.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
  BIN="$ROOT/target/release/district-gateway"
fi
command -v mosquitto >/dev/null || { echo "wear.sh needs mosquitto (apt-get install -y mosquitto)" >&2; exit 1; }
D=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BP=$(port)
$BIN simulate --make-devices 1000 --devices "$D/devices.toml" >/dev/null
printf "listener $BP 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n" > "$D/mq.conf"
mosquitto -c "$D/mq.conf" >/dev/null 2>&1 & MP=$!
DP=
LOOP=
DATA="$D/data"
cleanup() {
  [ -n "$DP" ] && kill "$DP" 2>/dev/null; kill $MP 2>/dev/null
  if [ -n "$LOOP" ]; then umount "$D/mnt" 2>/dev/null; losetup -d "$LOOP" 2>/dev/null; fi
  rm -rf "$D"
}
trap cleanup EXIT
dev_written() { [ -n "$LOOP" ] && awk '{print $7*512}' "/sys/block/$(basename "$LOOP")/stat" || echo 0; }
if [ "${FS:-}" = ext4 ]; then
  # No lazy init: its background writes would be counted.
  truncate -s 1G "$D/fs.img"
  mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 "$D/fs.img"
  LOOP=$(losetup -f --show "$D/fs.img")
  mkdir -p "$D/mnt"
  mount -o noatime "$LOOP" "$D/mnt"
  DATA="$D/mnt/data"
  echo "| durability | readings/s | readings | bytes written | B/reading | B/s | MB/day | device B/s |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
else
  echo "| durability | readings/s | readings | bytes written | B/reading | B/s | MB/day |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
fi
for mode in ${MODES:-interval commit}; do
  GP=$(port)
  rm -rf "$DATA"
  cat > "$D/gw.toml" <<T
devices_file = "$D/devices.toml"
[gateway]
id = "wear"
data_dir = "$DATA"
log_level = "warn"
[ops]
http_bind = "127.0.0.1:0"
[mqtt]
url = "mqtt://127.0.0.1:$BP"
[buffer]
durability = "$mode"
[lorawan]
dev_status_interval_s = ${DEV_STATUS_S:-0}
[lorawan.adr]
enabled = ${ADR:-false}
[[source]]
type = "gwmp"
bind = "127.0.0.1:$GP"
T
  $BIN run --config "$D/gw.toml" >/dev/null 2>&1 & DP=$!
  sleep 3
  # Warm-up, not counted: one uplink per device, so that each device's session, counters and loops
  # parts have been written once, as in a district running for a while.
  $BIN simulate --gwmp 127.0.0.1:$GP --devices "$D/devices.toml" --rate 250 --seconds 4 --fcnt-start 1 >/dev/null
  sleep ${SETTLE:-7}
  # The control loops' state is saved about every 5 minutes (the parts that changed; at the first
  # closing of aggregate windows from 285 s after the last save on, else at 315 s): wait for the first
  # save, so that it lands in no row; with SECS=300 each row then carries one save of its own.
  if [ "${SKIP_FIRST_SAVE:-1}" = 1 ]; then sleep $(( 320 - 3 - 4 - ${SETTLE:-7} )); fi
  fc=3
  settle=${SETTLE:-7}
  for rate in ${RATES:-0 1 10 100 1000}; do
    secs=${SECS:-30}
    w0=$(awk '/^write_bytes/{print $2}' /proc/$DP/io); sync; d0=$(dev_written)
    if [ "$rate" = 0 ]; then
      sleep "$secs"
      settle=0
    else
      # Count what was acknowledged (accepted), not what was offered.
      sent=$($BIN simulate --gwmp 127.0.0.1:$GP --devices "$D/devices.toml" --rate $rate --seconds $secs --fcnt-start $fc | tail -1)
      settle=${SETTLE:-7}
      sleep "$settle"
    fi
    w1=$(awk '/^write_bytes/{print $2}' /proc/$DP/io); sync; d1=$(dev_written)
    n=0; [ "$rate" != 0 ] && n=$(echo "$sent" | sed -n 's/.*; \([0-9]*\) acknowledged.*/\1/p')
    w=$((w1-w0)); bps=$(( w/(secs+settle) ))
    per=$([ $n -gt 0 ] && echo $((w/n)) || echo "–")
    row="| $mode | $rate | $n | $w | $per | $bps | $(python3 -c "print(f'{$bps*86400/1e6:.1f}')") |"
    [ -n "$LOOP" ] && row="$row $(( (d1-d0)/(secs+settle) )) |"
    echo "$row"
    fc=$((fc + rate*secs/1000 + 2))
  done
  kill $DP; wait $DP 2>/dev/null || true; DP=
done
