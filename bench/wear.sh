#!/usr/bin/env bash
# Flash wear at low rates: bytes the daemon writes to disk (write_bytes of /proc/PID/io) per reading
# and per second, one reading per PUSH_DATA, mosquitto up. Loopback only.
#
#   bench/wear.sh                      RATES="10 100" SECS=30 by default; needs mosquitto
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/district-gateway"
D=$(mktemp -d); cd $D
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BP=$(port); GP=$(port)
$BIN simulate --make-devices 1000 --devices devices.toml >/dev/null
printf "listener $BP 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n" > mq.conf
mosquitto -c mq.conf >/dev/null 2>&1 & MP=$!
cat > gw.toml <<T
devices_file = "devices.toml"
[gateway]
id = "low"
data_dir = "$D/data"
log_level = "warn"
[ops]
http_bind = "127.0.0.1:0"
[mqtt]
url = "mqtt://127.0.0.1:$BP"
[[source]]
type = "gwmp"
bind = "127.0.0.1:$GP"
T
$BIN run --config gw.toml >/dev/null 2>&1 & DP=$!
sleep 3
fc=1
for rate in ${RATES:-10 100}; do
  secs=${SECS:-30}
  w0=$(awk '/^write_bytes/{print $2}' /proc/$DP/io)
  $BIN simulate --gwmp 127.0.0.1:$GP --devices devices.toml --rate $rate --seconds $secs --fcnt-start $fc | tail -1 >/dev/null
  sleep 6
  w1=$(awk '/^write_bytes/{print $2}' /proc/$DP/io)
  n=$((rate*secs))
  echo "rate $rate/s: $n readings, $((w1-w0)) bytes written, $(( (w1-w0)/n )) B/reading, $(( (w1-w0)/(secs+6) )) B/s"
  fc=$((fc + rate*secs/1000 + 2))
done
kill $DP $MP; rm -rf $D
