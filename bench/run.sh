#!/usr/bin/env bash
# `make bench`: micro-benchmarks, load against the running webhook beside
# the floor server (same client, same run), report ingestion into SQLite and
# PostgreSQL, policy propagation to waiting enforcers, enforcer footprint.
# Writes bench/RESULTS.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BIN=target/release
SECONDS_PER_RUN="${BENCH_SECONDS:-10}"
CONNECTIONS="${BENCH_CONNECTIONS:-4}"
W="$(mktemp -d /tmp/palisade-bench.XXXXXX)"
ulimit -n 65536 2>/dev/null || ulimit -n 4096 || true
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  declare -F stop_registry >/dev/null && stop_registry
  rm -rf "$W"
}
trap cleanup EXIT

cargo build --release -p palisade -p palisade-bench >/dev/null 2>&1
ENFORCER="${PALISADE_ENFORCER_BIN:-target/x86_64-unknown-linux-musl/release-small/palisade-enforcer}"

echo "== micro-benchmarks (criterion)"
cargo bench -p palisade-bench --bench admission -- --noplot --warm-up-time 1 --measurement-time 3 2>/dev/null | grep -E "^[a-z].*|time:" || true
micro() { jq -r '.mean.point_estimate / 1000 | . * 100 | round / 100' "target/criterion/${1//\//_}/new/estimates.json"; }

ADMIN="bench-admin-token-0123456789abcdef"
serve() { # name port [extra env...]
  local name="$1" port="$2"; shift 2
  env PALISADE_LISTEN="127.0.0.1:$port" PALISADE_TLS__SELF_SIGNED_DIR="$W/$name-tls" \
    PALISADE_SERVICE__DATA_DIR="$W/$name-data" PALISADE_SERVICE__ADMIN_TOKENS="$ADMIN" \
    PALISADE_LOG__LEVEL=warn "$@" "$BIN/palisade" serve >"$W/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    curl -fsS --cacert "$W/$name-tls/ca.crt" "https://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$W/$name.log"; return 1
}

serve palisade 19443
"$BIN/palisade-bench" floor --listen 127.0.0.1:19444 --ca-out "$W/floor-ca.crt" 2>/dev/null &
PIDS+=($!)
sleep 0.5
BODY=tests/fixtures/admission/pod-create.json
ROUNDS="${BENCH_ROUNDS:-3}"
ROUND_SECONDS=$(( SECONDS_PER_RUN / ROUNDS > 0 ? SECONDS_PER_RUN / ROUNDS : 1 ))
echo "== load over TLS, keep-alive, $CONNECTIONS connections, $ROUNDS alternating rounds of ${ROUND_SECONDS}s per endpoint"
load_json=$("$BIN/palisade-bench" load --body "$BODY" --connections "$CONNECTIONS" \
  --seconds "$ROUND_SECONDS" --rounds "$ROUNDS" \
  --target "floor=127.0.0.1:19444/mutate@$W/floor-ca.crt" \
  --target "mutate=127.0.0.1:19443/mutate@$W/palisade-tls/ca.crt" \
  --target "validate=127.0.0.1:19443/validate@$W/palisade-tls/ca.crt")
echo "$load_json"
floor_json=$(grep '"floor"' <<<"$load_json")
mutate_json=$(grep '"mutate"' <<<"$load_json")
validate_json=$(grep '"validate"' <<<"$load_json")

echo "== report ingestion"
sqlite_json=$("$BIN/palisade-bench" ingest --label sqlite --addr 127.0.0.1:19443 --ca "$W/palisade-tls/ca.crt" \
  --token "$ADMIN" --seconds "$SECONDS_PER_RUN"); echo "$sqlite_json"
pg_json='{"events_per_sec":"n/a"}'
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  pg_json=$(bash tests/with-postgres.sh bash -c '
    env PALISADE_LISTEN=127.0.0.1:19445 PALISADE_TLS__SELF_SIGNED_DIR='"$W"'/pg-tls PALISADE_SERVICE__DATA_DIR='"$W"'/pg-data \
      PALISADE_SERVICE__ADMIN_TOKENS='"$ADMIN"' PALISADE_SERVICE__DATABASE_URL="$PALISADE_TEST_POSTGRES_URL" PALISADE_LOG__LEVEL=warn \
      '"$BIN"'/palisade serve >'"$W"'/pg.log 2>&1 & pid=$!
    for _ in $(seq 100); do curl -fsS --cacert '"$W"'/pg-tls/ca.crt https://127.0.0.1:19445/readyz >/dev/null 2>&1 && break; sleep 0.1; done
    '"$BIN"'/palisade-bench ingest --label postgresql --addr 127.0.0.1:19445 --ca '"$W"'/pg-tls/ca.crt --token '"$ADMIN"' --seconds '"$SECONDS_PER_RUN"'
    kill $pid' 2>/dev/null | tail -n 1)
fi
echo "$pg_json"

echo "== policy propagation"
prop_json=$("$BIN/palisade-bench" propagation --addr 127.0.0.1:19443 --ca "$W/palisade-tls/ca.crt" --token "$ADMIN" --pollers "${BENCH_POLLERS:-1000}")
echo "$prop_json"

echo "== enforcer footprint: a PID namespace with 200 processes"
mkdir -p "$W/enforcer"
# Its own PID namespace: the enforcer sees the 200 processes and nothing of the host.
unshare --pid --fork --mount-proc bash -c '
  for _ in $(seq 200); do sleep 600 & done
  PALISADE_STATE_DIR="$1" exec "$2"' _ "$W/enforcer" "$ENFORCER" >"$W/enforcer.log" 2>&1 &
PIDS+=($!)
sleep 3
EPID=$(pgrep -n -x palisade-enforc)
# shellcheck disable=SC2010 # /proc entries: the numeric names are the PIDs
procs=$(( $(ls "/proc/$EPID/root/proc" 2>/dev/null | grep -c '^[0-9]') ))
t0=$(awk '{print $14 + $15}' "/proc/$EPID/stat"); sleep 10; t1=$(awk '{print $14 + $15}' "/proc/$EPID/stat")
rss_kb=$(awk '/VmRSS/{print $2}' "/proc/$EPID/status")
cpu_pct=$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", d * 100 / (hz * 10)}')
kill -KILL "$EPID" 2>/dev/null || true  # PID 1 of the namespace: takes the 200 with it
echo "processes in the namespace: $procs, RSS ${rss_kb} KiB, CPU ${cpu_pct}% (250 ms scans)"

echo "== prevention: /mutate with a registry lookup (CNCF Distribution from the Go module proxy)"
WORK="$W" CACHE_DIR="${PALISADE_E2E_CACHE:-$HOME/.cache/palisade-e2e}"
mkdir -p "$W/pids" "$W/logs"
# shellcheck source=tests/e2e/cluster.sh
source tests/e2e/cluster.sh
# shellcheck source=tests/node/registry.sh
source tests/node/registry.sh
build_registry >"$W/registry-build.log" 2>&1 || { cat "$W/registry-build.log"; exit 1; }
start_registry 127.0.0.1:19500
LAUNCH="${PALISADE_LAUNCH_BIN:-target/x86_64-unknown-linux-musl/release-small/palisade-launch}"
# shellcheck disable=SC2012 # make images names the archives: no spaces
IMAGE_ARCHIVE=$(ls target/images/palisade-enforcer-*.oci.tar | head -1)
push_image "$IMAGE_ARCHIVE" 127.0.0.1:19500/bench/enforcer:1
lookup_json=$("$BIN/palisade-bench" lookup --image 127.0.0.1:19500/bench/enforcer:1 \
  --registry 127.0.0.1:19500 --iterations "${BENCH_LOOKUPS:-200}")
echo "$lookup_json"
miss_json=$(grep '"registry-miss"' <<<"$lookup_json")
hit_json=$(grep '"registry-hit"' <<<"$lookup_json")
# The same image as a two-platform index: a miss also reads the index and
# each platform's manifest and config (at once).
push_index 127.0.0.1:19500/bench/enforcer:multi "" 1=amd64 1=arm64
index_json=$("$BIN/palisade-bench" lookup --image 127.0.0.1:19500/bench/enforcer:multi \
  --registry 127.0.0.1:19500 --iterations "${BENCH_LOOKUPS:-200}")
echo "$index_json"
index_miss_json=$(grep '"registry-miss"' <<<"$index_json")

echo "== prevention: app start with and without the launcher"
# Wall time of N starts of /bin/true, bare and as `palisade-launch -- /bin/true`
# (the launcher's coverage line goes to a file, as in a pod's log).
starts() { # runs, command...
  local n="$1" t0 t1; shift
  t0=$(date +%s%N)
  for _ in $(seq "$n"); do "$@" 2>>"$W/launch.log" >/dev/null; done
  t1=$(date +%s%N)
  awk -v d=$((t1 - t0)) -v n="$n" 'BEGIN{printf "%.0f", d / n / 1000}'
}
STARTS="${BENCH_STARTS:-500}"
starts 20 "$LAUNCH" -- /bin/true >/dev/null
bare_us=$(starts "$STARTS" /bin/true)
launched_us=$(starts "$STARTS" "$LAUNCH" -- /bin/true)
bare_us2=$(starts "$STARTS" /bin/true)
launched_us2=$(starts "$STARTS" "$LAUNCH" -- /bin/true)
bare_us=$(( (bare_us + bare_us2) / 2 )) launched_us=$(( (launched_us + launched_us2) / 2 ))
echo "start of /bin/true: bare ${bare_us} µs, under palisade-launch ${launched_us} µs"

f() { jq -r ".$2" <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a / b}'; }
audit_section=$(awk '/^## Background audit/ {keep = 1; print; next} keep && /^## / {exit} keep' bench/RESULTS.md 2>/dev/null)
{
  echo "# Benchmark results"
  echo
  echo "Measured by \`make bench\` on $(date -u +%Y-%m-%d): $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/Mem:/{print $2}') GiB RAM."
  echo "Load generator and servers share the machine; ratios compare runs of the same client in the same session."
  echo
  echo "## Micro-benchmarks (decode + decide + encode, one AdmissionReview, criterion mean)"
  echo
  echo "| Case | typical Pod (µs) | large Pod, 40 containers (µs) |"
  echo "| --- | ---: | ---: |"
  for c in "mutate" "validate" "floor"; do
    name="$c"; [ "$c" = floor ] && name="floor (kube-rs parse + re-serialise)"
    echo "| $name | $(micro "$c/typical") | $(micro "$c/large") |"
  done
  echo
  echo "## Webhook over TLS (HTTP/1.1 keep-alive, $CONNECTIONS connections, $ROUNDS alternating rounds of ${ROUND_SECONDS} s per endpoint)"
  echo
  echo "| Server | requests/s | p50 (µs) | p99 (µs) | p99.9 (µs) | vs floor |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  for j in "$floor_json" "$mutate_json" "$validate_json"; do
    echo "| $(f "$j" label) | $(f "$j" requests_per_sec) | $(f "$j" p50_us) | $(f "$j" p99_us) | $(f "$j" p999_us) | $(ratio "$(f "$j" requests_per_sec)" "$(f "$floor_json" requests_per_sec)")x |"
  done
  echo
  echo "The floor is a minimal kube-rs webhook over the same TLS stack: it parses the AdmissionReview with kube's types and re-serialises an allowing response, and decides nothing. Palisade reads only the fields it decides on (see docs/performance.md)."
  echo
  echo "## Policy service"
  echo
  echo "| Measure | Result |"
  echo "| --- | ---: |"
  echo "| Report ingestion into SQLite (batches of 100, 4 clients) | $(f "$sqlite_json" events_per_sec) events/s |"
  echo "| Report ingestion into PostgreSQL (batches of 100, 4 clients) | $(f "$pg_json" events_per_sec) events/s |"
  echo "| Policy pushes during SQLite ingestion (one per 200 ms): succeeded / failed | $(f "$sqlite_json" pushes) / $(f "$sqlite_json" push_failures) |"
  echo "| Policy push latency during SQLite ingestion: median / slowest | $(f "$sqlite_json" push_p50_ms) / $(f "$sqlite_json" push_max_ms) ms |"
  echo "| Policy pushes during PostgreSQL ingestion: succeeded / failed | $(f "$pg_json" pushes) / $(f "$pg_json" push_failures) |"
  echo "| Policy push latency during PostgreSQL ingestion: median / slowest | $(f "$pg_json" push_p50_ms) / $(f "$pg_json" push_max_ms) ms |"
  echo "| Push to $(f "$prop_json" pollers) waiting long-polls: median | $(f "$prop_json" p50_ms) ms |"
  echo "| Push to $(f "$prop_json" pollers) waiting long-polls: last one | $(f "$prop_json" max_ms) ms |"
  echo
  echo "## Enforcer"
  echo
  echo "| Measure | Result |"
  echo "| --- | ---: |"
  echo "| Processes in the watched PID namespace | $procs |"
  echo "| RSS | $rss_kb KiB |"
  echo "| CPU while idle, 250 ms scans (10 s) | $cpu_pct % |"
  echo
  echo "## Prevention"
  echo
  echo "\`/mutate\` of a pod that prevention confines and whose container sets no \`command\`, decode to encode, with its image's ENTRYPOINT/CMD looked up in a local registry (CNCF Distribution $REGISTRY_VERSION, plain HTTP on loopback; $(f "$miss_json" iterations) reviews each). A miss asks for the tag's digest, the manifest and the config; a hit asks nothing."
  echo
  echo "| Case | p50 (µs) | p99 (µs) |"
  echo "| --- | ---: | ---: |"
  echo "| registry cache miss | $(f "$miss_json" p50_us) | $(f "$miss_json" p99_us) |"
  echo "| registry cache hit | $(f "$hit_json" p50_us) | $(f "$hit_json" p99_us) |"
  echo "| registry cache miss, two-platform index (index, then both platforms' manifest and config) | $(f "$index_miss_json" p50_us) | $(f "$index_miss_json" p99_us) |"
  echo
  echo "App start, mean wall time of $STARTS starts of \`/bin/true\` (twice each, alternating): bare $bare_us µs, under \`palisade-launch\` $launched_us µs (Landlock ruleset, coverage line, exec)."
  echo
  # Measured apart (it runs a control plane): kept from the last
  # \`make bench-audit\`.
  if [[ -n "$audit_section" ]]; then
    printf '%s\n\n' "$audit_section"
  fi
  bash bench/images.sh
} >bench/RESULTS.md
echo "wrote bench/RESULTS.md"
