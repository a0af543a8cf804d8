# shellcheck shell=bash
# Sourced by run.sh: a real control plane on 127.0.0.1 (etcd, kube-apiserver,
# kube-controller-manager) and the Palisade webhook, with generated certs.
# No scheduler or kubelet here: Pods are admitted and stored, never run
# (tests/node/node.sh adds a node). E2E_API_ADDRESS moves the apiserver off
# loopback so Pods can reach it; E2E_APISERVER_ARGS adds flags.

E2E_ETCD_PORT="${E2E_ETCD_PORT:-23790}"
E2E_API_PORT="${E2E_API_PORT:-26443}"
E2E_WEBHOOK_PORT="${E2E_WEBHOOK_PORT:-28443}"
E2E_API_ADDRESS="${E2E_API_ADDRESS:-127.0.0.1}"

gen_certs() {
  local d="$WORK/pki"
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=e2e-ca" -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  # apiserver serving cert
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$d/apiserver.key" -out "$d/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' \
    "$E2E_API_ADDRESS" >"$d/apiserver.ext"
  openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/apiserver.ext" -out "$d/apiserver.crt" 2>/dev/null
  # cluster-admin client cert
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/O=system:masters/CN=e2e-admin" \
    -keyout "$d/admin.key" -out "$d/admin.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >"$d/client.ext"
  openssl x509 -req -in "$d/admin.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/client.ext" -out "$d/admin.crt" 2>/dev/null
  # service-account token signing keys
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null

  KUBECONFIG="$WORK/admin.kubeconfig"
  export KUBECONFIG
  kubectl config set-cluster e2e --server="https://$E2E_API_ADDRESS:$E2E_API_PORT" \
    --certificate-authority="$d/ca.crt" --embed-certs >/dev/null
  kubectl config set-credentials admin --client-certificate="$d/admin.crt" \
    --client-key="$d/admin.key" --embed-certs >/dev/null
  kubectl config set-context e2e --cluster=e2e --user=admin >/dev/null
  kubectl config use-context e2e >/dev/null
}

# Background processes are tracked in pid files, not variables, because
# test cases run in subshells and may restart the webhook.
start_bg() { # name, command...
  local name="$1"; shift
  mkdir -p "$WORK/pids"
  "$@" >>"$WORK/logs/$name.log" 2>&1 &
  echo "$!" >"$WORK/pids/$name.pid"
}

stop_bg() { # name
  local pidfile="$WORK/pids/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid=$(cat "$pidfile")
  rm -f "$pidfile"
  kill -TERM "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + 20))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# Cases run in a subshell with errexit on; fail ends the case.
fail() { echo "    FAIL: $*" >&2; exit 1; }

# run_case name: runs the function of that name, records the result in
# PASSED / FAILED and prints how long it took (kept in CASE_TIMES for
# print_case_times).
CASE_TIMES=()
run_case() {
  local name="$1" rc started=$EPOCHREALTIME
  echo "--- $name"
  set +e
  case_body "$name"
  rc=$?
  set -e
  record_case "$name" "$rc" "$(elapsed_since "$started")"
}

case_body() { # name: the case in a subshell with errexit on; returns its status
  (
    set -Eeuo pipefail
    trap 'echo "    FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR
    "$1"
  )
}

elapsed_since() { # EPOCHREALTIME at the start -> seconds, one decimal
  awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}'
}

record_case() { # name, rc, seconds[, note for the times list]
  CASE_TIMES+=("$3 $1${4:+ $4}")
  if (($2 == 0)); then
    PASSED=$((PASSED + 1))
    echo "    ok ($3 s)"
  else
    FAILED+=("$1")
    echo "    failed ($3 s)"
  fi
}

# run_cases_bg name...: runs those cases one after the other in the
# background (each one's output kept until it ends); wait_cases prints and
# records every case started so.
BG_CASES=()
run_cases_bg() {
  local name
  mkdir -p "$WORK/cases"
  (
    set +e
    for name in "$@"; do
      started=$EPOCHREALTIME
      echo "--- $name (in parallel)" >"$WORK/cases/$name.out"
      case_body "$name" >>"$WORK/cases/$name.out" 2>&1
      echo "$? $(elapsed_since "$started")" >"$WORK/cases/$name.rc"
    done
  ) &
  for name in "$@"; do
    BG_CASES+=("$name:$!")
  done
}

wait_cases() {
  local entry name pid rc secs
  for entry in "${BG_CASES[@]}"; do
    name="${entry%%:*}" pid="${entry##*:}"
    wait "$pid" 2>/dev/null || true
    cat "$WORK/cases/$name.out"
    read -r rc secs <"$WORK/cases/$name.rc" 2>/dev/null || { rc=1 secs=0; }
    record_case "$name" "$rc" "$secs" "(in parallel)"
  done
  BG_CASES=()
}

print_case_times() { # wall-clock seconds of the whole run
  echo
  echo "case times (s; those in parallel overlap the others):"
  printf '  %s\n' "${CASE_TIMES[@]}"
  echo "  total $1 s"
}

# jsonpath of an object: kind/name, namespace, path.
jp() { kubectl get "$1" -n "$2" -o "jsonpath=$3"; }

wait_for() { # description, timeout seconds, command...
  local what="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "timed out waiting for $what" >&2
      return 1
    fi
    sleep 0.3
  done
}

require_free_ports() {
  local port
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port on 127.0.0.1 is in use; stop what holds it or set E2E_*_PORT" >&2
      return 1
    fi
  done
}

start_control_plane() {
  require_free_ports "$E2E_ETCD_PORT" "$((E2E_ETCD_PORT + 10))" "$E2E_API_PORT" \
    "$E2E_WEBHOOK_PORT" "$((E2E_WEBHOOK_PORT + 1))" "$((E2E_WEBHOOK_PORT + 2))"
  mkdir -p "$WORK/logs" "$WORK/etcd"
  gen_certs
  local d="$WORK/pki"
  start_bg etcd etcd --data-dir "$WORK/etcd" \
    --listen-client-urls "http://127.0.0.1:$E2E_ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$E2E_ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((E2E_ETCD_PORT + 10))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((E2E_ETCD_PORT + 10))" \
    --initial-cluster "default=http://127.0.0.1:$((E2E_ETCD_PORT + 10))" \
    --unsafe-no-fsync --quota-backend-bytes 1073741824
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$E2E_ETCD_PORT/health"

  # shellcheck disable=SC2086 # E2E_APISERVER_ARGS: flags, split on spaces
  start_bg kube-apiserver kube-apiserver \
    --etcd-servers "http://127.0.0.1:$E2E_ETCD_PORT" \
    --bind-address "$E2E_API_ADDRESS" --advertise-address "$E2E_API_ADDRESS" --secure-port "$E2E_API_PORT" \
    --tls-cert-file "$d/apiserver.crt" --tls-private-key-file "$d/apiserver.key" \
    --client-ca-file "$d/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$d/sa.pub" --service-account-signing-key-file "$d/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --authorization-mode RBAC \
    --allow-privileged=true \
    --enable-admission-plugins NamespaceLifecycle,ServiceAccount,PodSecurity,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --cert-dir "$WORK/apiserver-certs" ${E2E_APISERVER_ARGS:-}
  wait_for kube-apiserver 90 kubectl get --raw /readyz

  start_bg kube-controller-manager kube-controller-manager \
    --kubeconfig "$KUBECONFIG" --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
    --service-account-private-key-file "$d/sa.key" --root-ca-file "$d/ca.crt" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
    --controllers '*'
  wait_for "default service account" 60 kubectl get serviceaccount default -n default
}

# Starts the webhook with the given policy directory; writes its CA to
# $WORK/palisade-tls/ca.crt.
start_webhook() {
  local policies="$1"; shift
  start_bg palisade env \
    PALISADE_LISTEN="127.0.0.1:$E2E_WEBHOOK_PORT" \
    PALISADE_TLS__SELF_SIGNED_NAMES="127.0.0.1,localhost" \
    PALISADE_TLS__SELF_SIGNED_DIR="$WORK/palisade-tls" \
    PALISADE_POLICIES__DIR="$policies" \
    PALISADE_POLICIES__RELOAD_INTERVAL_SECS=1 \
    PALISADE_LOG__LEVEL="${PALISADE_LOG_LEVEL:-info}" \
    "$@" "$PALISADE_BIN" serve
  wait_for "palisade /readyz" 30 curl -fsS --cacert "$WORK/palisade-tls/ca.crt" \
    "https://127.0.0.1:$E2E_WEBHOOK_PORT/readyz"
}

stop_webhook() { stop_bg palisade; }

# Registers both webhooks against the local server.
# $1: failurePolicy (Fail|Ignore); $2: mutate port; $3: validate port.
# A second registration beside the main one (a case with its own server):
# $4: configuration name (its webhooks are then inject|validate.NAME.palisade.dev);
# $5: the server's CA file; $6: the opt-in label (key=value) it selects on.
register_webhooks() {
  local policy="$1" mport="${2:-$E2E_WEBHOOK_PORT}" vport="${3:-$E2E_WEBHOOK_PORT}"
  local config="${4:-palisade}" ca_file="${5:-$WORK/palisade-tls/ca.crt}" label="${6:-palisade.dev/inject=enabled}"
  local ca_bundle suffix=palisade.dev
  [[ "$config" == palisade ]] || suffix="$config.palisade.dev"
  ca_bundle=$(base64 -w0 <"$ca_file")
  local selector='{"matchExpressions":[{"key":"'"${label%%=*}"'","operator":"In","values":["'"${label#*=}"'"]},{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","palisade-system"]}]}'
  kubectl apply -f - >/dev/null <<YAML
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: $config
webhooks:
  - name: inject.$suffix
    clientConfig:
      url: https://127.0.0.1:$mport/mutate
      caBundle: $ca_bundle
    rules:
      - operations: [CREATE]
        apiGroups: [""]
        apiVersions: [v1]
        resources: [pods]
    namespaceSelector: $selector
    sideEffects: None
    admissionReviewVersions: [v1]
    timeoutSeconds: 5
    failurePolicy: $policy
    reinvocationPolicy: IfNeeded
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: $config
webhooks:
  - name: validate.$suffix
    clientConfig:
      url: https://127.0.0.1:$vport/validate
      caBundle: $ca_bundle
    rules:
      - operations: [CREATE, UPDATE]
        apiGroups: [""]
        apiVersions: [v1]
        resources: [pods, pods/ephemeralcontainers, replicationcontrollers, podtemplates]
      - operations: [CREATE, UPDATE]
        apiGroups: [apps]
        apiVersions: [v1]
        resources: [deployments, statefulsets, daemonsets, replicasets]
      - operations: [CREATE, UPDATE]
        apiGroups: [batch]
        apiVersions: [v1]
        resources: [jobs, cronjobs]
    namespaceSelector: $selector
    sideEffects: None
    admissionReviewVersions: [v1]
    timeoutSeconds: 5
    failurePolicy: $policy
YAML
}

stop_all() {
  local name pids=()
  # Everything but etcd together (each stop waits for its own process),
  # then etcd: an apiserver whose etcd has gone can take long to stop.
  for name in palisade palisade-chart palisade-tr kube-controller-manager kube-apiserver; do
    stop_bg "$name" &
    pids+=("$!")
  done
  wait "${pids[@]}"
  stop_bg etcd
}
