#!/usr/bin/env bash
# City scale on one machine: N district-gateway daemons, each with its own config, data dir, ports and
# its own `simulate` feed, all publishing to ONE mosquitto; one subscriber (mosquitto_sub) plays the
# city's consumer. Measures what each gateway costs (RSS, CPU) and what the broker costs, and writes a
# Markdown report.
#
# Usage:
#   tools/city-scale.sh [-n N] [-r R] [-s S] [options]
#   tools/city-scale.sh N R S [options]          # the same, positionally
#
#   -n, --gateways N     daemons to run (default 20)
#   -r, --rate R         uplinks per second offered to EACH gateway (default 20)
#   -s, --seconds S      length of the load phase in seconds (default 30)
#   -d, --devices D      LoRaWAN devices per gateway (default 50; the same generated keys for every
#                        gateway, each gateway keeps its own sessions and frame counters)
#   -o, --out PATH       where the report goes (default docs/CITY_SCALE.md). If PATH contains the markers
#                        <!-- city-scale:begin --> and <!-- city-scale:end -->, only the part between them
#                        is replaced; an existing file without them gets the section appended; a new file
#                        gets just the section.
#       --bin PATH       the district-gateway binary (default: $DG_BIN, else target/release/district-gateway,
#                        built with `cargo build --release` if missing)
#       --timeout T      hard limit for the whole run in seconds (default S + 120 + 3*N); on expiry
#                        everything is stopped and the script fails
#       --keep           keep the work directory (configs, logs, data) for inspection
#
# Needs: mosquitto and mosquitto_sub (Debian: apt-get install -y mosquitto mosquitto-clients), awk, Linux /proc.
# Everything listens on 127.0.0.1 only. Every process the script starts is stopped when it exits, also on
# Ctrl-C, an error or the timeout.
set -euo pipefail

N=20
RATE=20
SECONDS_LOAD=30
DEVICES=50
OUT=""
BIN="${DG_BIN:-}"
TIMEOUT=""
KEEP=0

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "city-scale: $*" >&2; exit 1; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_num() { [[ "$1" =~ ^[0-9]+([.][0-9]+)?$ ]]; }

positional=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n|--gateways) N="${2:?}"; shift 2 ;;
    -r|--rate) RATE="${2:?}"; shift 2 ;;
    -s|--seconds) SECONDS_LOAD="${2:?}"; shift 2 ;;
    -d|--devices) DEVICES="${2:?}"; shift 2 ;;
    -o|--out) OUT="${2:?}"; shift 2 ;;
    --bin) BIN="${2:?}"; shift 2 ;;
    --timeout) TIMEOUT="${2:?}"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) positional+=("$1"); shift ;;
  esac
done
[[ ${#positional[@]} -ge 1 ]] && N="${positional[0]}"
[[ ${#positional[@]} -ge 2 ]] && RATE="${positional[1]}"
[[ ${#positional[@]} -ge 3 ]] && SECONDS_LOAD="${positional[2]}"
[[ ${#positional[@]} -gt 3 ]] && die "at most three positional arguments: N R S"

is_uint "$N" && [[ "$N" -ge 1 && "$N" -le 500 ]] || die "N must be 1..500, got $N"
is_num "$RATE" || die "R must be a positive number, got $RATE"
is_num "$SECONDS_LOAD" || die "S must be a positive number, got $SECONDS_LOAD"
is_uint "$DEVICES" && [[ "$DEVICES" -ge 1 ]] || die "--devices must be >= 1"
LOAD_S_INT=$(awk -v s="$SECONDS_LOAD" 'BEGIN { printf "%d", s + 0.999 }')
[[ -z "$TIMEOUT" ]] && TIMEOUT=$((LOAD_S_INT + 120 + 3 * N))
is_uint "$TIMEOUT" || die "--timeout must be whole seconds"

REPO="$(cd "$(dirname "$0")/.." && pwd)"
[[ -z "$OUT" ]] && OUT="$REPO/docs/CITY_SCALE.md"
command -v mosquitto >/dev/null || die "mosquitto not found (apt-get install -y mosquitto mosquitto-clients)"
command -v mosquitto_sub >/dev/null || die "mosquitto_sub not found (apt-get install -y mosquitto-clients)"
[[ -r /proc/self/stat ]] || die "needs Linux /proc"
if [[ -z "$BIN" ]]; then
  BIN="$REPO/target/release/district-gateway"
  if [[ ! -x "$BIN" ]]; then
    echo "city-scale: building the release binary" >&2
    (cd "$REPO" && cargo build --release --quiet)
  fi
fi
[[ -x "$BIN" ]] || die "no district-gateway binary at $BIN"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/city-scale.XXXXXX")"
PIDS=()          # every process started here, stopped on exit
WATCHDOG=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n "$WATCHDOG" ]] && kill "$WATCHDOG" 2>/dev/null || true
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 30); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ $alive -eq 0 ]] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ $KEEP -eq 1 ]]; then echo "city-scale: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "city-scale: interrupted" >&2; exit 130' INT
trap 'echo "city-scale: stopped (timeout of ${TIMEOUT} s or SIGTERM)" >&2; exit 124' TERM

# The hard time limit: a watchdog that sends this script SIGTERM.
( trap 'kill "$sp" 2>/dev/null; exit 0' TERM
  sleep "$TIMEOUT" & sp=$!
  wait "$sp" && kill -TERM $$ 2>/dev/null ) </dev/null >/dev/null 2>&1 &
WATCHDOG=$!

now() { date +%s.%N; }
clk_tck=$(getconf CLK_TCK)
# utime + stime of a process in clock ticks (fields 14 and 15 of /proc/PID/stat, counted after the ")").
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# Free ports: ask the kernel through ss when available, else try a random range.
used_ports() { if command -v ss >/dev/null; then ss -Htanu 2>/dev/null | awk '{ n = split($5, a, ":"); print a[n] }'; fi; }
USED="$(used_ports | sort -u | tr '\n' ' ')"
NEXT_PORT=$((20000 + RANDOM % 20000))
take_port() {
  while [[ " $USED " == *" $NEXT_PORT "* ]]; do NEXT_PORT=$((NEXT_PORT + 1)); done
  PORT=$NEXT_PORT
  NEXT_PORT=$((NEXT_PORT + 1))
}

http_get() { # port path -> body on stdout; fails when nothing answers
  local port=$1 path=$2
  exec 9<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&9
  timeout 5 cat <&9 | tr -d '\r' | awk 'body { print } /^$/ { body = 1 }'
  exec 9<&- 9>&-
}
metric() { # port name -> value (first sample, labels ignored); empty when unavailable
  { http_get "$1" /metrics 2>/dev/null || true; } | awk -v m="$2" '$1 == m || index($1, m "{") == 1 { print $2; exit }'
}

echo "city-scale: N=$N gateways, R=$RATE uplinks/s each, S=$SECONDS_LOAD s, $DEVICES devices each; work dir $WORK" >&2

# ---------------------------------------------------------------- broker and the city's subscriber
take_port; MQTT_PORT=$PORT
cat >"$WORK/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 0
log_dest none
user $(id -un)
EOF
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
BROKER_PID=$!; PIDS+=("$BROKER_PID")
for _ in $(seq 1 100); do (exec 8<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null && break; sleep 0.1; done
(exec 8<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null || die "mosquitto did not start: $(cat "$WORK/mosquitto.log")"

# One line per reading: "<topic> <seq>" (the payload's seq, to count distinct readings).
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -q 1 -i city-consumer -t 'city/+/reading/#' -F '%t %p' \
  >"$WORK/sub.raw" 2>"$WORK/sub.err" &
SUB_PID=$!; PIDS+=("$SUB_PID")

# ---------------------------------------------------------------- the gateways
"$BIN" simulate --make-devices "$DEVICES" --devices "$WORK/devices.toml" >/dev/null
GW_IDS=(); GW_PIDS=(); GW_HTTP=(); GW_UDP=()
for i in $(seq 1 "$N"); do
  id=$(printf 'gw-%03d' "$i")
  d="$WORK/$id"; mkdir -p "$d/data"
  take_port; http=$PORT
  take_port; udp=$PORT
  cat >"$d/gateway.toml" <<EOF
devices_file = "../devices.toml"

[gateway]
id = "$id"
data_dir = "$d/data"
log_level = "warn"

[mqtt]
url = "mqtt://127.0.0.1:$MQTT_PORT"
topic_prefix = "city"

[publish]
readings = true
aggregates = true

[ops]
http_bind = "127.0.0.1:$http"

[[source]]
type = "gwmp"
bind = "127.0.0.1:$udp"
EOF
  "$BIN" check-config --config "$d/gateway.toml" >/dev/null || die "config of $id is invalid"
  "$BIN" run --config "$d/gateway.toml" >"$d/daemon.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  GW_IDS+=("$id"); GW_PIDS+=("$pid"); GW_HTTP+=("$http"); GW_UDP+=("$udp")
done

# Up: every daemon alive, /healthz answering and its MQTT link connected.
t_up=$(now)
for i in "${!GW_IDS[@]}"; do
  ok=0
  for _ in $(seq 1 300); do
    kill -0 "${GW_PIDS[$i]}" 2>/dev/null || die "${GW_IDS[$i]} exited: $(tail -5 "$WORK/${GW_IDS[$i]}/daemon.log")"
    if [[ "$(metric "${GW_HTTP[$i]}" district_gateway_mqtt_connected)" == "1" ]]; then ok=1; break; fi
    sleep 0.1
  done
  [[ $ok -eq 1 ]] || die "${GW_IDS[$i]} did not connect to the broker: $(tail -5 "$WORK/${GW_IDS[$i]}/daemon.log")"
done
echo "city-scale: $N gateways up and connected in $(awk -v a="$t_up" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}') s" >&2
sleep 1

# ---------------------------------------------------------------- idle figures, then the load
IDLE_S=5
idle_ticks=0
for i in "${!GW_IDS[@]}"; do idle_ticks=$((idle_ticks - $(cpu_ticks "${GW_PIDS[$i]}"))); done
broker_idle_ticks=$((0 - $(cpu_ticks "$BROKER_PID")))
ti=$(now); sleep "$IDLE_S"
idle_rss=(); ticks0=()
for i in "${!GW_IDS[@]}"; do idle_rss+=("$(status_kib "${GW_PIDS[$i]}" VmRSS)"); ticks0+=("$(cpu_ticks "${GW_PIDS[$i]}")"); done
broker_ticks0=$(cpu_ticks "$BROKER_PID"); broker_rss0=$(status_kib "$BROKER_PID" VmRSS)
idle_wall=$(awk -v a="$ti" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
for t in "${ticks0[@]}"; do idle_ticks=$((idle_ticks + t)); done
broker_idle_ticks=$((broker_idle_ticks + broker_ticks0))
# Idle CPU of one gateway, in % of a core (timers, the control loops, MQTT keep-alive).
gw_idle_pct=$(awk -v t="$idle_ticks" -v k="$clk_tck" -v n="$N" -v w="$idle_wall" 'BEGIN { printf "%.2f", 100 * t / k / n / w }')
broker_idle_pct=$(awk -v t="$broker_idle_ticks" -v k="$clk_tck" -v w="$idle_wall" 'BEGIN { printf "%.2f", 100 * t / k / w }')
sub_ticks0=$(cpu_ticks "$SUB_PID")
sub_before=$(wc -l <"$WORK/sub.raw")

t0=$(now)
SIM_PIDS=()
for i in "${!GW_IDS[@]}"; do
  "$BIN" simulate --gwmp "127.0.0.1:${GW_UDP[$i]}" --devices "$WORK/devices.toml" \
    --rate "$RATE" --seconds "$SECONDS_LOAD" >"$WORK/${GW_IDS[$i]}/simulate.out" 2>&1 &
  SIM_PIDS+=("$!"); PIDS+=("$!")
done
sim_ticks=0
# Sample the simulators' CPU while they run (they exit at the end, taking their counters with them).
declare -A sim_last
while :; do
  running=0
  for p in "${SIM_PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then running=1; t=$(cpu_ticks "$p"); [[ "$t" -gt 0 ]] && sim_last[$p]=$t; fi
  done
  [[ $running -eq 0 ]] && break
  sleep 0.2
done
for p in "${SIM_PIDS[@]}"; do wait "$p" || echo "city-scale: a simulate feed failed (pid $p)" >&2; sim_ticks=$((sim_ticks + ${sim_last[$p]:-0})); done
t_sent=$(now)

# Acknowledged (= journaled on the gateway's flash) per gateway, from simulate's summary line.
acked_total=0; sent_total=0; p99_max=0; p50s=()
declare -A ACKED
for i in "${!GW_IDS[@]}"; do
  line=$(grep -E '^sent [0-9]+ uplinks' "$WORK/${GW_IDS[$i]}/simulate.out" || true)
  sent=$(awk '{print $2}' <<<"$line"); acked=$(awk '{ for (i = 1; i <= NF; i++) if ($i == "acknowledged") print $(i-1) }' <<<"$line")
  p50=$(sed -nE 's/.*p50 ([0-9.]+) ms.*/\1/p' <<<"$line"); p99=$(sed -nE 's/.*p99 ([0-9.]+) ms.*/\1/p' <<<"$line")
  sent=${sent:-0}; acked=${acked:-0}
  ACKED[${GW_IDS[$i]}]=$acked
  sent_total=$((sent_total + sent)); acked_total=$((acked_total + acked))
  p50s+=("${p50:-0}")
  p99_max=$(awk -v a="$p99_max" -v b="${p99:-0}" 'BEGIN { print (b > a ? b : a) }')
done

# Drain: until the subscriber has every acknowledged reading (distinct per gateway and seq), or 60 s.
distinct() { awk 'NR > skip { split($1, t, "/"); if (match($0, /"seq":[0-9]+/)) print t[2], substr($0, RSTART + 6, RLENGTH - 6) }' \
  skip="$sub_before" "$WORK/sub.raw" | sort -u | wc -l; }
last_got=-1; still=0
for _ in $(seq 1 240); do
  got=$(distinct)
  [[ "$got" -ge "$acked_total" ]] && break
  # Nothing new for 5 s and every backlog empty: what is missing is not coming.
  if [[ "$got" -eq "$last_got" ]]; then still=$((still + 1)); else still=0; last_got=$got; fi
  if [[ $still -ge 20 ]]; then
    backlog=0
    for i in "${!GW_IDS[@]}"; do b=$(metric "${GW_HTTP[$i]}" district_gateway_backlog_records); backlog=$((backlog + ${b:-0})); done
    [[ "$backlog" -eq 0 ]] && break
  fi
  sleep 0.25
done
t1=$(now)
sleep 0.3
got=$(distinct)
total_msgs=$(( $(wc -l <"$WORK/sub.raw") - sub_before ))

# ---------------------------------------------------------------- figures
wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
load_wall=$(awk -v a="$t0" -v b="$t_sent" 'BEGIN { printf "%.2f", b - a }')
rows=""
sum_cpu=0; sum_rss=0; max_rss=0; sum_idle=0
for i in "${!GW_IDS[@]}"; do
  id=${GW_IDS[$i]}; pid=${GW_PIDS[$i]}
  kill -0 "$pid" 2>/dev/null || die "$id died during the run: $(tail -5 "$WORK/$id/daemon.log")"
  t=$(( $(cpu_ticks "$pid") - ${ticks0[$i]} ))
  cpu_s=$(awk -v t="$t" -v k="$clk_tck" 'BEGIN { printf "%.2f", t / k }')
  rss=$(status_kib "$pid" VmRSS); hwm=$(status_kib "$pid" VmHWM)
  recv=$(awk 'NR > skip { split($1, t, "/"); if (t[2] == id && match($0, /"seq":[0-9]+/)) print substr($0, RSTART + 6, RLENGTH - 6) }' \
    skip="$sub_before" id="$id" "$WORK/sub.raw" | sort -u | wc -l)
  pub=$(metric "${GW_HTTP[$i]}" district_gateway_records_published_total); pub=${pub:-?}
  disk=$(du -sk "$WORK/$id/data" | awk '{print $1}')
  sum_cpu=$(awk -v a="$sum_cpu" -v b="$cpu_s" 'BEGIN { print a + b }')
  sum_rss=$((sum_rss + rss)); sum_idle=$((sum_idle + ${idle_rss[$i]}))
  [[ $hwm -gt $max_rss ]] && max_rss=$hwm
  if [[ $i -lt 10 || $i -eq $((N - 1)) ]]; then
    rows+="| $id | ${ACKED[$id]} | $recv | $pub | $(awk -v c="$cpu_s" -v w="$wall" 'BEGIN { printf "%.1f", 100 * c / w }') | $cpu_s | $((${idle_rss[$i]} / 1024)) | $((rss / 1024)) | $((hwm / 1024)) | $(awk -v k="$disk" 'BEGIN { printf "%.1f", k / 1024 }') |"$'\n'
  elif [[ $i -eq 10 ]]; then
    rows+="| … | | | | | | | | | |"$'\n'
  fi
done
broker_t=$(( $(cpu_ticks "$BROKER_PID") - broker_ticks0 ))
broker_cpu_s=$(awk -v t="$broker_t" -v k="$clk_tck" 'BEGIN { printf "%.2f", t / k }')
broker_rss=$(status_kib "$BROKER_PID" VmRSS); broker_hwm=$(status_kib "$BROKER_PID" VmHWM)
sub_cpu_s=$(awk -v t="$(( $(cpu_ticks "$SUB_PID") - sub_ticks0 ))" -v k="$clk_tck" 'BEGIN { printf "%.2f", t / k }')
sim_cpu_s=$(awk -v t="$sim_ticks" -v k="$clk_tck" 'BEGIN { printf "%.2f", t / k }')

# Per-message costs. Messages through the broker: every reading and aggregate in (N publishers) and every
# reading out to the consumer; we count the readings the consumer received.
fig() { awk "BEGIN { $1 }"; }
offered=$(fig "printf \"%.0f\", $N * $RATE")
throughput=$(fig "printf \"%.0f\", $got / ($wall > 0 ? $wall : 1)")
gw_cpu_mean=$(fig "printf \"%.2f\", $sum_cpu / $N")
gw_pct_mean=$(fig "printf \"%.1f\", 100 * $sum_cpu / $N / $wall")
gw_ms_per_reading=$(fig "printf \"%.3f\", ($got > 0 ? 1000 * $sum_cpu / $got : 0)")
# The marginal cost: CPU above the idle baseline, per reading.
gw_marginal_ms=$(fig "x = $sum_cpu - $N * $gw_idle_pct / 100 * $wall; if (x < 0) x = 0; printf \"%.3f\", ($got > 0 ? 1000 * x / $got : 0)")
broker_pct=$(fig "printf \"%.1f\", 100 * $broker_cpu_s / $wall")
broker_ms_per_reading=$(fig "printf \"%.3f\", ($got > 0 ? 1000 * $broker_cpu_s / $got : 0)")
gw_capacity=$(fig "printf \"%.0f\", ($gw_marginal_ms > 0 ? 1000 / $gw_marginal_ms : 0)")
broker_capacity=$(fig "printf \"%.0f\", ($broker_ms_per_reading > 0 ? 1000 / $broker_ms_per_reading : 0)")
lost=$((acked_total > got ? acked_total - got : 0))
dups=$((total_msgs - got))

host_cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo "?")
mosq_version=$({ mosquitto -h 2>&1 || true; } | awk 'NR == 1 { print $3 }')
dg_version=$({ "$BIN" --version 2>/dev/null || true; } | head -1)

section=$(cat <<EOF
<!-- city-scale:begin -->
### Run of $(date -u +%Y-%m-%dT%H:%M:%SZ): N=$N gateways × R=$RATE uplinks/s × S=$SECONDS_LOAD s

\`tools/city-scale.sh -n $N -r $RATE -s $SECONDS_LOAD -d $DEVICES\` on $(nproc) CPU cores ($host_cpu),
$(uname -sr), mosquitto $mosq_version, $dg_version. One mosquitto, one consumer (\`mosquitto_sub\`, QoS 1,
\`city/+/reading/#\`), every process on the same machine (the load generators too).

| figure | value |
|---|---|
| offered load | $offered uplinks/s ($N × $RATE) |
| uplinks sent / acknowledged (PUSH_ACK = on the gateway's flash) | $sent_total / $acked_total |
| distinct readings at the consumer / lost / duplicates | $got / $lost / $dups |
| wall time (first uplink → last reading at the consumer) | $wall s (load phase $load_wall s) |
| end-to-end throughput | $throughput readings/s |
| PUSH_ACK latency p50 (gateway 1) / worst p99 over all gateways | ${p50s[0]} ms / $p99_max ms |
| gateway RSS: idle, mean / after load, mean / peak, max | $((sum_idle / N / 1024)) MiB / $((sum_rss / N / 1024)) MiB / $((max_rss / 1024)) MiB |
| gateway CPU at idle (mean, ${IDLE_S} s before the load) | $gw_idle_pct % of one core |
| gateway CPU under load: mean per gateway | $gw_cpu_mean s = $gw_pct_mean % of one core |
| gateway CPU per reading: total / above idle | $gw_ms_per_reading ms / $gw_marginal_ms ms → ≈ $gw_capacity readings/s per core |
| broker (mosquitto) CPU: idle / under load | $broker_idle_pct % / $broker_pct % of one core ($broker_cpu_s s) |
| broker CPU per reading (in + out to one consumer) | $broker_ms_per_reading ms → ≈ $broker_capacity readings/s per core |
| broker RSS after load / peak | $((broker_rss / 1024)) MiB / $((broker_hwm / 1024)) MiB (idle $((broker_rss0 / 1024)) MiB) |
| consumer (mosquitto_sub) CPU / load generators (simulate) CPU | $sub_cpu_s s / $sim_cpu_s s |

Per gateway (the first 10 and the last; CPU over the wall time above):

| gateway | acked | received | published (metric) | CPU % | CPU s | RSS idle MiB | RSS after MiB | RSS peak MiB | data dir MiB |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$rows<!-- city-scale:end -->
EOF
)

mkdir -p "$(dirname "$OUT")"
if [[ -f "$OUT" ]] && grep -q '<!-- city-scale:begin -->' "$OUT" && grep -q '<!-- city-scale:end -->' "$OUT"; then
  SEC="$section" awk '
    /<!-- city-scale:begin -->/ { print ENVIRON["SEC"]; skip = 1; next }
    /<!-- city-scale:end -->/ { skip = 0; next }
    !skip { print }' "$OUT" >"$OUT.tmp" && mv "$OUT.tmp" "$OUT"
elif [[ -f "$OUT" ]]; then
  printf '\n%s\n' "$section" >>"$OUT"
else
  printf '%s\n' "$section" >"$OUT"
fi
printf '%s\n' "$section"
echo "city-scale: report written to $OUT" >&2
[[ $lost -eq 0 ]] || die "$lost acknowledged readings did not reach the consumer"
