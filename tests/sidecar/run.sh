#!/usr/bin/env bash
# Runtime enforcer end to end: a simulated pod (own PID, mount and network
# namespaces; an overlayfs root for the app; app and enforcer as UID 1000)
# with a real policy service, asserting what reaches the service.
#
# Only the app's processes and the enforcer live in the pod's PID namespace;
# this script, the policy service and the CLI share just its network.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PALISADE="${PALISADE_BIN:-$ROOT/target/release/palisade}"
ENFORCER="${PALISADE_ENFORCER_BIN:-$ROOT/target/x86_64-unknown-linux-musl/release-small/palisade-enforcer}"
for b in "$PALISADE" "$ENFORCER"; do
  [[ -x "$b" ]] || { echo "missing $b (make build)" >&2; exit 1; }
done
# Absolute: commands run through nsenter and chroot in other directories.
PALISADE="$(realpath "$PALISADE")"
ENFORCER="$(realpath "$ENFORCER")"
if [[ $(id -u) -ne 0 ]]; then
  echo "needs root (namespaces, overlayfs, setpriv)" >&2
  exit 1
fi
W="$(mktemp -d /tmp/palisade-pod.XXXXXX)"
chmod 755 "$W"
PORT=18443
ADMIN="pod-test-admin-token-0123456789"
REPORT="pod-test-report-token-0123456789"
APP_UID=1000
PASSED=0
FAILED=()

log() { printf '%s\n' "$*"; }

cleanup() {
  local code=$?
  # Killing the pod's PID 1 ends every process in its PID namespace.
  [[ -n "${POD:-}" ]] && kill -KILL "$POD" 2>/dev/null
  for p in "$W"/*.pid; do [[ -f "$p" ]] && kill -KILL "$(cat "$p")" 2>/dev/null || true; done
  if ((${#FAILED[@]})) || ((code != 0)); then
    log "---- enforcer log (tail)"; tail -n 40 "$W/enforcer.log" 2>/dev/null || true
    log "---- service log (tail)"; tail -n 20 "$W/service.log" 2>/dev/null || true
  fi
  umount -l "$W/merged" 2>/dev/null || true
  [[ -n "${KEEP_WORK:-}" ]] || rm -rf "$W"
}
trap cleanup EXIT

unshare --pid --fork --mount-proc --net --mount --propagation private \
  bash "$ROOT/tests/sidecar/pod.sh" "$W" >"$W/pod.log" 2>&1 &
echo $! >"$W/unshare.pid"
for _ in $(seq 100); do [[ -f "$W/pod-ready" ]] && break; sleep 0.1; done
[[ -f "$W/pod-ready" ]] || { cat "$W/pod.log"; exit 1; }
POD=$(pgrep -P "$(cat "$W/unshare.pid")")

in_net() { nsenter -t "$POD" -n "$@"; }
in_pod() { nsenter -t "$POD" -p -m -n -i -u "$@"; }

# Runs a command in the app container as the app's UID.
app() { in_pod chroot "$W/merged" setpriv --reuid=$APP_UID --regid=$APP_UID --clear-groups "$@"; }

# --- the policy service, with a runtime policy for namespace "shop".
# A CA and a serving certificate it signs (rustls refuses a CA as a leaf).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=pod-test-ca \
  -keyout "$W/ca.key" -out "$W/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=policy \
  -keyout "$W/tls.key" -out "$W/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$W/tls.ext"
openssl x509 -req -in "$W/tls.csr" -CA "$W/ca.crt" -CAkey "$W/ca.key" -CAcreateserial -days 1 \
  -extfile "$W/tls.ext" -out "$W/tls.crt" 2>/dev/null
chmod 644 "$W/ca.crt"
chmod 644 "$W/tls.crt"
cat >"$W/policies/shop.yaml" <<YAML
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: shop-runtime}
spec:
  mode: audit
  selector: {namespaces: [shop]}
  runtime:
    drift: true
    deniedProcesses: [sh, dash]
    allowedListenPorts: [8080, $PORT]
    egressAllow: ["10.0.0.0/8"]
YAML

# Background launches call nsenter directly (not through a function) so
# that $! is nsenter itself: it execs the service (network only), or forks
# the enforcer into the pod's PID namespace.
start_service() {
  nsenter -t "$POD" -n env PALISADE_LISTEN="127.0.0.1:$PORT" PALISADE_TLS__CERT_FILE="$W/tls.crt" PALISADE_TLS__KEY_FILE="$W/tls.key" \
    PALISADE_POLICIES__DIR="$W/policies" PALISADE_SERVICE__DATA_DIR="$W/data" \
    PALISADE_SERVICE__ADMIN_TOKENS="$ADMIN" PALISADE_SERVICE__REPORT_TOKENS="$REPORT" \
    "$PALISADE" serve >>"$W/service.log" 2>&1 &
  echo $! >"$W/service.pid"
  wait_for "policy service" 20 in_net curl -fsS --cacert "$W/ca.crt" "https://127.0.0.1:$PORT/readyz"
}

stop_service() { kill -TERM "$(cat "$W/service.pid")"; wait "$(cat "$W/service.pid")" 2>/dev/null || true; rm -f "$W/service.pid"; }

start_enforcer() {
  nsenter -t "$POD" -p -m -n -i -u setpriv --reuid=$APP_UID --regid=$APP_UID --clear-groups env \
    PALISADE_POLICY_URL="https://127.0.0.1:$PORT" PALISADE_REPORT_TOKEN="$REPORT" PALISADE_CA_FILE="$W/ca.crt" \
    PALISADE_POD_NAMESPACE=shop PALISADE_POD_NAME=cart-0 PALISADE_POD_UID=uid-cart-0 \
    PALISADE_STATE_DIR="$W/state" PALISADE_INTERVAL_MS=100 \
    "$ENFORCER" >>"$W/enforcer.log" 2>&1 &
  echo $! >"$W/enforcer.pid"
}

# nsenter forks into the PID namespace: the enforcer is its child.
enforcer_pid() { pgrep -P "$(cat "$W/enforcer.pid")" | head -n 1; }
stop_enforcer() {
  kill -TERM "$(enforcer_pid)"
  wait "$(cat "$W/enforcer.pid")" 2>/dev/null || true
  rm -f "$W/enforcer.pid"
}

events() {
  in_net "$PALISADE" events --server "https://127.0.0.1:$PORT" --token "$ADMIN" --ca-file "$W/ca.crt" \
    -n shop --pod cart-0 --limit 1000 "$@"
}

wait_for() { # what, seconds, command...
  local what="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS <= deadline)) || { log "timed out waiting for $what"; return 1; }
    sleep 0.1
  done
}

# event_within SECONDS PATTERN: an event line matching PATTERN reaches the service in time.
event_seen() { events | grep -qE -- "$1"; }
event_within() { wait_for "event /$2/" "$1" event_seen "$2"; }

check() { # name, command...
  local name="$1"; shift
  if "$@"; then PASSED=$((PASSED + 1)); log "ok   $name"; else FAILED+=("$name"); log "FAIL $name"; fi
}

start_service
app sleep 3600 &
echo $! >"$W/app.pid"
# The app container is up (running as its UID) before the enforcer starts.
wait_for "app container" 10 pgrep -u "$APP_UID" -x sleep
start_enforcer

check "enforcer reports its start and observable signals" event_within 10 'agent/started.*uid 1000'

app sh -c 'cp /bin/sleep /tmp/evil && /tmp/evil 2' &
check "shell reported as a denied process" event_within 5 'behavior/denied-process.*denied process (sh|dash)'
check "new executable file in /tmp (inotify)" event_within 5 'drift/new-executable-file.*/tmp/evil'
check "exec from /tmp" event_within 5 'drift/exec-from-tmp.*/tmp/evil executed from /tmp'
check "executable not in the image" event_within 5 'drift/new-executable.*/tmp/evil is not in the container image'

app /usr/bin/python3 -c 'import os; fd = os.memfd_create("payload"); os.write(fd, open("/bin/sleep", "rb").read()); os.execv(f"/proc/self/fd/{fd}", ["payload", "2"])' &
check "fileless (memfd) exec" event_within 5 'drift/fileless-exec.*runs from memory'

app sh -c 'cp /bin/sleep /tmp/gone; /tmp/gone 3 & sleep 0.5; rm /tmp/gone; wait' &
check "executable deleted after start" event_within 5 'drift/deleted-executable.*/tmp/gone'

app /usr/bin/python3 -c 'import socket, time; s = socket.socket(); s.bind(("127.0.0.1", 9999)); s.listen(); time.sleep(6)' &
check "unexpected listener" event_within 10 'behavior/unexpected-listener.*127.0.0.1:9999'

app /usr/bin/python3 -c '
import socket, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(("192.0.2.2", 8080)); srv.listen()
cli = socket.socket(); cli.bind(("192.0.2.1", 0)); cli.connect(("192.0.2.2", 8080)); conn, _ = srv.accept(); time.sleep(12)' &
check "unexpected egress" event_within 15 'behavior/unexpected-egress.*192.0.2.2:8080'
if events | grep -q 'unexpected-egress.*192.0.2.1:'; then FAILED+=("inbound connection reported as egress"); log "FAIL inbound side not reported as egress"; fi

# --- enforce: a pushed policy reaches the enforcer live and shells are killed.
cat >"$W/enforce.yaml" <<'YAML'
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: shop-no-shells}
spec:
  mode: enforce
  selector: {namespaces: [shop]}
  runtime: {drift: false, deniedProcesses: [sh, dash]}
YAML
updates_before=$(grep -c 'runtime policy updated' "$W/enforcer.log" || true)
pushed_at=$(date +%s%N)
in_net "$PALISADE" policy push -f "$W/enforce.yaml" --server "https://127.0.0.1:$PORT" --token "$ADMIN" --ca-file "$W/ca.crt" >/dev/null
policy_updated() { (($(grep -c 'runtime policy updated' "$W/enforcer.log") > updates_before)); }
check "pushed policy reaches the enforcer within 2 s" wait_for "policy update" 2 policy_updated
log "     propagation: $(( ($(date +%s%N) - pushed_at) / 1000000 )) ms"

app sh -c 'sleep 30; true' &
shell=$!
killed_in_time() {
  local deadline=$((SECONDS + 5))
  while kill -0 "$shell" 2>/dev/null; do ((SECONDS < deadline)) || return 1; sleep 0.05; done
}
check "enforce mode kills the shell" killed_in_time
check "kill reported with its action" event_within 5 'behavior/denied-process.*killed'

# --- outage: reports spool to disk, survive an enforcer restart, arrive later.
denied_count() { events | grep -c 'behavior/denied-process' || true; }
before_outage=$(denied_count)
stop_service
app sh -c 'sleep 1; true' &
check "policy service down: event spooled" wait_for spool 10 test -s "$W/state/spool.jsonl"
stop_enforcer
start_enforcer
check "restart without the service uses the cached policy" wait_for "cache" 10 grep -q 'source="cache"' "$W/enforcer.log"
start_service
more_denied() { (($(denied_count) > before_outage)); }
check "spooled events delivered after the outage" wait_for "spooled events" 15 more_denied
spooled_delivered() { [[ ! -s "$W/state/spool.jsonl" ]]; }
check "spool drained" wait_for "spool drained" 15 spooled_delivered

# --- graceful shutdown flushes what is queued.
app sh -c 'true; true' &
sleep 0.3
stop_enforcer
check "shutdown flushes pending reports" event_within 5 'agent/started'

start_enforcer
sleep 2
rss_kb=$(awk '/VmRSS/{print $2}' "/proc/$(enforcer_pid)/status")
log "     enforcer RSS: ${rss_kb} KiB"
check "enforcer RSS under 8 MiB" test "$rss_kb" -lt 8192
cpu_ticks() { awk '{print $14 + $15}' "/proc/$(enforcer_pid)/stat"; }
before=$(cpu_ticks); sleep 5; after=$(cpu_ticks)
# Idle pod, 100 ms scan interval: CPU share in hundredths of a percent.
cpu_centi=$(( (after - before) * 10000 / ($(getconf CLK_TCK) * 5) ))
log "     enforcer CPU while idle: $((cpu_centi / 100)).$(printf '%02d' $((cpu_centi % 100)))%"
check "enforcer under 1% CPU while idle" test "$cpu_centi" -lt 100

[[ -z "${PAUSE_AT_END:-}" ]] || sleep "$PAUSE_AT_END"
log ""
log "sidecar e2e: $PASSED passed, ${#FAILED[@]} failed"
if ((${#FAILED[@]})); then printf '  failed: %s\n' "${FAILED[@]}"; exit 1; fi
