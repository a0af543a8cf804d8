#!/usr/bin/env bash
# `make bench-fleet`: simulated enforcers (`palisade-bench fleet`) against
# the policy service, every part started here:
#   1. ENFORCERS (10,000) against two `palisade serve` replicas sharing
#      PostgreSQL, for SECONDS (600): heartbeats, events at EVENTS/s, a push
#      every 90 s through alternating replicas, 100 enforcers falling silent;
#   2. the same fleet against one replica on SQLite, for SQLITE_SECONDS;
#   3. HEAVY (30,000) against the two replicas, for HEAVY_SECONDS.
# Connections go to a replica at random, as a Service spreads them.
# Memory and CPU of each replica are sampled every 5 s from /proc.
# `--update FILE` replaces the "Fleet" section of FILE (bench/RESULTS.md).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BIN="${PALISADE_BENCH_BIN:-target/release}"
ENFORCERS="${BENCH_FLEET_ENFORCERS:-10000}"
SECONDS_RUN="${BENCH_FLEET_SECONDS:-600}"
SQLITE_SECONDS="${BENCH_FLEET_SQLITE_SECONDS:-120}"
HEAVY="${BENCH_FLEET_HEAVY:-30000}"
HEAVY_SECONDS="${BENCH_FLEET_HEAVY_SECONDS:-120}"
EVENTS="${BENCH_FLEET_EVENTS:-2000}"
# Simulated enforcers per process: each holds up to two connections, and a
# process may open 20,000 files on these machines.
PER_PROCESS="${BENCH_FLEET_PER_PROCESS:-4000}"
RAMP="${BENCH_FLEET_RAMP:-30}"
TOKEN="fleet-token-0123456789abcdef0123456789"
if [[ "${1:-}" == --update && -z "${2:-}" ]]; then
  echo "usage: $0 [--update RESULTS.md]" >&2; exit 2
fi
if [[ -z "${PALISADE_TEST_POSTGRES_URL:-}" ]]; then
  if [[ -z "${PALISADE_BENCH_BIN:-}" ]]; then
    cargo build --release -p palisade -p palisade-bench
  fi
  PALISADE_REQUIRE_POSTGRES=1 exec bash tests/with-postgres.sh bash "$0" "$@"
fi
W="$(mktemp -d /tmp/palisade-fleet.XXXXXX)"
ulimit -n "$(ulimit -Hn)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
PG="$PALISADE_TEST_POSTGRES_URL"

# replica NAME PORT DATABASE_URL: started in the background; its pid in $W/NAME.pid.
replica() {
  local name="$1" port="$2" db="$3" tls
  if [[ -f "$W/tls/tls.crt" ]]; then
    tls=(PALISADE_TLS__CERT_FILE="$W/tls/tls.crt" PALISADE_TLS__KEY_FILE="$W/tls/tls.key")
  else
    tls=(PALISADE_TLS__SELF_SIGNED_DIR="$W/tls")
  fi
  mkdir -p "$W/$name-data"
  env "${tls[@]}" PALISADE_LISTEN="127.0.0.1:$port" PALISADE_SERVICE__DATA_DIR="$W/$name-data" \
    PALISADE_SERVICE__DATABASE_URL="$db" PALISADE_SERVICE__ADMIN_TOKENS="$TOKEN" \
    PALISADE_SERVICE__REPORT_TOKENS="$TOKEN" PALISADE_POLICIES__DIR="$ROOT/policies" \
    PALISADE_LOG__LEVEL=warn "$BIN/palisade" serve >"$W/$name.log" 2>&1 &
  PIDS+=($!)
  echo $! >"$W/$name.pid"
  for _ in $(seq 100); do
    curl -fsS --cacert "$W/tls/ca.crt" "https://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$W/$name.log"; return 1
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
metric() { # port name: the value of an unlabelled metric (0 when unreadable)
  { curl -fsS --max-time 5 --cacert "$W/tls/ca.crt" "https://127.0.0.1:$1/metrics" 2>/dev/null || true; } |
    awk -v m="$2" '$1 == m {v = $2} END {print v + 0}'
}
# busy PORT: requests the replica answered 429
busy() {
  { curl -fsS --max-time 5 --cacert "$W/tls/ca.crt" "https://127.0.0.1:$1/metrics" 2>/dev/null || true; } |
    awk '/^palisade_busy_replies_total/ {s += $2} END {print s + 0}'
}

# sample LABEL SECONDS PID PORT [PID PORT]: peak RSS, mean CPU, peak connections
# of each replica every 5 s for SECONDS; one line per replica into $W/LABEL.samples.
sample() {
  local label="$1" secs="$2"; shift 2
  local -a pids=() ports=() peak=() conns=() t0=()
  while (($#)); do pids+=("$1"); ports+=("$2"); shift 2; done
  local i n=${#pids[@]} start end
  for ((i = 0; i < n; i++)); do peak[i]=0 conns[i]=0 t0[i]=$(cpu_ticks "${pids[i]}"); done
  start=$(date +%s)
  end=$((start + secs))
  while (($(date +%s) < end)); do
    for ((i = 0; i < n; i++)); do
      local r c
      r=$(rss_kib "${pids[i]}"); c=$(metric "${ports[i]}" palisade_connections_open)
      ((r > peak[i])) && peak[i]=$r
      ((${c%.*} > conns[i])) && conns[i]=${c%.*}
    done
    sleep 5
  done
  local hz elapsed
  hz=$(getconf CLK_TCK); elapsed=$(($(date +%s) - start))
  for ((i = 0; i < n; i++)); do
    local alive=1
    kill -0 "${pids[i]}" 2>/dev/null || alive=0
    echo "${peak[i]} $(awk -v a="$(cpu_ticks "${pids[i]}")" -v b="${t0[i]}" -v hz="$hz" -v s="$elapsed" 'BEGIN{printf "%.0f", (a - b) / hz / s * 100}') ${conns[i]} $alive"
  done >"$W/$label.samples"
}

# fleet LABEL N SECONDS SILENCE EXTRA-ARGS...: N enforcers in processes of
# PER_PROCESS, started together; process 0 pushes and silences SILENCE of its
# enforcers. Output: $W/LABEL.json (one line per process) and $W/LABEL.lat
# (push arrivals).
fleet() {
  local label="$1" n="$2" secs="$3" silence="$4"; shift 4
  local procs=$(((n + PER_PROCESS - 1) / PER_PROCESS)) start p each rate
  start=$(($(date +%s%3N) + 3000))
  : >"$W/$label.json"
  local -a sims=()
  for ((p = 0; p < procs; p++)); do
    each=$((n / procs + (p < n % procs ? 1 : 0)))
    rate=$(awk -v e="$EVENTS" -v a="$each" -v n="$n" 'BEGIN{printf "%.3f", e * a / n}')
    local extra=()
    if ((p == 0)); then
      extra=(--pusher)
      ((silence > 0)) && extra+=(--silence "$silence" --silence-at "$SILENCE_AT")
    fi
    "$BIN/palisade-bench" fleet --ca "$W/tls/ca.crt" --token "$TOKEN" --enforcers "$each" --process "$p" \
      --events-per-sec "$rate" --seconds "$secs" --start-unix-ms "$start" --ramp-secs "$RAMP" \
      --latencies "$W/$label.lat.$p" "${extra[@]}" "$@" >>"$W/$label.json" 2>"$W/$label.err.$p" &
    sims+=($!)
  done
  echo "${sims[@]}" >"$W/$label.sims"
}
fleet_wait() { # LABEL
  local s sims
  read -r -a sims <"$W/$1.sims"
  for s in "${sims[@]}"; do wait "$s" || { cat "$W/$1".err.*; return 1; }; done
  cat "$W/$1".lat.* >"$W/$1.lat" 2>/dev/null || : >"$W/$1.lat"
}
sum() { jq -s "map(.$2 // 0) | add" "$W/$1.json"; }
# pct LABEL P: the P-th percentile (0-100) of push arrival times (ms), all pushes.
pct() { sort -n -k2 "$W/$1.lat" | awk -v p="$2" '{v[NR] = $2} END {if (NR == 0) {print "n/a"; exit} i = int(NR * p / 100 + 0.999); if (i < 1) i = 1; print v[i]}'; }
db_bytes() { psql "$PG" -Atc "SELECT pg_database_size(current_database())"; }
# The events the simulators sent (not the service's own, such as enforcer/missing).
db_events() { psql "$PG" -Atc "SELECT count(*) FROM events WHERE namespace LIKE 'fleet-%' AND rule IN ('drift/exec-from-tmp', 'enforcer/prevention')"; }
reset_db() {
  psql "$PG" -qc "DROP SCHEMA public CASCADE; CREATE SCHEMA public" >/dev/null
}

PUSH_AT=()
for ((t = RAMP + 30; t < SECONDS_RUN - 20; t += 90)); do PUSH_AT+=("$t"); done
push_at=$(IFS=,; echo "${PUSH_AT[*]}")
SILENCE_AT=$((RAMP + 20))

echo "== 1. $ENFORCERS enforcers, two replicas on PostgreSQL, ${SECONDS_RUN}s"
reset_db
replica pg-a 19601 "$PG"
replica pg-b 19602 "$PG"
idle_a=$(rss_kib "$(cat "$W/pg-a.pid")") idle_b=$(rss_kib "$(cat "$W/pg-b.pid")")
db0=$(db_bytes)
fleet pg "$ENFORCERS" "$SECONDS_RUN" 100 --addr 127.0.0.1:19601 --addr 127.0.0.1:19602 \
  --push-at "$push_at"
sample pg "$SECONDS_RUN" "$(cat "$W/pg-a.pid")" 19601 "$(cat "$W/pg-b.pid")" 19602
fleet_wait pg
db1=$(db_bytes)
pg_stored=$(db_events)
cat "$W/pg.json"
kill "$(cat "$W/pg-a.pid")" "$(cat "$W/pg-b.pid")" 2>/dev/null || true

echo "== 2. $ENFORCERS enforcers, one replica on SQLite, ${SQLITE_SECONDS}s"
replica sqlite 19603 "sqlite://$W/sqlite-data/palisade.db"
idle_s=$(rss_kib "$(cat "$W/sqlite.pid")")
SQ_PUSH=$((RAMP + 30)),$((RAMP + 75))
fleet sqlite "$ENFORCERS" "$SQLITE_SECONDS" 0 --addr 127.0.0.1:19603 --push-at "$SQ_PUSH"
sample sqlite "$SQLITE_SECONDS" "$(cat "$W/sqlite.pid")" 19603
fleet_wait sqlite
cat "$W/sqlite.json"
kill "$(cat "$W/sqlite.pid")" 2>/dev/null || true

echo "== 3. $HEAVY enforcers, two replicas on PostgreSQL, ${HEAVY_SECONDS}s"
reset_db
replica heavy-a 19604 "$PG"
replica heavy-b 19605 "$PG"
idle_ha=$(rss_kib "$(cat "$W/heavy-a.pid")") idle_hb=$(rss_kib "$(cat "$W/heavy-b.pid")")
HV_PUSH=$((RAMP + 30)),$((RAMP + 75))
fleet heavy "$HEAVY" "$HEAVY_SECONDS" 0 --addr 127.0.0.1:19604 --addr 127.0.0.1:19605 --push-at "$HV_PUSH"
sample heavy "$HEAVY_SECONDS" "$(cat "$W/heavy-a.pid")" 19604 "$(cat "$W/heavy-b.pid")" 19605
fleet_wait heavy
heavy_stored=$(db_events)
cat "$W/heavy.json"
heavy_busy_a=$(busy 19604) heavy_busy_b=$(busy 19605)

# ---- the section
kib() { awk -v k="$1" 'BEGIN{printf "%.0f", k / 1024}'; }
per() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN{printf "%.1f", (a - b) / n}'; }
rate() { awk -v a="$1" -v s="$2" 'BEGIN{printf "%.0f", a / s}'; }
field() { awk -v i="$2" "NR == $1 {print \$i}" "$3"; }
section() {
  local a="$W/pg.samples" s="$W/sqlite.samples" h="$W/heavy.samples"
  local conn_a conn_b
  conn_a=$(field 1 3 "$a") conn_b=$(field 2 3 "$a")
  echo "## Fleet: 10,000 enforcers"
  echo
  echo "\`make bench-fleet\` ($(date -u +%Y-%m-%d), $(nproc) cores, everything on this one machine): simulated enforcers (\`palisade-bench fleet\`, $PER_PROCESS per process) speak the enforcer's protocol over TLS: the long-poll that carries the heartbeat (\`POST /api/v1/sync\`, about every 8-10 s), event batches of 5 (the first of each enforcer a launch coverage report) kept until acknowledged, and the enforcer's backoff and \`Retry-After\` rules. Each connection goes to a replica at random, as a Service spreads them. PostgreSQL runs with \`fsync=off\` (\`tests/with-postgres.sh\`); enforcers connect over the first ${RAMP} s."
  echo
  echo "| Measure | $ENFORCERS enforcers, 2 replicas, PostgreSQL, ${SECONDS_RUN} s | $ENFORCERS enforcers, 1 replica, SQLite, ${SQLITE_SECONDS} s | $HEAVY enforcers, 2 replicas, PostgreSQL, ${HEAVY_SECONDS} s |"
  echo "| --- | ---: | ---: | ---: |"
  echo "| connections held at the peak (replica a / b) | $conn_a / $conn_b | $(field 1 3 "$s") | $(field 1 3 "$h") / $(field 2 3 "$h") |"
  echo "| service memory (RSS) at the peak, per replica | $(kib "$(field 1 1 "$a")") / $(kib "$(field 2 1 "$a")") MiB | $(kib "$(field 1 1 "$s")") MiB | $(kib "$(field 1 1 "$h")") / $(kib "$(field 2 1 "$h")") MiB |"
  echo "| of that, per connected enforcer (above the idle replica) | $(per "$(($(field 1 1 "$a") + $(field 2 1 "$a")))" "$((idle_a + idle_b))" "$ENFORCERS") KiB | $(per "$(field 1 1 "$s")" "$idle_s" "$ENFORCERS") KiB | $(per "$(($(field 1 1 "$h") + $(field 2 1 "$h")))" "$((idle_ha + idle_hb))" "$HEAVY") KiB |"
  echo "| CPU per replica, mean | $(field 1 2 "$a") % / $(field 2 2 "$a") % | $(field 1 2 "$s") % | $(field 1 2 "$h") % / $(field 2 2 "$h") % |"
  echo "| heartbeats answered per second | $(rate "$(sum pg syncs_answered)" "$SECONDS_RUN") | $(rate "$(sum sqlite syncs_answered)" "$SQLITE_SECONDS") | $(rate "$(sum heavy syncs_answered)" "$HEAVY_SECONDS") |"
  echo "| events acknowledged per second | $(rate "$(sum pg events_acked)" "$SECONDS_RUN") | $(rate "$(sum sqlite events_acked)" "$SQLITE_SECONDS") | $(rate "$(sum heavy events_acked)" "$HEAVY_SECONDS") |"
  echo "| events generated / acknowledged / abandoned by silenced enforcers | $(sum pg events_generated) / $(sum pg events_acked) / $(sum pg events_abandoned) | $(sum sqlite events_generated) / $(sum sqlite events_acked) / 0 | $(sum heavy events_generated) / $(sum heavy events_acked) / 0 |"
  echo "| events stored (rows in PostgreSQL) | $pg_stored | | $heavy_stored |"
  echo "| long-polls answered 429 / failed | $(sum pg syncs_busy) / $(sum pg syncs_failed) | $(sum sqlite syncs_busy) / $(sum sqlite syncs_failed) | $(sum heavy syncs_busy) / $(sum heavy syncs_failed) |"
  echo "| report batches answered 429 / failed | $(sum pg reports_busy) / $(sum pg reports_failed) | $(sum sqlite reports_busy) / $(sum sqlite reports_failed) | $(sum heavy reports_busy) / $(sum heavy reports_failed) |"
  echo "| connections refused or failed | $(sum pg connect_errors) | $(sum sqlite connect_errors) | $(sum heavy connect_errors) |"
  echo "| push in force on each enforcer: p50 / p99 / max | $(pct pg 50) / $(pct pg 99) / $(pct pg 100) ms ($(wc -l <"$W/pg.lat") arrivals of ${#PUSH_AT[@]} pushes) | $(pct sqlite 50) / $(pct sqlite 99) / $(pct sqlite 100) ms ($(wc -l <"$W/sqlite.lat") arrivals of 2) | $(pct heavy 50) / $(pct heavy 99) / $(pct heavy 100) ms ($(wc -l <"$W/heavy.lat") arrivals of 2) |"
  echo "| replicas alive at the end | $(field 1 4 "$a") / $(field 2 4 "$a") | $(field 1 4 "$s") | $(field 1 4 "$h") / $(field 2 4 "$h") |"
  echo
  echo "- 100 enforcers fell silent at ${SILENCE_AT} s; the service listed all of them as missing $(jq -s 'map(.missing_after_ms // empty) | first // "n/a"' "$W/pg.json") ms later (3 heartbeat intervals of silence, checked every second)."
  echo "- PostgreSQL grew by $(awk -v a="$db1" -v b="$db0" -v s="$SECONDS_RUN" 'BEGIN{printf "%.1f", (a - b) / 1048576}') MiB in the ${SECONDS_RUN} s run: $(awk -v a="$db1" -v b="$db0" -v s="$SECONDS_RUN" 'BEGIN{printf "%.0f", (a - b) / 1048576 / s * 3600}') MiB per hour at $EVENTS events/s (heartbeats update rows in place)."
  echo "- At $HEAVY enforcers the replicas answered $heavy_busy_a and $heavy_busy_b requests with 429 and \`Retry-After\` (\`palisade_busy_replies_total\`)."
  echo
}
section | tee "$W/section.md"
if [[ "${1:-}" == --update ]]; then
  awk -v s="$W/section.md" '
    function put() { while ((getline line < s) > 0) print line; done = 1 }
    /^## Fleet/ { put(); skip = 1; next }
    skip && /^## / { skip = 0 }
    !done && /^## (Learn, review, enforce|Background audit|Container images)/ { put() }
    !skip { print }
    END { if (!done) put() }' "$2" >"$W/results.md"
  cp "$W/results.md" "$2"
  echo "updated the fleet section of $2"
fi
