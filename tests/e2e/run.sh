#!/usr/bin/env bash
# End-to-end: Palisade registered as mutating and validating webhooks with a
# real kube-apiserver (etcd, kube-controller-manager) on 127.0.0.1.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE_DIR="${PALISADE_E2E_CACHE:-$HOME/.cache/palisade-e2e}"
export PATH="$CACHE_DIR/bin:$PATH"
PALISADE_BIN="${PALISADE_BIN:-$ROOT/target/release/palisade}"
WORK="$(mktemp -d /tmp/palisade-e2e.XXXXXX)"
POLICIES="$WORK/policies"

# shellcheck source=tests/e2e/cluster.sh
source "$ROOT/tests/e2e/cluster.sh"

PASSED=0
FAILED=()

finish() {
  local code=$?
  stop_all
  if ((${#FAILED[@]})) || ((code != 0)); then
    echo "---- logs (tail) ----"
    for f in "$WORK"/logs/*.log; do
      echo "== $f"
      tail -n 25 "$f"
    done
  fi
  [[ -n "${KEEP_WORK:-}" ]] || rm -rf "$WORK"
}
trap finish EXIT

# Cases run in a subshell with errexit on; fail ends the case.
fail() { echo "    FAIL: $*" >&2; exit 1; }

# run_case name: runs the function of that name, records the result.
run_case() {
  local name="$1"
  echo "--- $name"
  local rc
  set +e
  (
    set -Eeuo pipefail
    trap 'echo "    FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR
    "$name"
  )
  rc=$?
  set -e
  if ((rc == 0)); then
    PASSED=$((PASSED + 1))
    echo "    ok"
  else
    FAILED+=("$name")
  fi
}

# jsonpath of an object: get kind/name namespace path
jp() { kubectl get "$1" -n "$2" -o "jsonpath=$3"; }

new_namespace() { # name, opted-in (yes|no), extra labels...
  local ns="$1" opt="$2"; shift 2
  kubectl create namespace "$ns" >/dev/null
  if [[ "$opt" == yes ]]; then
    kubectl label namespace "$ns" palisade.dev/inject=enabled >/dev/null
  fi
  if (($#)); then
    kubectl label namespace "$ns" "$@" >/dev/null
  fi
  wait_for "default service account in $ns" 30 kubectl get serviceaccount default -n "$ns"
}

# A pod that passes Pod Security "restricted" on its own.
restricted_pod() { # name, image
  cat <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $1
  labels: {app: $1}
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: app
      image: ${2:-registry.k8s.io/pause:3.10}
      securityContext:
        allowPrivilegeEscalation: false
        capabilities: {drop: [ALL]}
YAML
}

# ---------------------------------------------------------------- cases

case_opted_in_pod_gets_sidecar_and_limits() {
  restricted_pod web | kubectl apply -n e2e-in -f - >/dev/null
  local names
  names=$(jp pod/web e2e-in '{.spec.containers[*].name}')
  [[ "$names" == "app palisade-enforcer" ]] || fail "containers: $names"
  [[ $(jp pod/web e2e-in '{.spec.shareProcessNamespace}') == true ]] || fail "shareProcessNamespace"
  [[ $(jp pod/web e2e-in '{.spec.containers[0].resources.limits.memory}') == 512Mi ]] || fail "default memory limit"
  [[ $(jp pod/web e2e-in '{.spec.containers[1].securityContext.runAsUser}') == 1000 ]] || fail "sidecar runs as the app UID"
  jp pod/web e2e-in '{.metadata.annotations.palisade\.dev/status}' | jq -e '.sidecar == "palisade-enforcer"' >/dev/null \
    || fail "status annotation"
}

case_other_namespace_is_untouched() {
  restricted_pod web | kubectl apply -n e2e-out -f - >/dev/null
  [[ $(jp pod/web e2e-out '{.spec.containers[*].name}') == app ]] || fail "pod was mutated"
  [[ -z $(jp pod/web e2e-out '{.metadata.annotations.palisade\.dev/status}') ]] || fail "status annotation added"
}

case_opt_out_annotation() {
  restricted_pod optout | sed 's/^  labels:/  annotations: {palisade.dev\/inject: "false"}\n  labels:/' \
    | kubectl apply -n e2e-in -f - >/dev/null
  [[ $(jp pod/optout e2e-in '{.spec.containers[*].name}') == app ]] || fail "opted-out pod was injected"
}

case_deployment_pods_get_sidecar() {
  kubectl apply -n e2e-in -f - >/dev/null <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - name: api
          image: registry.k8s.io/pause:3.10
YAML
  wait_for "2 api pods" 60 bash -c \
    "[[ \$(kubectl get pods -n e2e-in -l app=api -o name | wc -l) -eq 2 ]]"
  local pod
  for pod in $(kubectl get pods -n e2e-in -l app=api -o name); do
    [[ $(jp "$pod" e2e-in '{.spec.containers[*].name}') == "api palisade-enforcer" ]] \
      || fail "$pod lacks the sidecar"
    [[ $(jp "$pod" e2e-in '{.spec.containers[0].resources.limits.cpu}') == 1 ]] || fail "$pod limits"
  done
  # The stored Deployment itself is unchanged: injection happens at Pod creation.
  [[ $(jp deploy/api e2e-in '{.spec.template.spec.containers[*].name}') == api ]] || fail "template mutated"
}

case_job_and_statefulset_pods_get_sidecar() {
  kubectl apply -n e2e-in -f - >/dev/null <<'YAML'
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    metadata: {labels: {app: once}}
    spec:
      restartPolicy: Never
      containers: [{name: task, image: registry.k8s.io/pause:3.10}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: registry.k8s.io/pause:3.10}]
YAML
  wait_for "job pod" 60 bash -c "kubectl get pods -n e2e-in -l app=once -o name | grep -q pod/"
  wait_for "statefulset pod" 60 kubectl get pod db-0 -n e2e-in
  [[ $(kubectl get pods -n e2e-in -l app=once -o 'jsonpath={.items[0].spec.containers[*].name}') == "task palisade-enforcer" ]] \
    || fail "job pod lacks the sidecar"
  [[ $(jp pod/db-0 e2e-in '{.spec.containers[*].name}') == "db palisade-enforcer" ]] || fail "statefulset pod"
}

case_privileged_pod_is_denied_with_rule_and_path() {
  local out
  if out=$(kubectl run priv -n e2e-in --image=registry.k8s.io/pause:3.10 \
      --overrides='{"spec":{"containers":[{"name":"priv","image":"registry.k8s.io/pause:3.10","securityContext":{"privileged":true}}]}}' 2>&1); then
    fail "privileged pod admitted"
  fi
  grep -q 'podSecurity/privileged: spec.containers\[0\].securityContext.privileged' <<<"$out" \
    || fail "message lacks rule/path: $out"
  grep -q 'denied the request' <<<"$out" || fail "not a webhook denial: $out"
}

apply_latest_dry_run() {
  restricted_pod latest-probe busybox:latest | kubectl apply -n e2e-in --dry-run=server -f -
}

case_latest_denied_in_enforce_warned_in_audit() {
  local out
  if out=$(restricted_pod latest busybox:latest | kubectl apply -n e2e-in -f - 2>&1); then
    fail "latest admitted in enforce mode"
  fi
  grep -q 'images/disallowedTags: spec.containers\[0\].image' <<<"$out" || fail "$out"
  # Switch the policy to audit; the webhook reloads it without restart.
  sed -i 's/mode: enforce/mode: audit/' "$POLICIES/image-tags.yaml"
  wait_for "audit mode" 15 apply_latest_dry_run
  out=$(restricted_pod latest busybox:latest | kubectl apply -n e2e-in -f - 2>&1) || fail "audit denied: $out"
  grep -q 'Warning: palisade audit: \[image-tags\] images/disallowedTags' <<<"$out" || fail "no warning: $out"
  sed -i 's/mode: audit/mode: enforce/' "$POLICIES/image-tags.yaml"
  wait_for "enforce mode again" 15 latest_is_denied
}

latest_is_denied() { ! apply_latest_dry_run >/dev/null 2>&1; }

case_deployment_template_is_validated() {
  local out
  if out=$(kubectl create deployment bad -n e2e-in --image=nginx:latest 2>&1); then
    fail "deployment with :latest admitted"
  fi
  grep -q 'spec.template.spec.containers\[0\].image' <<<"$out" || fail "$out"
}

case_server_dry_run_is_mutated_and_not_stored() {
  local out
  out=$(restricted_pod dry | kubectl apply -n e2e-in --dry-run=server -o json -f -)
  jq -e '[.spec.containers[].name] == ["app","palisade-enforcer"]' <<<"$out" >/dev/null || fail "dry-run not mutated"
  if kubectl get pod dry -n e2e-in >/dev/null 2>&1; then fail "dry-run pod stored"; fi
}

case_restricted_psa_accepts_mutated_pod() {
  restricted_pod strict | kubectl apply -n e2e-psa -f - >/dev/null \
    || fail "PSA restricted rejected the injected pod"
  [[ $(jp pod/strict e2e-psa '{.spec.containers[*].name}') == "app palisade-enforcer" ]] || fail "not injected"
}

case_reapply_is_idempotent() {
  # kubectl's client-side apply always sends a patch (it re-states the
  # container order) and prints "configured"; what matters is that the
  # stored pod does not change: same resourceVersion, one sidecar.
  local before after
  before=$(jp pod/web e2e-in '{.metadata.resourceVersion} {.spec.containers[*].name}')
  restricted_pod web | kubectl apply -n e2e-in -f - >/dev/null
  after=$(jp pod/web e2e-in '{.metadata.resourceVersion} {.spec.containers[*].name}')
  [[ "$before" == "$after" ]] || fail "re-apply changed the pod: $before -> $after"
  [[ "$after" == *" app palisade-enforcer" ]] || fail "containers: $after"
}

case_native_sidecar_for_jobs() {
  stop_webhook
  start_webhook "$POLICIES" PALISADE_INJECTION__NATIVE_SIDECAR=true
  register_webhooks Fail
  restricted_pod native | kubectl apply -n e2e-in -f - >/dev/null
  [[ $(jp pod/native e2e-in '{.spec.initContainers[0].name}') == palisade-enforcer ]] || fail "not an init container"
  [[ $(jp pod/native e2e-in '{.spec.initContainers[0].restartPolicy}') == Always ]] || fail "restartPolicy"
  stop_webhook
  start_webhook "$POLICIES"
  register_webhooks Fail
}

case_webhook_down_failure_policy() {
  local out
  stop_webhook
  # Fail: nothing is admitted without Palisade.
  if out=$(restricted_pod down1 | kubectl apply -n e2e-in -f - 2>&1); then fail "admitted with webhook down (Fail)"; fi
  grep -q 'failed calling webhook' <<<"$out" || fail "$out"
  # Ignore: admitted, without the sidecar.
  register_webhooks Ignore
  restricted_pod down2 | kubectl apply -n e2e-in -f - >/dev/null || fail "Ignore did not admit"
  [[ $(jp pod/down2 e2e-in '{.spec.containers[*].name}') == app ]] || fail "sidecar from nowhere"
  # Injector unreachable but validator up: require-enforcer catches the pod.
  start_webhook "$POLICIES"
  register_webhooks Ignore 1 "$E2E_WEBHOOK_PORT"
  if out=$(restricted_pod down3 | kubectl apply -n e2e-in -f - 2>&1); then fail "pod without enforcer admitted"; fi
  grep -q 'enforcer/required' <<<"$out" || fail "$out"
  register_webhooks Fail
}

case_helm_chart_lints_and_applies() {
  local out
  helm lint "$ROOT/helm/palisade" >/dev/null 2>&1 || fail "helm lint"
  kubectl create namespace palisade-system >/dev/null 2>&1 || true
  # The chart's own pods must meet Pod Security "restricted".
  kubectl label namespace palisade-system --overwrite \
    pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted >/dev/null
  helm template palisade "$ROOT/helm/palisade" -n palisade-system --include-crds >"$WORK/chart.yaml" 2>/dev/null || fail "helm template"
  out=$(kubectl apply --dry-run=server -f "$WORK/chart.yaml" 2>&1) || fail "chart rejected by the apiserver: $out"
  if grep -qi warning <<<"$out"; then fail "warnings: $out"; fi
  grep -q 'deployment.apps/palisade created (server dry run)' <<<"$out" || fail "$out"

  # Each rendered settings file (admission, policy service) is accepted by
  # the binary it configures.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=chart \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/chart.key" -out "$WORK/chart.crt" 2>/dev/null
  local n
  for n in 1 2; do
    awk -v want="$n" '/^  palisade.yaml: \|/{seen++; f = (seen == want); next} f && /^[^ ]/{f=0} f' "$WORK/chart.yaml" \
      | sed 's/^    //' >"$WORK/chart-settings-$n.yaml"
    grep -q 'listen: 0.0.0.0:8443' "$WORK/chart-settings-$n.yaml" || fail "settings $n not extracted"
    start_bg palisade-chart env PALISADE_CONFIG="$WORK/chart-settings-$n.yaml" \
      PALISADE_LISTEN="127.0.0.1:$((E2E_WEBHOOK_PORT + 1))" \
      PALISADE_TLS__CERT_FILE="$WORK/chart.crt" PALISADE_TLS__KEY_FILE="$WORK/chart.key" \
      PALISADE_SERVICE__DATA_DIR="$WORK/chart-data-$n" \
      PALISADE_POLICIES__DIR="$ROOT/helm/palisade/policies" "$PALISADE_BIN" serve
    wait_for "chart-configured palisade ($n)" 20 curl -fsS --cacert "$WORK/chart.crt" \
      "https://127.0.0.1:$((E2E_WEBHOOK_PORT + 1))/readyz" \
      || fail "chart settings $n rejected: $(tail -5 "$WORK/logs/palisade-chart.log")"
    stop_bg palisade-chart
  done
  grep -q 'policy_service_url: "https://palisade-policy.palisade-system.svc:443"' "$WORK/chart-settings-1.yaml" \
    || fail "injector not pointed at the policy service"
  grep -q 'deployment.apps/palisade-policy created (server dry run)' <<<"$out" || fail "no policy service: $out"

  helm template palisade "$ROOT/helm/palisade" -n palisade-system \
    --set webhook.failurePolicy=Ignore --set injection.nativeSidecar=true \
    --set certificates.mode=certManager >"$WORK/chart-cm.yaml" 2>/dev/null || fail "helm template (cert-manager)"
  grep -q 'failurePolicy: Ignore' "$WORK/chart-cm.yaml" || fail "failurePolicy value not applied"
  grep -q 'native_sidecar: true' "$WORK/chart-cm.yaml" || fail "nativeSidecar value not applied"
  grep -q 'cert-manager.io/inject-ca-from: palisade-system/palisade-serving' "$WORK/chart-cm.yaml" || fail "CA injection"
}

post_report() { # url token namespace pod -> prints "STATUS BODY"
  local body
  body=$(printf '{"pod":{"namespace":"%s","name":"%s","uid":"u"},"events":[{"id":"tr-%s-%s","timeMs":1000,"kind":"behavior","rule":"behavior/denied-process","policy":"runtime-defaults","mode":"audit","message":"denied process sh started"}]}' "$3" "$4" "$3" "$4")
  curl -sS -o "$WORK/post.out" -w '%{http_code}' --cacert "$WORK/tr-tls/ca.crt" -H "Authorization: Bearer $2" \
    -H 'content-type: application/json' -d "$body" "$1/api/v1/reports"
  echo " $(cat "$WORK/post.out")"
}

policy_report_warns() {
  [[ $(kubectl get policyreport palisade-runtime -n e2e-in -o 'jsonpath={.summary.warn}' 2>/dev/null) -ge 1 ]]
}

case_enforcer_tokens_verified_by_tokenreview() {
  local port=$((E2E_WEBHOOK_PORT + 2)) url uid token out
  url="https://127.0.0.1:$port"
  kubectl apply -f "$ROOT/tests/e2e/policyreport-crd.yaml" >/dev/null
  kubectl wait --for condition=established --timeout=30s crd/policyreports.wgpolicyk8s.io >/dev/null
  start_bg palisade-tr env PALISADE_LISTEN="127.0.0.1:$port" PALISADE_TLS__SELF_SIGNED_DIR="$WORK/tr-tls" \
    PALISADE_SERVICE__DATA_DIR="$WORK/tr-data" PALISADE_SERVICE__TOKEN_REVIEW=true \
    PALISADE_SERVICE__POLICY_REPORT_INTERVAL_SECS=1 \
    PALISADE_POLICIES__DIR="$POLICIES" KUBECONFIG="$KUBECONFIG" "$PALISADE_BIN" serve
  wait_for "policy service with TokenReview" 20 curl -fsS --cacert "$WORK/tr-tls/ca.crt" "$url/readyz" \
    || fail "did not start: $(tail -5 "$WORK/logs/palisade-tr.log")"
  restricted_pod reporter | kubectl apply -n e2e-in -f - >/dev/null
  uid=$(jp pod/reporter e2e-in '{.metadata.uid}')
  # What the injector mounts: a pod-bound token for audience "palisade".
  token=$(kubectl create token default -n e2e-in --audience palisade \
    --bound-object-kind Pod --bound-object-name reporter --bound-object-uid "$uid")
  out=$(post_report "$url" "$token" e2e-in reporter)
  [[ "$out" == 200* && "$out" == *'"stored":1'* ]] || fail "own pod: $out"
  out=$(post_report "$url" "$token" e2e-in api-0)
  [[ "$out" == 403* && "$out" == *'cannot act for pod e2e-in/api-0'* ]] || fail "other pod: $out"
  out=$(post_report "$url" "$token" e2e-out reporter)
  [[ "$out" == 403* ]] || fail "other namespace: $out"
  token=$(kubectl create token default -n e2e-in --audience someone-else)
  out=$(post_report "$url" "$token" e2e-in reporter)
  [[ "$out" == 401* ]] || fail "wrong audience: $out"
  # The accepted violation is summarised into the namespace's PolicyReport.
  wait_for "PolicyReport" 15 policy_report_warns || fail "no PolicyReport: $(kubectl get policyreport -A -o yaml 2>&1 | tail -20)"
  [[ $(kubectl get policyreport palisade-runtime -n e2e-in -o 'jsonpath={.results[0].resources[0].name}') == reporter ]] \
    || fail "report does not name the pod"
  stop_bg palisade-tr
}

pause_pod_denied() {
  ! restricted_pod crd-probe registry.k8s.io/pause:3.10 | kubectl apply -n e2e-in --dry-run=server -f - >/dev/null 2>&1
}
pause_pod_allowed() { ! pause_pod_denied; }

case_runtime_policy_resources_are_watched() {
  kubectl apply -f "$ROOT/helm/palisade/crds/runtimepolicies.yaml" >/dev/null
  kubectl wait --for condition=established --timeout=30s crd/runtimepolicies.palisade.dev >/dev/null
  stop_webhook
  start_webhook "$POLICIES" PALISADE_POLICIES__WATCH_CRDS=true
  register_webhooks Fail
  pause_pod_allowed || fail "pause:3.10 denied before any RuntimePolicy"
  kubectl apply -f - >/dev/null <<'YAML'
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: no-pause-310}
spec:
  mode: enforce
  selector: {namespaces: [e2e-in]}
  admission: {disallowedTags: ["3.10"]}
YAML
  wait_for "RuntimePolicy enforced" 15 pause_pod_denied || fail "RuntimePolicy not enforced"
  local out
  out=$(restricted_pod crd-probe registry.k8s.io/pause:3.10 | kubectl apply -n e2e-in --dry-run=server -f - 2>&1 || true)
  grep -q '\[no-pause-310\] images/disallowedTags' <<<"$out" || fail "$out"
  kubectl delete runtimepolicy no-pause-310 >/dev/null
  wait_for "RuntimePolicy removed" 15 pause_pod_allowed || fail "deleted RuntimePolicy still enforced"
  stop_webhook
  start_webhook "$POLICIES"
  register_webhooks Fail
}

# ---------------------------------------------------------------- main

echo "work dir: $WORK"
mkdir -p "$POLICIES"
cp "$ROOT"/policies/*.yaml "$POLICIES/"
start_control_plane
start_webhook "$POLICIES"
register_webhooks Fail
new_namespace e2e-in yes
new_namespace e2e-out no
new_namespace e2e-psa yes pod-security.kubernetes.io/enforce=restricted

CASES=(
  case_opted_in_pod_gets_sidecar_and_limits
  case_other_namespace_is_untouched
  case_opt_out_annotation
  case_reapply_is_idempotent
  case_deployment_pods_get_sidecar
  case_job_and_statefulset_pods_get_sidecar
  case_privileged_pod_is_denied_with_rule_and_path
  case_latest_denied_in_enforce_warned_in_audit
  case_deployment_template_is_validated
  case_server_dry_run_is_mutated_and_not_stored
  case_restricted_psa_accepts_mutated_pod
  case_native_sidecar_for_jobs
  case_webhook_down_failure_policy
  case_helm_chart_lints_and_applies
  case_enforcer_tokens_verified_by_tokenreview
  case_runtime_policy_resources_are_watched
)
for c in "${CASES[@]}"; do
  [[ -z "${E2E_ONLY:-}" || "$c" == *"$E2E_ONLY"* ]] || continue
  run_case "$c"
done

echo
echo "e2e: $PASSED passed, ${#FAILED[@]} failed"
if ((${#FAILED[@]})); then
  printf '  failed: %s\n' "${FAILED[@]}"
  exit 1
fi
