#!/usr/bin/env bash
# `make bench`: micro-benchmarks, load against the running webhook beside
# the floor server (same client, same run), report ingestion into SQLite and
# PostgreSQL, policy propagation to waiting enforcers, enforcer footprint,
# learn, review, enforce (observations stored, drafts, the allowlist check).
# Writes bench/RESULTS.md; `bash bench/run.sh --learn` measures only the
# last and replaces (or inserts) its section, the others as they were.
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

micro() { jq -r '.mean.point_estimate / 1000 | . * 100 | round / 100' "target/criterion/${1//\//_}/new/estimates.json"; }
f() { jq -r ".$2" <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a / b}'; }

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

# ---- Learn, review, enforce
LEARN_PODS="${BENCH_LEARN_PODS:-100}"
LEARN_NOISY="${BENCH_LEARN_NOISY:-10}"
LEARN_HOURS="${BENCH_LEARN_HOURS:-3}"
LEARN_CONNECTIONS=4
observe() { # port ca database
  "$BIN/palisade-bench" observe --addr "127.0.0.1:$1" --ca "$2" --token "$ADMIN" --database "$3" \
    --pods "$LEARN_PODS" --noisy "$LEARN_NOISY" --hours "$LEARN_HOURS" --connections "$LEARN_CONNECTIONS"
}
# Median wall time in ms of RUNS runs of a command whose exit status is 0
# or 1 (`policy replay` exits 1 when the policy would act).
median_ms() { # runs command...
  local n="$1" i t0 t1 rc; shift
  : >"$W/times"
  for ((i = 0; i < n; i++)); do
    rc=0; t0=$(date +%s%N)
    "$@" >/dev/null 2>"$W/median.err" || rc=$?
    t1=$(date +%s%N)
    if ((rc > 1)); then cat "$W/median.err" >&2; return 1; fi
    echo $(((t1 - t0) / 1000)) >>"$W/times"
  done
  sort -n "$W/times" | awk '{v[NR] = $1} END {printf "%.1f", v[int((NR + 1) / 2)] / 1000}'
}
nanos() { jq -r '.mean.point_estimate | . * 10 | round / 10' "target/criterion/${1//\//_}/new/estimates.json"; }
millis() { jq -r '.mean.point_estimate / 1e6 | . * 100 | round / 100' "target/criterion/${1//\//_}/new/estimates.json"; }
# The enforcer's CPU % with 200 processes in the pod and RATE new ones a
# second, from the exec-churn table of bench/RESULTS.md (make bench-detection).
churn_cpu() { # rate
  awk -F'|' -v r="$1" 'NF == 6 {for (i = 2; i <= 5; i++) gsub(/[ %]/, "", $i)}
    NF == 6 && $2 == 200 && $3 == r && $4 ~ /^[0-9]+$/ {print $5; exit}' bench/RESULTS.md 2>/dev/null
}

learn_measure() {
  echo "== learn: draft and replay of a week at the bound, the allowlist check per exec (criterion)"
  cargo bench -p palisade-bench --bench learn -- --noplot --warm-up-time 1 --measurement-time 3 2>/dev/null | grep -E "^[a-z].*|time:" || true
  echo "== learn: $LEARN_PODS busy pods' observations, $LEARN_HOURS simulated hours, into SQLite"
  serve learn 19446
  learn_sqlite=$(observe 19446 "$W/learn-tls/ca.crt" "sqlite://$W/learn-data/palisade.db")
  echo "$learn_sqlite"
  # What a user sees: the CLI from process start to printed output.
  local largest namespace workload conn
  largest=$(jq -r 'select(.label == "draft") | .workload' <<<"$learn_sqlite")
  namespace="${largest%%/*}" workload="${largest#*/}"
  conn=(--server https://127.0.0.1:19446 --token "$ADMIN" --ca-file "$W/learn-tls/ca.crt")
  learn_cli_draft_ms=$(median_ms 10 "$BIN/palisade" policy draft "$workload" -n "$namespace" "${conn[@]}")
  "$BIN/palisade" policy draft "$workload" -n "$namespace" "${conn[@]}" >"$W/learn-draft.yaml"
  learn_cli_replay_ms=$(median_ms 5 "$BIN/palisade" policy replay "$W/learn-draft.yaml" --since 7d -n "$namespace" "${conn[@]}")
  "$BIN/palisade" policy replay "$W/learn-draft.yaml" --since 7d -n "$namespace" "${conn[@]}" >"$W/learn-replay.txt" || true
  learn_replay_judged=$(grep -o '[0-9]* items judged' "$W/learn-replay.txt" | awk '{s += $1} END {print s + 0}')
  learn_replay_workloads=$(grep -c ' items judged' "$W/learn-replay.txt" || true)
  echo "palisade policy draft $largest: $learn_cli_draft_ms ms; policy replay --since 7d -n $namespace: $learn_cli_replay_ms ms, $learn_replay_judged items judged in $learn_replay_workloads workloads"
  learn_postgres=""
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "== learn: the same into PostgreSQL"
    # Its own PostgreSQL port: a `make test` may be running beside.
    learn_postgres=$(PALISADE_TEST_POSTGRES_PORT="${BENCH_POSTGRES_PORT:-25433}" W="$W" BIN="$BIN" ADMIN="$ADMIN" \
      OBSERVE_ARGS="--pods $LEARN_PODS --noisy $LEARN_NOISY --hours $LEARN_HOURS --connections $LEARN_CONNECTIONS" \
      bash tests/with-postgres.sh bash -c '
      set -euo pipefail
      env PALISADE_LISTEN=127.0.0.1:19447 PALISADE_TLS__SELF_SIGNED_DIR="$W/learn-pg-tls" \
        PALISADE_SERVICE__DATA_DIR="$W/learn-pg-data" PALISADE_SERVICE__ADMIN_TOKENS="$ADMIN" \
        PALISADE_SERVICE__DATABASE_URL="$PALISADE_TEST_POSTGRES_URL" PALISADE_LOG__LEVEL=warn \
        "$BIN/palisade" serve >"$W/learn-pg.log" 2>&1 & pid=$!
      trap "kill $pid" EXIT
      for _ in $(seq 100); do
        curl -fsS --cacert "$W/learn-pg-tls/ca.crt" https://127.0.0.1:19447/readyz >/dev/null 2>&1 && break
        sleep 0.1
      done
      # shellcheck disable=SC2086 # the arguments, split
      "$BIN/palisade-bench" observe --addr 127.0.0.1:19447 --ca "$W/learn-pg-tls/ca.crt" --token "$ADMIN" \
        --database "$PALISADE_TEST_POSTGRES_URL" $OBSERVE_ARGS' 2>"$W/learn-pg.err") ||
      { cat "$W/learn-pg.err" "$W/learn-pg.log"; return 1; }
    echo "$learn_postgres"
  fi
}

mib() { awk -v b="$1" 'BEGIN{printf "%.1f", b / 1048576}'; }
# | database | hour | rows | tables | indexes | growth | database | batches/s | items/s | x real time |
learn_rows() { # label json-lines
  local line
  while read -r line; do
    echo "| $1 | $(f "$line" hour) | $(f "$line" rows) | $(mib "$(f "$line" table_bytes)") | $(mib "$(f "$line" index_bytes)") | +$(mib "$(f "$line" growth_table_bytes)") | $(mib "$(f "$line" bytes)") | $(f "$line" batches_per_sec) | $(f "$line" items_per_sec) | $(f "$line" times_real_time) |"
  done < <(jq -c 'select(.label == "hour")' <<<"$2")
}

learn_section() {
  local pods last draft pg_last c0 c100 per_exec_us n
  pods=$(jq -c 'select(.label == "pods")' <<<"$learn_sqlite")
  last=$(jq -c 'select(.label == "hour")' <<<"$learn_sqlite" | tail -1)
  draft=$(jq -c 'select(.label == "draft")' <<<"$learn_sqlite")
  echo "## Learn, review, enforce"
  echo
  echo "Measured $(date -u +%Y-%m-%d) (\`bash bench/run.sh --learn\`, part of \`make bench\`)."
  echo
  echo "**Storage.** $(f "$pods" pods) simulated pods of 10 applications each send an enforcer's observation batch every $(f "$pods" interval_s) s of simulated time ($(f "$pods" rounds_per_hour) rounds an hour, sent back to back over $LEARN_CONNECTIONS connections to a real \`palisade serve\`). Each shows about $(( $(f "$pods" habitual_items) / $(f "$pods" pods) )) items again and again (some 50 programs as executables and processes, 5 listeners and 23 destinations in an app and a proxy container); $(( $(f "$pods" pods) - $(f "$pods" noisy) )) add about 70 new items an hour (a new destination every 4th round, a new process name every 30th), $(f "$pods" noisy) add 10 new destinations every round and pass the bound of 2000 items within the first hour. With no apiserver to resolve owners every pod is its own workload: the most rows 100 pods make (the pods of a Deployment share one workload's rows). Tables: \`observations\` and \`workloads\` with their indexes (SQLite: \`dbstat\` after a WAL checkpoint; PostgreSQL: \`pg_total_relation_size\`)."
  echo
  echo "| Database | simulated hour | rows at its end | tables (MiB) | of which indexes (MiB) | growth in the hour (MiB) | whole database (MiB) | batches/s | items/s | times real time |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  learn_rows SQLite "$learn_sqlite"
  if [[ -n "$learn_postgres" ]]; then
    learn_rows PostgreSQL "$learn_postgres"
  fi
  echo
  echo "- Items past the bound are counted, not stored: $(f "$last" overflow) after $LEARN_HOURS hours on SQLite ($(f "$last" workloads) workloads holding $(f "$last" items_stored) items)."
  if [[ -n "$learn_postgres" ]]; then
    pg_last=$(jq -c 'select(.label == "hour")' <<<"$learn_postgres" | tail -1)
    echo "- PostgreSQL: $(f "$pg_last" dead_rows) dead row versions (updated counters) not yet vacuumed at the end, inside the figures above; $(f "$pg_last" hot_update_pct) % of the updates of \`observations\` were heap-only (wrote no index entry); its largest index, \`$(f "$pg_last" largest_index)\`, held $(mib "$(f "$pg_last" largest_index_bytes)") MiB (SQLite's, \`$(f "$last" largest_index)\`: $(mib "$(f "$last" largest_index_bytes)") MiB). Its server runs with \`fsync=off\` (\`tests/with-postgres.sh\`)."
  fi
  echo "- Real time needs $(awk -v p="$(f "$pods" pods)" -v i="$(f "$pods" interval_s)" 'BEGIN{printf "%.1f", p / i}') batches/s for these pods."
  echo
  echo "**Draft and review.** A workload at the bound: 2000 items in 3 containers over 7 days (criterion, \`benches/learn.rs\`), and the largest workload of the storage run above ($(f "$draft" items) items, $(( $(f "$draft" response_bytes) / 1024 )) KiB of JSON) from the running service."
  echo
  echo "| Measure | Result |"
  echo "| --- | ---: |"
  echo "| \`learn::draft\` of a week at the bound (criterion mean) | $(millis learn/draft) ms |"
  echo "| \`learn::replay\` of that draft against the same items (criterion mean) | $(millis learn/replay) ms |"
  echo "| \`GET /api/v1/workloads/$(f "$draft" workload)\`, fetch and decode: median / slowest of $(f "$draft" fetches) | $(f "$draft" fetch_p50_ms) / $(f "$draft" fetch_max_ms) ms |"
  echo "| its draft in-process: median | $(f "$draft" draft_p50_ms) ms |"
  echo "| \`palisade policy draft\` of it, process start to YAML: median of 10 | $learn_cli_draft_ms ms |"
  echo "| \`palisade policy replay --since 7d\` of that draft over the namespace: median of 5 | $learn_cli_replay_ms ms |"
  echo "| items replay judged (one item seen in two containers is one) / rows stored | $learn_replay_judged / $(f "$last" rows) |"
  echo
  c0=$(churn_cpu 0) c100=$(churn_cpu 100)
  if [[ -n "$c0" && -n "$c100" ]]; then
    per_exec_us=$(awk -v a="$c100" -v b="$c0" 'BEGIN{printf "%.0f", (a - b) * 100}')
  fi
  echo "**The enforcer's allowlist check.** \`judge::executable\` on one exec against \`allowedExecutables\` of N entries, each pinned by SHA-256 (criterion mean): a listed path (the image's own file, the list's last entry) and an unlisted one (\`/tmp/x\`, not from the image), and \`judge::pinned\`, the drift check's question for a file not from the image.${per_exec_us:+ Per exec the enforcer already spends about $per_exec_us µs of CPU (exec churn with 200 processes in the pod: $c100 % of a core at 100 new processes a second against $c0 % idle, section Enforcer detection).}"
  echo
  echo "| entries | listed (ns) | unlisted (ns) | pinned, unlisted (ns) | the image's program: listed, of the per-exec CPU | a dropped file: unlisted + pinned, of the per-exec CPU |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
  share() { # ns
    if [[ -n "${per_exec_us:-}" ]]; then
      awk -v a="$1" -v e="$per_exec_us" 'BEGIN{printf "%.3f %%", a / (e * 1000) * 100}'
    else
      echo "n/a"
    fi
  }
  for n in 10 100 2000; do
    local listed unlisted pinned
    listed=$(nanos "judge/executable/$n/listed") unlisted=$(nanos "judge/executable/$n/unlisted") pinned=$(nanos "judge/pinned/$n/unlisted")
    echo "| $n | $listed | $unlisted | $pinned | $(share "$listed") | $(share "$(awk -v a="$unlisted" -v b="$pinned" 'BEGIN{print a + b}')") |"
  done
  echo
}

# The learn section replaces its old self, or goes before the sections
# measured apart.
update_learn_section() { # file
  learn_section >"$W/learn.md"
  awk -v s="$W/learn.md" '
    function put() { while ((getline line < s) > 0) print line; done = 1 }
    /^## Learn, review, enforce/ { put(); skip = 1; next }
    skip && /^## / { skip = 0 }
    !done && /^## (Background audit|Container images)/ { put() }
    !skip { print }
    END { if (!done) put() }' "$1" >"$W/results.md"
  mv "$W/results.md" "$1"
  echo "updated the learn section of $1"
}

if [[ "${1:-}" == --learn ]]; then
  learn_measure
  update_learn_section bench/RESULTS.md
  exit 0
fi

echo "== micro-benchmarks (criterion)"
cargo bench -p palisade-bench --bench admission -- --noplot --warm-up-time 1 --measurement-time 3 2>/dev/null | grep -E "^[a-z].*|time:" || true

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

learn_measure
# Before the file is rewritten: it reads the exec-churn figures.
learn_md=$(learn_section)
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
  printf '%s\n\n' "$learn_md"
  # Measured apart (it runs a control plane): kept from the last
  # \`make bench-audit\`.
  if [[ -n "$audit_section" ]]; then
    printf '%s\n\n' "$audit_section"
  fi
  bash bench/images.sh
} >bench/RESULTS.md
echo "wrote bench/RESULTS.md"
