#!/usr/bin/env bash
# A quick, single-purpose drain probe (the full harness is `cargo bench --bench e2e`): builds an
# N-reading backlog in a real daemon with its broker down, starts mosquitto, and reports the drain
# rate (first PUBACK to last, from the daemon's metrics) and the CPU the daemon and mosquitto used.
#
#   bench/drain.sh [N]            N defaults to 300000; needs mosquitto (and mosquitto_sub with SUB=1)
#   SUB=1 bench/drain.sh          with a QoS 1 mosquitto_sub subscribed to everything
#   PERF=1 bench/drain.sh         also records the daemon with `perf record -g` (perf.data in the work dir)
#
# Used for the drain profiling and the Nagle A/B in docs/BENCHMARKS.md. Loopback only; every process
# it starts is killed at the end.
set -euo pipefail
N=${1:-300000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/district-gateway"
D=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; sleep 0.3; rm -rf "$D"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BP=$(port); HP=$(port); GP=$(port)
cd "$D"
"$BIN" simulate --make-devices 1000 --devices devices.toml >/dev/null
cat > gw.toml <<T
devices_file = "devices.toml"
[gateway]
id = "drain-probe"
data_dir = "$D/data"
log_level = "warn"
[ops]
http_bind = "127.0.0.1:$HP"
[mqtt]
url = "mqtt://127.0.0.1:$BP"
reconnect_min_ms = 200
reconnect_max_ms = 500
[buffer]
max_bytes = 1073741824
replay_rate = 1000000
[[source]]
type = "gwmp"
bind = "127.0.0.1:$GP"
T
"$BIN" run --config gw.toml >daemon.log 2>&1 &
DPID=$!; PIDS+=($DPID)
sleep 2
SECS=$(python3 -c "print(max(1.0, $N / 8000))")
"$BIN" simulate --gwmp "127.0.0.1:$GP" --devices devices.toml --rate 8000 --seconds "$SECS" --fcnt-start 1 | tail -1
sleep 2
printf "listener $BP 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\nmax_queued_messages 0\n" > mq.conf
if [ -n "${PERF:-}" ]; then perf record -F 1999 -g -o "$ROOT/target/drain-perf.data" -p $DPID 2>/dev/null & PIDS+=($!); fi
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
C0=$(cpu $DPID)
mosquitto -c mq.conf >/dev/null 2>&1 &
MPID=$!; PIDS+=($MPID)
if [ -n "${SUB:-}" ]; then sleep 0.2; mosquitto_sub -p "$BP" -q 1 -t "city/#" >/dev/null 2>&1 </dev/null & PIDS+=($!); fi
HP=$HP python3 - <<'PY'
import os, time, urllib.request
url = f"http://127.0.0.1:{os.environ['HP']}/metrics"
def published():
    for l in urllib.request.urlopen(url).read().decode().splitlines():
        if l.startswith("district_gateway_records_published_total"):
            return float(l.split()[-1])
    return 0.0
t0 = p0 = None; last = -1.0; last_t = time.time()
while True:
    p, now = published(), time.time()
    if p > 0 and t0 is None:
        t0, p0 = now, p
    if p != last:
        last, last_t = p, now
    if now - last_t > 2:
        break
    time.sleep(0.05)
secs = last_t - t0 if t0 else float("nan")
print(f"drained {last:.0f} records; {(last - p0) / secs:.0f} msg/s first PUBACK to last ({secs:.2f} s)")
PY
TCK=$(getconf CLK_TCK)
echo "CPU during the drain: daemon $(python3 -c "print(($(cpu $DPID) - $C0) / $TCK)") s, mosquitto $(python3 -c "print($(cpu $MPID) / $TCK)") s"
