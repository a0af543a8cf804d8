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
LAUNCHER="${PALISADE_LAUNCH_BIN:-$ROOT/target/x86_64-unknown-linux-musl/release-small/palisade-launch}"
for b in "$PALISADE" "$ENFORCER" "$LAUNCHER"; do
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
# Figures for bench/RESULTS.md: kept in the work dir, published to
# PALISADE_POD_RESULTS only when every check passed.
result() { log "     $*"; printf '%s\n' "$*" >>"$W/results.txt"; }

cleanup() {
  local code=$?
  # Killing the pod's PID 1 ends every process in its PID namespace.
  [[ -n "${POD:-}" ]] && kill -KILL "$POD" 2>/dev/null
  # shellcheck disable=SC2015 # `|| true`: a process already gone is fine
  for p in "$W"/*.pid; do [[ -f "$p" ]] && kill -KILL "$(cat "$p")" 2>/dev/null || true; done
  if ((${#FAILED[@]})) || ((code != 0)); then
    log "---- enforcer log (tail)"; tail -n 40 "$W/enforcer.log" 2>/dev/null || true
    log "---- service log (tail)"; tail -n 20 "$W/service.log" 2>/dev/null || true
  fi
  umount -l "$W/merged" 2>/dev/null || true
  [[ -n "${KEEP_WORK:-}" ]] || rm -rf "$W"
}
trap cleanup EXIT

# The launcher where the injector's volume puts it: read-only for the app.
install -D -m 755 "$LAUNCHER" "$W/upper/palisade/launch/palisade-launch"
unshare --pid --fork --mount-proc --net --mount --propagation private \
  bash "$ROOT/tests/enforcer/pod.sh" "$W" >"$W/pod.log" 2>&1 &
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
    deniedProcesses: [sh, napper]
    allowedListenPorts: [8080, $PORT]
    egressAllow: ["10.0.0.0/8"]
    allowedNonDumpable: [keeper]
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

# Faster passes, heartbeats and observation batches than the defaults keep
# the suite short; detection rates and idle CPU are measured with the
# defaults at the end.
ENFORCER_SETTINGS=(PALISADE_INTERVAL_MS=100 PALISADE_HEARTBEAT_MS=500 PALISADE_OBSERVATIONS_MS=1000)
start_enforcer() {
  nsenter -t "$POD" -p -m -n -i -u setpriv --reuid=$APP_UID --regid=$APP_UID --clear-groups env \
    PALISADE_POLICY_URL="https://127.0.0.1:$PORT" PALISADE_REPORT_TOKEN="$REPORT" PALISADE_CA_FILE="$W/ca.crt" \
    PALISADE_POD_NAMESPACE=shop PALISADE_POD_NAME=cart-0 PALISADE_POD_UID=uid-cart-0 \
    PALISADE_STATE_DIR="$W/state" "${ENFORCER_SETTINGS[@]}" \
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

# The service's JSON API as the admin (for fields the CLI table leaves out).
api() { in_net curl -fsS --cacert "$W/ca.crt" -H "Authorization: Bearer $ADMIN" "https://127.0.0.1:$PORT/api/v1/$1"; }
# The CLI against the service, as the admin.
cli() { in_net "$PALISADE" "$@" --server "https://127.0.0.1:$PORT" --token "$ADMIN" --ca-file "$W/ca.crt"; }

# events [FLAG...]: extra flags for `palisade events` (the callers pass none yet).
# shellcheck disable=SC2120
events() {
  in_net "$PALISADE" events --server "https://127.0.0.1:$PORT" --token "$ADMIN" --ca-file "$W/ca.crt" \
    -n shop --pod cart-0 --limit 1000 "$@"
}

# A process's PID inside the pod's PID namespace (what the app sees).
pod_pid() { awk '/^NSpid:/{print $NF}' "/proc/$1/status"; }

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
not() { ! "$@"; }

check() { # name, command...
  local name="$1"; shift
  if "$@"; then PASSED=$((PASSED + 1)); log "ok   $name"; else FAILED+=("$name"); log "FAIL $name"; fi
}

start_service
app sleep 3600 &
echo $! >"$W/app.pid"
# The app container is up (running as its UID) before the enforcer starts.
wait_for "app container" 10 pgrep -u "$APP_UID" -x sleep
# A whole second after the image's last file: on a loaded machine the
# first baseline's walk is cut short, and what it did not reach counts as
# the image's only if its change time (in seconds) is older than the walk.
image_made=$(stat -c %Z "$W/pod-ready")
image_settled() { (($(date +%s) > image_made)); }
wait_for "the image's files to predate the enforcer" 3 image_settled
start_enforcer

# The "image" is this host's root: its first baseline walks thousands of programs.
check "enforcer reports its start and observable signals" event_within 30 'enforcer/started.*uid 1000 gid 1000'
check "an enforcer of the app's UID says no protection is off" event_seen 'enforcer/started.*protections off: none'
check "enforcer is non-dumpable: the app cannot read its memory or fds" \
  test "$(stat -c %u "/proc/$(enforcer_pid)/environ")" -eq 0
# A container started under the launcher: its coverage reaches the service
# through the enforcer. A launcher the app starts itself (not the runtime)
# cannot speak for a container; once a later genuine report has arrived,
# the forged one (sent before it, on the same socket) was refused.
app /palisade/launch/palisade-launch --container cart -- /bin/true
check "a container's launch coverage reaches the service through the enforcer" \
  event_within 10 'enforcer/prevention.*container cart: prevention (full|partial|none) \(Landlock'
app /usr/bin/python3 -c 'import subprocess; subprocess.run(["/palisade/launch/palisade-launch", "--container", "forged", "--", "/bin/true"])'
app /palisade/launch/palisade-launch --container cart-again -- /bin/true
wait_for "the second genuine report" 10 event_seen 'container cart-again: prevention'
check "a launcher the app starts cannot report for a container" not event_seen 'container forged:'

# A denied program that lives on, to prove restarts do not re-report it.
app /usr/local/bin/napper 3600 &
echo $! >"$W/napper.pid"
check "long-lived denied process reported" event_within 5 'denied process napper started'

app sh -c 'cp /bin/sleep /tmp/evil && /tmp/evil 2' &
check "shell reported as a denied process" event_within 5 'behavior/denied-process.*denied process (sh|dash)'
check "new executable file in /tmp (inotify)" event_within 5 'drift/new-executable-file.*/tmp/evil'
check "exec from /tmp" event_within 5 'drift/exec-from-tmp.*/tmp/evil executed from /tmp'
check "executable not in the image" event_within 5 'drift/new-executable.*/tmp/evil is not in the container image'

app /usr/bin/python3 -c 'import os; fd = os.memfd_create("payload"); os.write(fd, open("/bin/sleep", "rb").read()); os.execv(f"/proc/self/fd/{fd}", ["payload", "2"])' &
check "fileless (memfd) exec" event_within 5 'drift/fileless-exec.*runs from memory'

app sh -c 'cp /bin/sleep /tmp/gone; /tmp/gone 3 & sleep 0.5; rm /tmp/gone; wait' &
check "executable deleted after start" event_within 5 'drift/deleted-executable.*/tmp/gone'

# --- identity, not names: the policy denies only "sh" (and napper).
app /usr/bin/python3 -c 'import os; os.symlink("/bin/sh", "/tmp/ls"); os.execv("/tmp/ls", ["ls", "-c", "sleep 3; true"])' &
check "a symlink named ls to the shell is denied" event_within 5 'denied process ls started \(same executable as sh\)'
app busybox sh -c 'sleep 3; true' &
check "busybox sh is denied by its applet" event_within 5 'denied process busybox started \(multi-call applet sh\)'
app /usr/bin/python3 -c 'import os, shutil; shutil.copy("/bin/dash", "/var/tmp/x"); os.execv("/var/tmp/x", ["x", "-c", "sleep 3; true"])' &
check "a renamed copy of the shell is denied by content" event_within 5 'denied process x started \(same executable as sh\)'

# --- drift the old fingerprint missed: same size, mtime put back.
app /usr/bin/python3 -c '
import os
p = "/app/worker"; st = os.stat(p); data = bytearray(open(p, "rb").read()); data[-1] ^= 1
open(p, "r+b").write(bytes(data)); os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
os.execv(p, ["worker", "3"])' &
check "same-size overwrite with restored mtime is a modified executable" event_within 5 'drift/modified-executable.*/app/worker changed'

# --- code that is not the image's, run by the image's programs.
app /usr/bin/python3 -c 'open("/tmp/s.py", "w").write("import time\ntime.sleep(3)\n")'
app /usr/bin/python3 /tmp/s.py &
check "script run by an interpreter from /tmp is drift" event_within 5 'drift/script-from-tmp.*runs the script /tmp/s.py'
app cp /usr/lib/x86_64-linux-gnu/libz.so.1 /tmp/hook.so
app env LD_PRELOAD=/tmp/hook.so /bin/sleep 3 &
check "library preloaded from /tmp is drift" event_within 5 'drift/foreign-library.*/tmp/hook.so'

# --- a process that hides itself is named for what it is.
app /usr/bin/python3 -c 'import ctypes, time; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); time.sleep(4)' &
check "non-dumpable same-UID process reported as such" event_within 5 'behavior/non-dumpable-process.*made itself non-dumpable'
if events | grep -q 'different UID'; then FAILED+=("nothing is labelled different UID"); log "FAIL a same-UID process labelled different UID"; fi

# The attack from issue 21, bare: a copied shell whose LD_PRELOAD
# constructor makes it non-dumpable hides its executable even from its own
# UID, and under this audit policy it runs on (enforce stops it, below).
printf '#include <sys/prctl.h>\n__attribute__((constructor)) static void hide(void) { prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); }\n' >"$W/hide.c"
gcc -shared -fPIC -o "$W/hide.so" "$W/hide.c"
in_pod install -m 644 "$W/hide.so" "$W/merged/tmp/hide.so"
app cp /bin/dash /tmp/hsh
app env LD_PRELOAD=/tmp/hide.so /tmp/hsh -c 'sleep 4; true' &
hidden_shell=$!
sleep 1.5
# As the app's UID: an ordinary process of that UID shows its executable,
# the hidden shell does not.
as_app_readlink() { setpriv --reuid=$APP_UID --regid=$APP_UID --clear-groups readlink "/proc/$1/exe"; }
hides_from_its_own_uid() {
  local pid; pid=$(pgrep -u "$APP_UID" -x hsh | head -n 1)
  [[ -n "$pid" ]] && as_app_readlink "$(pgrep -u "$APP_UID" -f '^sleep 3600$' | head -n 1)" && not as_app_readlink "$pid"
}
check "bare: an LD_PRELOAD constructor hides a copied shell, which runs on under audit" hides_from_its_own_uid
wait "$hidden_shell" 2>/dev/null || true

# --- exec in place (fork, wait past the young window, exec) judged on the
# pass that sees it: three processes, each must be judged within 500 ms
# (re-reading known processes only every 8th pass takes up to 800 ms).
for i in 1 2 3; do
  app /usr/bin/python3 -c "
import os, time
time.sleep(2.2 + 0.35 * $i)
open('/tmp/exec-at-$i', 'w').write('%d %d' % (time.time() * 1000, os.getpid()))
os.execv('/usr/local/bin/napper', ['napper', '3', '0.$i'])" &
done
exec_judged_fast() { # i
  local at pid judged
  read -r at pid <"$W/upper/tmp/exec-at-$1"
  # By PID (an exec keeps it): the command line may be read while the exec
  # is still replacing it.
  judged=$(api "events?namespace=shop&pod=cart-0&kind=behavior&limit=1000" |
    jq -r --argjson at "$at" --argjson pid "$pid" '[.[] | select(.rule == "behavior/denied-process" and .process.pid == $pid and .timeMs >= $at)] | map(.timeMs) | min // empty')
  [[ -n "$judged" ]] || return 1
  log "     exec in place $1 judged $((judged - at)) ms after the exec"
  ((judged - at < 500))
}
sleep 3.8
for i in 1 2 3; do
  check "exec in place $i judged within 500 ms (not on every 8th pass)" wait_for "exec in place" 3 exec_judged_fast "$i"
done

app /usr/bin/python3 -c 'import socket, time; s = socket.socket(); s.bind(("127.0.0.1", 9999)); s.listen(); time.sleep(6)' &
check "unexpected listener" event_within 10 'behavior/unexpected-listener.*127.0.0.1:9999'

app /usr/bin/python3 -c '
import socket, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(("192.0.2.2", 8080)); srv.listen()
cli = socket.socket(); cli.bind(("192.0.2.1", 0)); cli.connect(("192.0.2.2", 8080)); conn, _ = srv.accept(); time.sleep(12)' &
check "unexpected egress" event_within 15 'behavior/unexpected-egress.*192.0.2.2:8080'
if events | grep -q 'unexpected-egress.*192.0.2.1:'; then FAILED+=("inbound connection reported as egress"); log "FAIL inbound side not reported as egress"; fi

# A busy pod: hundreds of connections; the one that leaves is still seen.
app /usr/bin/python3 -c '
import socket, time
srv = socket.socket(); srv.bind(("127.0.0.1", 8080)); srv.listen(1024)
conns = [socket.create_connection(("127.0.0.1", 8080)) for _ in range(400)]
peers = [srv.accept()[0] for _ in range(400)]
lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); lst.bind(("192.0.2.2", 8443)); lst.listen()
cli = socket.socket(); cli.bind(("192.0.2.1", 0)); cli.connect(("192.0.2.2", 8443)); time.sleep(8)' &
check "egress seen among 800 sockets (tables read to the end)" event_within 10 'behavior/unexpected-egress.*192.0.2.2:8443'

# A client that binds a listening port number on another address is still egress.
app /usr/bin/python3 -c '
import socket, time
srv = socket.socket(); srv.bind(("192.0.2.2", 9090)); srv.listen()
dst = socket.socket(); dst.bind(("192.0.2.2", 7070)); dst.listen()
cli = socket.socket(); cli.bind(("192.0.2.1", 9090)); cli.connect(("192.0.2.2", 7070)); time.sleep(8)' &
check "client bound to a listening port number counted as egress" event_within 10 'behavior/unexpected-egress.*192.0.2.2:7070'

app /usr/bin/python3 -c 'import socket, time; u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("192.0.2.1", 0)); u.connect(("192.0.2.2", 5353)); u.send(b"x"); time.sleep(6)' &
check "UDP egress" event_within 10 'behavior/unexpected-egress.*UDP connection to 192.0.2.2:5353'

# A short connection, closed before any socket scan: seen in TIME_WAIT.
app /usr/bin/python3 -c '
import socket
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(("192.0.2.2", 6060)); srv.listen()
c = socket.socket(); c.bind(("192.0.2.1", 0)); c.connect(("192.0.2.2", 6060)); a, _ = srv.accept(); c.close(); a.close()' &
check "short connection caught in a closing state" event_within 10 'behavior/unexpected-egress.*192.0.2.2:6060'

# --- learn, review, enforce: a learning policy reports nothing while the
# enforcer's observations reach the service; the programs learned become an
# allow-list by path and content, which stops a copied shell.
# exits_normally PID: the process ended with status 0 (not killed).
exits_normally() { wait "$1"; }
# ends_within SECONDS PID: the process is gone in time.
ends_within() {
  local deadline=$((SECONDS + $1))
  while kill -0 "$2" 2>/dev/null; do ((SECONDS < deadline)) || return 1; sleep 0.05; done
}
policy_count() { grep -c 'runtime policy updated' "$W/enforcer.log" || true; }
# push_policy FILE: pushed, and in force in the enforcer.
push_policy() {
  local before
  before=$(policy_count)
  cli policy push -f "$1" >/dev/null || return 1
  wait_for "policy update" 10 eval '(($(policy_count) > before))'
}
cat >"$W/learn.yaml" <<'YAML'
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: shop-learn}
spec:
  mode: learn
  selector: {namespaces: [shop]}
  runtime:
    drift: true
    deniedProcesses: [learned]
    allowedListenPorts: [443]
    allowedExecutables: [{path: /nothing}]
YAML
check "a learning policy reaches the enforcer" push_policy "$W/learn.yaml"
LEARNED_RUNS=3
for _ in $(seq "$LEARNED_RUNS"); do app /app/learned 1; done
app sh -c 'cp /etc/hostname /tmp/learned.txt; sleep 0.5'
app /usr/bin/python3 -c '
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.0.2.1", 8080)); s.listen(); time.sleep(3)' &
learned_listener=$!
# The pod as one workload: a Pod without a controller is its own.
workload() { api "workloads/shop/pod/cart-0"; }
learned() { workload | jq -e "$1" >/dev/null; }
check "learned: the program with its sha256, from the image, counted per run" \
  wait_for "learned executable" 20 learned "[.observed[] | select(.item.kind == \"executable\" and .item.path == \"/app/learned\" and .item.fromImage and (.item.sha256 // \"\" | test(\"^[0-9a-f]{64}\$\"))) | .count] | add >= $LEARNED_RUNS"
check "learned: the process by name, counted per run" \
  wait_for "learned process" 10 learned "[.observed[] | select(.item.kind == \"process\" and .item.name == \"learned\") | .count] | add >= $LEARNED_RUNS"
check "learned: the listener the app opened" \
  wait_for "learned listener" 10 learned 'any(.observed[]; .item.kind == "listen" and .item.protocol == "tcp" and .item.port == 8080)'
wait "$learned_listener" || true
learn_events() {
  api "events?namespace=shop&pod=cart-0&limit=10000" | jq -e 'any(.[]; .policy == "shop-learn")' >/dev/null
}
check "a learning policy reports nothing it finds (denied name, listener, executables)" not learn_events
check "no violation event for the process only the learning policy denies" not event_seen 'denied process learned'

# Review: the image programs the app ran, by path and content, as a user
# would take them from `palisade policy draft`. Without the service's
# observations (the checks above failed), the same programs are hashed
# here, so the enforcer's side is still proven.
allowed=$(workload 2>/dev/null |
  jq -c '[.observed[].item | select(.kind == "executable" and .fromImage and .sha256 != null) | {path, sha256}] | unique' 2>/dev/null || true)
if [[ -z "$allowed" || "$allowed" == "[]" ]]; then
  log "     no learned executables from the service: the app's programs hashed from the image instead"
  image_file() { if [[ -e "$W/upper$1" ]]; then echo "$W/upper$1"; else echo "$1"; fi; }
  allowed=$(for p in /bin/sh /usr/bin/cp /usr/bin/sleep /usr/bin/python3 /usr/local/bin/napper /app/learned; do
    real=$(readlink -f "$p")
    jq -nc --arg path "$real" --arg sha "$(sha256sum "$(image_file "$real")" | cut -d' ' -f1)" '{path: $path, sha256: $sha}'
  done | jq -sc .)
fi
identity_policy() { # zeroDrift
  cat >"$W/identity.yaml" <<YAML
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: shop-identity}
spec:
  mode: enforce
  selector: {namespaces: [shop]}
  runtime: {drift: false, zeroDrift: $1, allowedExecutables: $allowed}
YAML
}
identity_policy false
check "an enforcing allow-list of the learned executables reaches the enforcer" push_policy "$W/identity.yaml"
app /app/learned 1 &
check "a listed program runs on" exits_normally $!
check "the app's programs already running are left running (re-judged, listed)" \
  kill -0 "$(cat "$W/app.pid")" "$(cat "$W/napper.pid")"
refusals() { # message pattern: killed executable-not-allowed events whose message matches
  api "events?namespace=shop&pod=cart-0&kind=behavior&limit=10000" |
    jq --arg m "$1" '[.[] | select(.rule == "behavior/executable-not-allowed" and .action == "killed" and (.message | test($m)))] | length'
}
app sh -c 'cp /bin/sh /tmp/x && exec /tmp/x -c "sleep 20; true"' &
check "a copy of a listed shell in /tmp is stopped" ends_within 5 $!
check "its stop is reported as behavior/executable-not-allowed" \
  event_within 5 'behavior/executable-not-allowed +killed +executable /tmp/x is not on the allowed list and not from the image'
identity_policy true
check "zeroDrift on the same allow-list reaches the enforcer" push_policy "$W/identity.yaml"
app /srv/tools/x/y/z/bin/tool2 1 &
check "with zeroDrift, an image program not on the list runs on" exits_normally $!
app sh -c 'cp /bin/sh /tmp/x && exec /tmp/x -c "sleep 20; true"' &
check "with zeroDrift, the copied shell is still stopped" ends_within 5 $!
check "and reported again" wait_for "second refusal" 5 eval '(($(refusals "^executable /tmp/x ") >= 2))'
app sh -c 'cp /bin/sh /app/learned && exec /app/learned -c "sleep 20; true"' &
check "a shell copied over a listed program is stopped by its content" ends_within 5 $!
check "its stop names the content" \
  event_within 5 'behavior/executable-not-allowed +killed +executable /app/learned is not the listed content'
cli policy delete shop-identity >/dev/null || true
cli policy delete shop-learn >/dev/null || true
# The next section counts policy updates: both deletions are in force first.
learning_policies_gone() { ! grep -qE '"shop-(identity|learn)"' "$W/state/policy.json"; }
wait_for "the enforcer to drop both policies" 10 learning_policies_gone || true

# --- enforce: a pushed policy reaches the enforcer live and shells are killed,
# including one that started (and was reported) under audit.
app sh -c 'sleep 60; true' &
audit_shell=$!
sleep 0.5
cat >"$W/enforce.yaml" <<'YAML'
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: shop-no-shells}
spec:
  mode: enforce
  selector: {namespaces: [shop]}
  runtime: {drift: false, deniedProcesses: [sh, dash], allowedNonDumpable: [keeper]}
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
gone_in_time() {
  local deadline=$((SECONDS + 5))
  while kill -0 "$audit_shell" 2>/dev/null; do ((SECONDS < deadline)) || return 1; sleep 0.05; done
}
check "a shell allowed under audit is re-judged and killed once enforce arrives" gone_in_time
check "kill reported with its action" event_within 5 'behavior/denied-process.*killed'

# --- a PolicyException, pushed to the policy service (versioned, admin only),
# reaches the enforcer in its bundle: a shell is reported as excepted and left
# running until the exception expires, during the test; then enforce stops it.
expires=$(date -u -d '+12 seconds' +%Y-%m-%dT%H:%M:%SZ)
cat >"$W/exception.yaml" <<YAML
apiVersion: palisade.dev/v1alpha1
kind: PolicyException
metadata: {name: shop-shell-ok}
spec:
  policy: shop-no-shells
  rules: [behavior/denied-process]
  selector: {namespaces: [shop]}
  expiresAt: "$expires"
  reason: migration script
  owner: shop-team
YAML
exception_listed() { # state pattern
  cli exception list | grep -qE "^shop-shell-ok +shop-no-shells +behavior/denied-process +$1 +$expires +shop-team +api"
}
updates_before=$(grep -c 'runtime policy updated' "$W/enforcer.log" || true)
check "a PolicyException is pushed to the service" cli exception push -f "$W/exception.yaml"
check "a PolicyException reaches the enforcer" wait_for "exception in the bundle" 10 policy_updated
check "the exception is listed as expiring (within 7 days)" exception_listed expiring
app sh -c 'sleep 60; true' &
shell=$!
check "an excepted shell is reported as excepted" \
  event_within 5 "behavior/denied-process.*excepted by PolicyException shop-shell-ok \\(owner shop-team; until $expires"
excepted_in_api() {
  api "events?namespace=shop&pod=cart-0&kind=behavior&limit=1000" \
    | jq -e 'any(.[]; .exception == "shop-shell-ok" and .action == null)' >/dev/null
}
check "the stored event names its exception (typed, for PolicyReports)" excepted_in_api
sleep 1
check "an excepted shell is not killed under enforce" kill -0 "$shell"
past_expiry() { (($(date +%s) > $(date -d "$expires" +%s))); }
wait_for "the exception's expiry" 20 past_expiry
check "once the exception has expired, enforce stops the shell it let run" killed_in_time
check "the kill names the expired exception" \
  event_within 5 'behavior/denied-process.*PolicyException shop-shell-ok .*has expired'
check "the exception is listed as expired" exception_listed expired
check "the exception is deleted" cli exception delete shop-shell-ok

# --- enforce against what hides and against false drift: a second
# enforcing policy with drift on, a listen allow-list, and one name that
# may hide. `keeper` is allowed to hide by every policy.
cat >"$W/deep.yaml" <<YAML
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: shop-deep}
spec:
  mode: enforce
  selector: {namespaces: [shop]}
  runtime: {drift: true, allowedListenPorts: [8080, $PORT], allowedNonDumpable: [keeper]}
YAML
updates_before=$(grep -c 'runtime policy updated' "$W/enforcer.log" || true)
cli policy push -f "$W/deep.yaml" >/dev/null
check "an enforcing drift policy reaches the enforcer" wait_for "policy update" 5 policy_updated
sleep 0.5
app /app/vendor/a/b/c/bin/tool 2 &
deep_tool=$!
app /srv/tools/x/y/z/bin/tool2 2 &
deep_tool2=$!
check "an image program five directories deep runs to its end under enforce" exits_normally "$deep_tool"
check "an image program deep outside the program directories runs to its end" exits_normally "$deep_tool2"
check "neither is reported as drift" not event_seen 'drift/.*(vendor/a/b/c/bin/tool|tools/x/y/z/bin/tool2)'
# The same place, a program that is not the image's: stopped (the policy is live).
app /usr/bin/python3 -c 'import os, shutil; p = "/app/vendor/a/b/c/bin/dropped"; shutil.copy("/bin/sleep", p); os.execv(p, ["dropped", "20"])' &
shell=$!
check "a program dropped next to them is drift and stopped" killed_in_time
check "its kill is reported" event_within 5 'drift/new-executable +killed .*/app/vendor/a/b/c/bin/dropped is not in the container image'

# Hiding after it was judged: an image program turns non-dumpable.
app /usr/bin/python3 -c 'import ctypes, time; time.sleep(1); ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); time.sleep(20)' &
shell=$!
check "a process that hides after it was judged is stopped" killed_in_time
check "the stop of a hidden process is reported with its action" event_within 5 'behavior/non-dumpable-process +killed'
# The attack of issue 21 against enforce: five hidden copied shells.
hidden_shells=()
for _ in 1 2 3 4 5; do
  app env LD_PRELOAD=/tmp/hide.so /tmp/hsh -c 'sleep 20; true' &
  hidden_shells+=($!)
done
all_hidden_shells_gone() {
  local deadline=$((SECONDS + 5)) pid
  for pid in "${hidden_shells[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do ((SECONDS < deadline)) || return 1; sleep 0.05; done
  done
}
check "all five hidden copied shells are stopped under enforce" all_hidden_shells_gone

# A credential change hides a process until its next exec (the runtime's
# init between taking the container's user and starting its command,
# setpriv, su): given its moment, it is not stopped.
in_pod chroot "$W/merged" /usr/bin/python3 -c '
import os, time
os.setgroups([]); os.setgid(1000); os.setuid(1000); time.sleep(1); os.execv("/bin/sleep", ["sleep", "1"])' &
check "a process that just changed to the app's UID is left its moment to exec" exits_normally $!

# A name the policies allow to hide runs on; its unlisted listener does not.
app /usr/bin/python3 -c '
import ctypes, socket, time
libc = ctypes.CDLL(None); libc.prctl(15, b"keeper", 0, 0, 0); libc.prctl(4, 0, 0, 0, 0)
time.sleep(2.5)
s = socket.socket(); s.bind(("127.0.0.1", 9998)); s.listen(); time.sleep(20)' &
shell=$!
sleep 2
check "a process allowed to hide is not stopped for hiding" kill -0 "$shell"
check "nor reported for it" not event_seen 'non-dumpable-process.*keeper'
check "its listener on an unlisted port gets it stopped" killed_in_time
check "the hidden listener's stop is reported" event_within 5 'behavior/unexpected-listener +killed.*127.0.0.1:9998'
# listen() on a socket that was never bound takes an ephemeral port: no bind
# for Landlock to check, so the launcher lets it through even with a listen
# allow-list (make e2e-launcher notes it); the enforcer judges the listener
# like any other and stops its owner. (After a pause: the socket tables are
# read when the pod's socket counts move, checked every second, else every
# 10 s; a listener replacing the one just closed moves no count.)
sleep 2
app env PALISADE_LAUNCH_POLICY='{"enforceNetwork": true, "allowedListenPorts": [8080]}' \
  /palisade/launch/palisade-launch -- /usr/bin/python3 -c '
import socket, time
s = socket.socket(); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(20)' >"$W/unbound.port" &
shell=$!
check "under the launcher, listen() without bind() opens an ephemeral port" \
  wait_for "the unbound listener" 5 test -s "$W/unbound.port"
check "that listener on an unlisted port gets its owner stopped under enforce" killed_in_time
check "its stop is reported with the ephemeral port" \
  event_within 5 "behavior/unexpected-listener +killed.*:$(cat "$W/unbound.port" 2>/dev/null || echo none)"
updates_before=$(grep -c 'runtime policy updated' "$W/enforcer.log" || true)
cli policy delete shop-deep >/dev/null
wait_for "policy update" 5 policy_updated || true

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

# --- SIGKILL right after an event is logged: it is already on disk.
before_kill=$(denied_count)
stop_service
logged_before=$(grep -c 'denied process sh' "$W/enforcer.log" || true)
app sh -c 'sleep 1; true' &
logged() { (($(grep -c 'denied process sh' "$W/enforcer.log") > logged_before)); }
wait_for "event logged" 10 logged || true
kill -KILL "$(enforcer_pid)"; wait "$(cat "$W/enforcer.pid")" 2>/dev/null || true
# While the enforcer is down, the app drops and runs a program of its own.
app sh -c 'cp /bin/sleep /app/dropped; exec /app/dropped 120' &
sleep 0.5
start_service
start_enforcer
after_kill() { (($(denied_count) > before_kill)); }
check "event logged just before SIGKILL delivered after restart" wait_for "killed enforcer's event" 15 after_kill
check "program dropped while the enforcer was down is still drift (baseline kept)" \
  event_within 10 'drift/new-executable.*/app/dropped is not in the container image'
napper_reports() {
  api "events?namespace=shop&pod=cart-0&kind=behavior&limit=10000" |
    jq '[.[] | select(.process.cmdline == ["/usr/local/bin/napper", "3600"])] | length'
}
check "a restart does not re-report live processes (stable ids)" test "$(napper_reports)" -eq 1

# --- the service notices an enforcer that is stopped, and its return.
missing_count() { events | grep -c 'enforcer/missing' || true; }
missing_before=$(missing_count)
more_missing() { (($(missing_count) > missing_before)); }
kill -STOP "$(enforcer_pid)"
check "stopped enforcer reported missing" wait_for "enforcer/missing" 10 more_missing
# nsenter stops itself when its child stops; continuing it continues both.
kill -CONT "$(cat "$W/enforcer.pid")" "$(enforcer_pid)"
check "its return is noted" event_within 10 'enforcer/returned.*resumed'

# --- graceful shutdown flushes what is queued.
app sh -c 'true; true' &
sleep 0.3
stop_enforcer
check "shutdown flushes pending reports" event_within 5 'enforcer/started'
check "a stopping enforcer says so and why" event_within 5 'enforcer/stopped.*SIGTERM'

# --- an enforcer that cannot see the app says which protections are off:
# it runs as 65532, the app as 1000 (the main enforcer is stopped).
BLIND_UID=65532
install -d -o "$BLIND_UID" -g "$BLIND_UID" "$W/state-blind"
nsenter -t "$POD" -p -m -n -i -u setpriv --reuid=$BLIND_UID --regid=$BLIND_UID --clear-groups env \
  PALISADE_POLICY_URL="https://127.0.0.1:$PORT" PALISADE_REPORT_TOKEN="$REPORT" PALISADE_CA_FILE="$W/ca.crt" \
  PALISADE_POD_NAMESPACE=shop PALISADE_POD_NAME=cart-blind PALISADE_POD_UID=uid-cart-blind \
  PALISADE_STATE_DIR="$W/state-blind" PALISADE_INTERVAL_MS=100 PALISADE_HEARTBEAT_MS=500 \
  "$ENFORCER" >>"$W/enforcer-blind.log" 2>&1 &
echo $! >"$W/enforcer-blind.pid"
blind_events() {
  in_net "$PALISADE" events --server "https://127.0.0.1:$PORT" --token "$ADMIN" --ca-file "$W/ca.crt" \
    -n shop --pod cart-blind --limit 1000
}
blind_seen() { blind_events | grep -qE -- "$1"; }
check "a blind enforcer's start says drift is off, and why" \
  wait_for "blind start" 30 blind_seen 'enforcer/started.*protections off: drift \(processes of uid 1000 \(the enforcer runs as uid 65532\): executables, container roots'
check "it says stopping is off too" blind_seen 'enforcer/started.*stopping \(processes of uid 1000 .*signals need the same UID'
blind_heartbeat() {
  api enforcers | jq -e 'any(.[]; .pod.name == "cart-blind" and any(.protectionsOff[]?; .protection == "drift" and (.reason | test("uid 1000"))))' >/dev/null
}
check "its heartbeat carries the protections that are off" wait_for "blind heartbeat" 10 blind_heartbeat
# A later process of yet another UID changes what is off.
in_pod chroot "$W/merged" setpriv --reuid=2000 --regid=2000 --clear-groups sleep 8 &
check "a later process of another UID changes the list, reported as it happens" \
  wait_for "protections change" 10 blind_seen 'enforcer/protections-changed.*drift \(processes of uid 1000, 2000'
blind_heartbeat_2000() {
  api enforcers | jq -e 'any(.[]; .pod.name == "cart-blind" and any(.protectionsOff[]?; .protection == "drift" and (.reason | test("uid 1000, 2000"))))' >/dev/null
}
check "and the heartbeat says so" wait_for "blind heartbeat" 10 blind_heartbeat_2000
kill -TERM "$(pgrep -P "$(cat "$W/enforcer-blind.pid")" | head -n 1)"
wait "$(cat "$W/enforcer-blind.pid")" 2>/dev/null || true
rm -f "$W/enforcer-blind.pid"

# --- short-lived processes: judged or at least counted, never silent.
unobserved_total() { api enforcers | jq '[.[] | select(.pod.name == "cart-0") | .unobserved] | add // 0'; }
napper_events() { api "events?namespace=shop&pod=cart-0&kind=behavior&limit=10000" | jq '[.[] | select(.process.comm == "napper")] | length'; }
# detection_round MS COUNT: runs COUNT napper processes of MS each, one
# after another; prints "judged noticed" (noticed = judged + counted).
detection_round() {
  local ms="$1" n="$2" judged0 unobs0 judged1 unobs1
  judged0=$(napper_events); unobs0=$(unobserved_total)
  app /usr/bin/python3 -c "
import subprocess, time
for _ in range($n):
    subprocess.run(['/usr/local/bin/napper', '$(awk "BEGIN{print $ms/1000}")'])
    time.sleep(0.03)"
  sleep 2
  judged1=$(napper_events); unobs1=$(unobserved_total)
  local judged=$((judged1 - judged0)) counted=$((unobs1 - unobs0))
  local noticed=$((judged + counted)); ((noticed > n)) && noticed=$n
  echo "$judged $noticed"
}
# (the enforcer was stopped above)
ENFORCER_SETTINGS=(PALISADE_HEARTBEAT_MS=1000)   # defaults, but counts reach the service each second
start_enforcer
wait_for "enforcer restart" 10 pgrep -P "$(cat "$W/enforcer.pid")"
sleep 2
read -r judged20 noticed20 < <(detection_round 20 100)
result "20 ms processes: $judged20/100 judged, $noticed20/100 noticed (default settings)"
check ">= 99% of 20 ms processes noticed" test "$noticed20" -ge 99
if [[ -n "${PALISADE_DETECTION_TABLE:-}" ]]; then
  result ""
  result "| lifetime | processes | judged | noticed (judged or counted) |"
  result "| --- | ---: | ---: | ---: |"
  for spec in "5 200" "20 200" "50 200" "200 50" "1000 20"; do
    read -r ms n <<<"$spec"
    read -r j c < <(detection_round "$ms" "$n")
    result "| $ms ms | $n | $((j * 100 / n)) % | $((c * 100 / n)) % |"
  done
  result ""
fi

# --- resource limits: the app's UID can prlimit the enforcer (bare, it
# works: the launcher's seccomp filter is what refuses it); the enforcer
# notices and reports it.
app prlimit --pid "$(pod_pid "$(enforcer_pid)")" --nofile=64:64 || true
check "bare: the app's UID lowers the enforcer's open-file limit with prlimit" \
  grep -qE '^Max open files +64 +64 ' "/proc/$(enforcer_pid)/limits"
check "the enforcer reports its limit changed, naming the limit and both values" \
  event_within 5 'enforcer/limits-changed.*RLIMIT_NOFILE of the enforcer changed from [0-9]+/[0-9]+ to 64/64'

stop_enforcer
ENFORCER_SETTINGS=()   # all defaults: 250 ms passes, 10 s heartbeats
start_enforcer
sleep 2
rss_kb=$(awk '/VmRSS/{print $2}' "/proc/$(enforcer_pid)/status")
result "enforcer RSS: ${rss_kb} KiB"
check "enforcer RSS under 8 MiB" test "$rss_kb" -lt 8192
cpu_ticks() { awk '{print $14 + $15}' "/proc/$(enforcer_pid)/stat"; }
before=$(cpu_ticks); sleep 10; after=$(cpu_ticks)
# Idle pod, default settings: CPU share in hundredths of a percent.
cpu_centi=$(( (after - before) * 10000 / ($(getconf CLK_TCK) * 10) ))
result "enforcer CPU while idle (default settings, 10 s): $((cpu_centi / 100)).$(printf '%02d' $((cpu_centi % 100)))%"
check "enforcer under 1% CPU while idle" test "$cpu_centi" -lt 100

# ======================================================================
# Exec churn (PALISADE_CHURN_TABLE=1, `make bench-detection`): the
# enforcer's CPU while the app starts short-lived processes, with many
# processes already in the pod. A new process must cost the same however
# many are already there. Measured as the enforcer's own CPU time
# (utime + stime, all its threads): other load on the machine barely moves
# it, unlike a wall-clock share. The enforcer runs with the defaults the
# injector gives it.
# ======================================================================
if [[ -n "${PALISADE_CHURN_TABLE:-}" ]]; then
  CHURN_SECONDS="${PALISADE_CHURN_SECONDS:-10}"
  [[ -f "$W/enforcer.pid" ]] && stop_enforcer
  ENFORCER_SETTINGS=()
  start_enforcer
  wait_for "enforcer restart" 10 pgrep -P "$(cat "$W/enforcer.pid")"
  churn_ticks() { awk '{print $14 + $15}' "/proc/$(enforcer_pid)/stat"; }
  # churn_hold N: N sleeping processes in the app container until
  # /tmp/churn-release appears (the holder then ends them itself).
  churn_hold() {
    app rm -f /tmp/churn-release
    app /usr/bin/python3 -c "
import os, time
kids = []
for _ in range($1):
    pid = os.fork()
    if pid == 0:
        os.execv('/bin/sleep', ['sleep', '3601'])
    kids.append(pid)
while not os.path.exists('/tmp/churn-release'):
    time.sleep(0.2)
for pid in kids:
    os.kill(pid, 9)
for pid in kids:
    os.waitpid(pid, 0)" &
    echo $! >"$W/churn-hold.pid"
  }
  churn_held() { (($(pgrep -u "$APP_UID" -f '^sleep 3601$' | wc -l) >= $1)); }
  churn_release() {
    app touch /tmp/churn-release
    wait "$(cat "$W/churn-hold.pid")" 2>/dev/null || true
    rm -f "$W/churn-hold.pid"
  }
  # churn_round RATE: RATE short-lived processes (/bin/sleep 0.01) a
  # second for CHURN_SECONDS, started on a fixed schedule; prints the
  # enforcer's CPU in hundredths of a percent and how many were started.
  churn_round() {
    local rate="$1" before after t0 t1 started
    before=$(churn_ticks); t0=$(date +%s%N)
    started=$(app /usr/bin/python3 -c "
import subprocess, time
rate, seconds = $rate, $CHURN_SECONDS
t0 = time.monotonic(); n = 0; running = []
while True:
    now = time.monotonic()
    if now - t0 >= seconds:
        break
    if rate == 0:
        time.sleep(seconds - (now - t0)); continue
    due = t0 + n / rate
    if now < due:
        time.sleep(due - now)
    running.append(subprocess.Popen(['/bin/sleep', '0.01']))
    n += 1
    running = [p for p in running if p.poll() is None]
for p in running:
    p.wait()
print(n)")
    after=$(churn_ticks); t1=$(date +%s%N)
    # ticks / CLK_TCK seconds of CPU over (t1 - t0) ns of wall time, x 10^4.
    echo "$(( (after - before) * 10000 * 1000000000 / ($(getconf CLK_TCK) * (t1 - t0)) )) $started"
  }
  centi() { echo "$(($1 / 100)).$(printf '%02d' $(($1 % 100)))"; }
  result ""
  result "Exec churn: enforcer CPU (default settings) while the app starts short-lived processes (/bin/sleep 0.01) for ${CHURN_SECONDS} s, with N other processes in the pod:"
  result ""
  result "| processes in the pod | new processes/s | started | enforcer CPU |"
  result "| ---: | ---: | ---: | ---: |"
  for held in 200 1000; do
    churn_hold "$held"
    wait_for "$held processes in the pod" 60 churn_held "$held"
    sleep 3   # the enforcer has judged them all
    for rate in 0 20 100; do
      read -r cpu started < <(churn_round "$rate")
      result "| $held | $rate | $started | $(centi "$cpu") % |"
      # The targets (issue 21) are set at 200; 1,000 shows what the pod's
      # size still costs (old processes re-read once an interval while
      # exec signals come, see sidecar/enforcer/src/schedule.rs).
      case "$held/$rate" in
        200/20) check "exec churn at 20/s with 200 processes: enforcer under 3% CPU" test "$cpu" -le 300 ;;
        200/100) check "exec churn at 100/s with 200 processes: enforcer under 10% CPU" test "$cpu" -le 1000 ;;
      esac
    done
    churn_release
  done
fi

[[ -z "${PAUSE_AT_END:-}" ]] || sleep "$PAUSE_AT_END"
log ""
log "enforcer e2e: $PASSED passed, ${#FAILED[@]} failed"
if ((${#FAILED[@]})); then printf '  failed: %s\n' "${FAILED[@]}"; exit 1; fi
if [[ -n "${PALISADE_POD_RESULTS:-}" ]]; then
  mkdir -p "$(dirname "$PALISADE_POD_RESULTS")"
  cp "$W/results.txt" "$PALISADE_POD_RESULTS"
fi
