#!/usr/bin/env bash
# End-to-end: Palisade registered as mutating and validating webhooks with a
# real kube-apiserver (etcd, kube-controller-manager) on 127.0.0.1.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE_DIR="${PALISADE_E2E_CACHE:-$HOME/.cache/palisade-e2e}"
export PATH="$CACHE_DIR/bin:$PATH"
PALISADE_BIN="${PALISADE_BIN:-$ROOT/target/release/palisade}"
# The chart as `make chart` packages it (with the policy library).
CHART="${PALISADE_CHART:-$ROOT/target/chart/palisade}"
[[ -f "$CHART/Chart.yaml" && -d "$CHART/policies" ]] || { echo "no packaged chart at $CHART: run make chart" >&2; exit 1; }
WORK="$(mktemp -d /tmp/palisade-e2e.XXXXXX)"
POLICIES="$WORK/policies"

# shellcheck source=tests/e2e/cluster.sh
source "$ROOT/tests/e2e/cluster.sh"

# Restarts in the suite need not wait out the production drain period
# (case_sigterm_keeps_serving_with_readiness_503_while_draining sets its own).
export PALISADE_SHUTDOWN_DRAIN_SECS="${PALISADE_SHUTDOWN_DRAIN_SECS:-1}"

PASSED=0
FAILED=()

finish() {
  local code=$?
  stop_bg palisade-shapes
  stop_bg palisade-crd
  stop_bg palisade-drain
  stop_bg palisade-audit-0
  stop_bg palisade-audit-1
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

# "init containers|containers" of a pod: kind/name namespace
pod_names() { jp "$1" "$2" '{.spec.initContainers[*].name}|{.spec.containers[*].name}'; }

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
  [[ "$names" == "app" ]] || fail "containers: $names"
  # A native sidecar by default: the first init container, restartPolicy Always.
  [[ $(jp pod/web e2e-in '{.spec.initContainers[0].name}') == palisade-enforcer ]] || fail "no native sidecar"
  [[ $(jp pod/web e2e-in '{.spec.initContainers[0].restartPolicy}') == Always ]] || fail "restartPolicy"
  [[ $(jp pod/web e2e-in '{.spec.shareProcessNamespace}') == true ]] || fail "shareProcessNamespace"
  [[ $(jp pod/web e2e-in '{.spec.containers[0].resources.limits.memory}') == 512Mi ]] || fail "default memory limit"
  [[ $(jp pod/web e2e-in '{.spec.initContainers[0].securityContext.runAsUser}') == 1000 ]] || fail "sidecar runs as the app UID"
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
  [[ $(pod_names pod/optout e2e-in) == "|app" ]] || fail "opted-out pod was injected"
  jp pod/optout e2e-in '{.metadata.annotations.palisade\.dev/status}' | jq -e '.skipped == "opted-out"' >/dev/null \
    || fail "no skip reason in the status annotation"
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
    [[ $(pod_names "$pod" e2e-in) == "palisade-enforcer|api" ]] \
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
  [[ $(kubectl get pods -n e2e-in -l app=once -o 'jsonpath={.items[0].spec.initContainers[*].name}|{.items[0].spec.containers[*].name}') == "palisade-enforcer|task" ]] \
    || fail "job pod lacks the sidecar"
  [[ $(pod_names pod/db-0 e2e-in) == "palisade-enforcer|db" ]] || fail "statefulset pod"
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
  jq -e '[.spec.initContainers[].name, .spec.containers[].name] == ["palisade-enforcer","app"]' <<<"$out" >/dev/null || fail "dry-run not mutated"
  if kubectl get pod dry -n e2e-in >/dev/null 2>&1; then fail "dry-run pod stored"; fi
}

case_restricted_psa_accepts_mutated_pod() {
  restricted_pod strict | kubectl apply -n e2e-psa -f - >/dev/null \
    || fail "PSA restricted rejected the injected pod"
  [[ $(pod_names pod/strict e2e-psa) == "palisade-enforcer|app" ]] || fail "not injected"
}

case_reapply_is_idempotent() {
  # kubectl's client-side apply always sends a patch (it re-states the
  # container order) and prints "configured"; what matters is that the
  # stored pod does not change: same resourceVersion, one sidecar.
  local before after
  before=$(jp pod/web e2e-in '{.metadata.resourceVersion} {.spec.initContainers[*].name}|{.spec.containers[*].name}')
  restricted_pod web | kubectl apply -n e2e-in -f - >/dev/null
  after=$(jp pod/web e2e-in '{.metadata.resourceVersion} {.spec.initContainers[*].name}|{.spec.containers[*].name}')
  [[ "$before" == "$after" ]] || fail "re-apply changed the pod: $before -> $after"
  [[ "$after" == *" palisade-enforcer|app" ]] || fail "containers: $after"
}

case_classic_sidecar_mode_stays_available() {
  stop_webhook
  start_webhook "$POLICIES" PALISADE_INJECTION__NATIVE_SIDECAR=false
  register_webhooks Fail
  restricted_pod classic | kubectl apply -n e2e-in -f - >/dev/null
  [[ $(pod_names pod/classic e2e-in) == "|app palisade-enforcer" ]] || fail "not an ordinary container: $(pod_names pod/classic e2e-in)"
  [[ -z $(jp pod/classic e2e-in '{.spec.containers[1].restartPolicy}') ]] || fail "restartPolicy on a container"
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
  [[ $(pod_names pod/down2 e2e-in) == "|app" ]] || fail "sidecar from nowhere"
  # Injector unreachable but validator up: require-enforcer catches the pod.
  start_webhook "$POLICIES"
  register_webhooks Ignore 1 "$E2E_WEBHOOK_PORT"
  if out=$(restricted_pod down3 | kubectl apply -n e2e-in -f - 2>&1); then fail "pod without enforcer admitted"; fi
  grep -q 'enforcer/required' <<<"$out" || fail "$out"
  register_webhooks Fail
}

case_helm_chart_lints_and_applies() {
  local out
  helm lint "$CHART" >/dev/null 2>&1 || fail "helm lint"
  kubectl create namespace palisade-system >/dev/null 2>&1 || true
  # The chart's own pods must meet Pod Security "restricted".
  kubectl label namespace palisade-system --overwrite \
    pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted >/dev/null
  helm template palisade "$CHART" -n palisade-system --include-crds >"$WORK/chart.yaml" 2>/dev/null || fail "helm template"
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
      PALISADE_POLICIES__DIR="$CHART/policies" "$PALISADE_BIN" serve
    wait_for "chart-configured palisade ($n)" 20 curl -fsS --cacert "$WORK/chart.crt" \
      "https://127.0.0.1:$((E2E_WEBHOOK_PORT + 1))/readyz" \
      || fail "chart settings $n rejected: $(tail -5 "$WORK/logs/palisade-chart.log")"
    stop_bg palisade-chart
  done
  grep -q 'policy_service_url: "https://palisade-policy.palisade-system.svc:443"' "$WORK/chart-settings-1.yaml" \
    || fail "injector not pointed at the policy service"
  grep -q 'deployment.apps/palisade-policy created (server dry run)' <<<"$out" || fail "no policy service: $out"

  helm template palisade "$CHART" -n palisade-system \
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
  # A CRD created a moment ago may have no conditions yet, which kubectl
  # wait reports as an error rather than waiting on: retry until it answers.
  wait_for "CRD policyreports.wgpolicyk8s.io established" 30 kubectl wait --for condition=established --timeout=5s crd/policyreports.wgpolicyk8s.io
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
  observations_are_kept_per_workload "$url"
  stop_bg palisade-tr
}

post_observations() { # url token namespace pod uid -> prints "STATUS BODY"
  local body
  body=$(printf '{"pod":{"namespace":"%s","name":"%s","uid":"%s"},"observations":[{"container":"","item":{"kind":"executable","path":"/usr/bin/curl","sha256":"%s","fromImage":true},"count":3,"firstMs":1000,"lastMs":2000},{"container":"","item":{"kind":"listen","protocol":"tcp","port":8080},"count":1,"firstMs":1000,"lastMs":1000}]}' \
    "$3" "$4" "$5" "$(printf 'a%.0s' {1..64})")
  curl -sS -o "$WORK/post.out" -w '%{http_code}' --cacert "$WORK/tr-tls/ca.crt" -H "Authorization: Bearer $2" \
    -H 'content-type: application/json' -d "$body" "$1/api/v1/observations"
  echo " $(cat "$WORK/post.out")"
}

# What a pod's enforcer observed is kept under the pod's workload, resolved
# through the apiserver from owner references: a Deployment's pods (through
# their ReplicaSet) share the Deployment's entry across rollouts; a Job's
# pod is the Job's.
observations_are_kept_per_workload() {
  local url="$1" admin pod uid token out workloads
  admin=$(cat "$WORK/tr-data/admin.token")
  kubectl apply -n e2e-in -f - >/dev/null <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: learned}
spec:
  replicas: 1
  selector: {matchLabels: {app: learned}}
  template:
    metadata: {labels: {app: learned, tier: web}}
    spec:
      containers: [{name: web, image: registry.k8s.io/pause:3.10}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: learned-job}
spec:
  template:
    metadata: {labels: {app: learned-job}}
    spec:
      restartPolicy: Never
      containers: [{name: task, image: registry.k8s.io/pause:3.10}]
YAML
  local selector kind
  for selector in app=learned app=learned-job; do
    wait_for "a pod of $selector" 60 bash -c "kubectl get pods -n e2e-in -l $selector -o name | grep -q pod/"
    pod=$(kubectl get pods -n e2e-in -l "$selector" -o 'jsonpath={.items[0].metadata.name}')
    uid=$(jp "pod/$pod" e2e-in '{.metadata.uid}')
    token=$(kubectl create token default -n e2e-in --audience palisade \
      --bound-object-kind Pod --bound-object-name "$pod" --bound-object-uid "$uid")
    out=$(post_observations "$url" "$token" e2e-in "$pod" "$uid")
    [[ "$out" == 200* ]] || fail "observations of $pod: $out"
  done
  workloads=$(curl -fsS --cacert "$WORK/tr-tls/ca.crt" -H "Authorization: Bearer $admin" "$url/api/v1/workloads?namespace=e2e-in")
  for kind in Deployment/learned Job/learned-job; do
    jq -e --arg k "${kind%/*}" --arg n "${kind#*/}" \
      'any(.[]; .workload.kind == $k and .workload.name == $n and .items == 2)' <<<"$workloads" >/dev/null \
      || fail "no $kind workload with 2 items: $workloads"
  done
  jq -e 'any(.[]; .workload.name == "learned" and .podLabels.tier == "web")' <<<"$workloads" >/dev/null \
    || fail "the Deployment's pod labels are not kept: $workloads"
  # The second batch of another pod of the same Deployment sums into it.
  pod=$(kubectl get pods -n e2e-in -l app=learned -o 'jsonpath={.items[0].metadata.name}')
  kubectl delete pod -n e2e-in "$pod" --wait=false >/dev/null
  wait_for "a new pod of learned" 60 bash -c \
    "kubectl get pods -n e2e-in -l app=learned -o name | grep -v 'pod/$pod\$' | grep -q pod/"
  pod=$(kubectl get pods -n e2e-in -l app=learned -o name | grep -v "pod/$pod\$" | head -1 | cut -d/ -f2)
  uid=$(jp "pod/$pod" e2e-in '{.metadata.uid}')
  token=$(kubectl create token default -n e2e-in --audience palisade \
    --bound-object-kind Pod --bound-object-name "$pod" --bound-object-uid "$uid")
  out=$(post_observations "$url" "$token" e2e-in "$pod" "$uid")
  [[ "$out" == 200* ]] || fail "observations of the replacement $pod: $out"
  out=$(curl -fsS --cacert "$WORK/tr-tls/ca.crt" -H "Authorization: Bearer $admin" "$url/api/v1/workloads/e2e-in/deployment/learned")
  jq -e 'any(.observed[]; .item.kind == "executable" and .count == 6)' <<<"$out" >/dev/null \
    || fail "the replacement pod's observations were not summed into the Deployment's: $out"
}

pause_pod_denied() {
  ! restricted_pod crd-probe registry.k8s.io/pause:3.10 | kubectl apply -n e2e-crd --dry-run=server -f - >/dev/null 2>&1
}
pause_pod_allowed() { ! pause_pod_denied; }

# The resources are watched by a webhook of their own (started with
# PALISADE_POLICIES__WATCH_CRDS, on its own port and registration, for the
# namespace e2e-crd only), so the other cases keep the main one meanwhile.
CRD_PORT=$((E2E_WEBHOOK_PORT + 7))

start_crd_watcher() {
  start_bg palisade-crd env PALISADE_LISTEN="127.0.0.1:$CRD_PORT" \
    PALISADE_TLS__SELF_SIGNED_NAMES="127.0.0.1,localhost" PALISADE_TLS__SELF_SIGNED_DIR="$WORK/crd-tls" \
    PALISADE_POLICIES__DIR="$POLICIES_AT_START" PALISADE_POLICIES__RELOAD_INTERVAL_SECS=1 \
    PALISADE_SERVICE__DATA_DIR="$WORK/crd-data" PALISADE_POLICIES__WATCH_CRDS=true \
    KUBECONFIG="$KUBECONFIG" "$PALISADE_BIN" serve
  wait_for "CRD-watching palisade /readyz" 30 curl -fsS --cacert "$WORK/crd-tls/ca.crt" \
    "https://127.0.0.1:$CRD_PORT/readyz" || fail "did not start: $(tail -5 "$WORK/logs/palisade-crd.log")"
  register_webhooks Fail "$CRD_PORT" "$CRD_PORT" e2e-crd "$WORK/crd-tls/ca.crt" palisade.dev/e2e-crd=yes
}

stop_crd_watcher() {
  kubectl delete mutatingwebhookconfiguration e2e-crd >/dev/null
  kubectl delete validatingwebhookconfiguration e2e-crd >/dev/null
  stop_bg palisade-crd
}

case_runtime_policy_and_exception_resources_are_watched() {
  kubectl apply -f "$ROOT/helm/palisade/crds/runtimepolicies.yaml" >/dev/null
  # A CRD created a moment ago may have no conditions yet, which kubectl
  # wait reports as an error rather than waiting on: retry until it answers.
  wait_for "CRD runtimepolicies.palisade.dev established" 30 kubectl wait --for condition=established --timeout=5s crd/runtimepolicies.palisade.dev
  start_crd_watcher
  pause_pod_allowed || fail "pause:3.10 denied before any RuntimePolicy"
  kubectl apply -f - >/dev/null <<'YAML'
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: no-pause-310}
spec:
  mode: enforce
  selector: {namespaces: [e2e-crd]}
  admission: {disallowedTags: ["3.10"]}
YAML
  wait_for "RuntimePolicy enforced" 15 pause_pod_denied || fail "RuntimePolicy not enforced"
  local out
  out=$(restricted_pod crd-probe registry.k8s.io/pause:3.10 | kubectl apply -n e2e-crd --dry-run=server -f - 2>&1 || true)
  grep -q '\[no-pause-310\] images/disallowedTags' <<<"$out" || fail "$out"
  # A PolicyException resource lets the pod in, visibly, until it expires
  # (while this test runs); then the policy denies again and says why.
  kubectl apply -f "$ROOT/helm/palisade/crds/policyexceptions.yaml" >/dev/null
  wait_for "CRD policyexceptions.palisade.dev established" 30 kubectl wait --for condition=established --timeout=5s crd/policyexceptions.palisade.dev
  # Labels alone would let any namespace's pods claim an exception: the
  # apiserver refuses one without exact namespaces.
  kubectl apply -f - >/dev/null 2>&1 <<'YAML' && fail "a PolicyException without namespaces was stored"
apiVersion: palisade.dev/v1alpha1
kind: PolicyException
metadata: {name: everywhere}
spec:
  policy: no-pause-310
  rules: ["*"]
  selector: {podLabels: {app: crd-probe}}
  expiresAt: "2099-01-01T00:00:00Z"
  reason: r
  owner: o
YAML
  local expires
  expires=$(date -u -d '+20 seconds' +%Y-%m-%dT%H:%M:%SZ)
  kubectl apply -f - >/dev/null <<YAML
apiVersion: palisade.dev/v1alpha1
kind: PolicyException
metadata: {name: pause-310-ok}
spec:
  policy: no-pause-310
  rules: [images/disallowedTags]
  selector: {namespaces: [e2e-crd], podLabels: {app: crd-probe}}
  expiresAt: "$expires"
  reason: the e2e probe image
  owner: e2e-team
YAML
  wait_for "PolicyException applied" 15 pause_pod_allowed || fail "PolicyException not applied"
  out=$(restricted_pod crd-probe registry.k8s.io/pause:3.10 | kubectl apply -n e2e-crd --dry-run=server -f - 2>&1) \
    || fail "excepted pod denied: $out"
  grep -q "palisade excepted: \[no-pause-310\] images/disallowedTags: .*(excepted by PolicyException pause-310-ok (owner e2e-team; until $expires: the e2e probe image))" <<<"$out" \
    || fail "no exception warning: $out"
  # Another workload in the namespace is not covered.
  restricted_pod other-probe registry.k8s.io/pause:3.10 | kubectl apply -n e2e-crd --dry-run=server -f - >/dev/null 2>&1 \
    && fail "the exception covered a workload it does not select"
  wait_for "PolicyException expired" 40 pause_pod_denied || fail "expired PolicyException still applies"
  out=$(restricted_pod crd-probe registry.k8s.io/pause:3.10 | kubectl apply -n e2e-crd --dry-run=server -f - 2>&1 || true)
  grep -q "PolicyException pause-310-ok (owner e2e-team; until $expires: the e2e probe image) has expired" <<<"$out" \
    || fail "the denial does not name the expired exception: $out"
  kubectl delete policyexception pause-310-ok >/dev/null
  kubectl delete runtimepolicy no-pause-310 >/dev/null
  wait_for "RuntimePolicy removed" 15 pause_pod_allowed || fail "deleted RuntimePolicy still enforced"
  stop_crd_watcher
}

# Pods created before their namespace was labelled run without the enforcer:
# `palisade status` says so per pod, names the workload to restart, and
# `--restart` rolls it (through the webhook) like `kubectl rollout restart`.
case_status_explains_pods_from_before_the_label_and_check_cluster_what_enforce_would_deny() {
  kubectl create namespace e2e-late >/dev/null
  kubectl apply -n e2e-late -f - >/dev/null <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: late}
spec:
  replicas: 1
  selector: {matchLabels: {app: late}}
  template:
    metadata: {labels: {app: late}}
    spec:
      containers:
        - name: app
          image: registry.k8s.io/pause:3.10
YAML
  wait_for "the late pod" 60 bash -c "[[ \$(kubectl get pods -n e2e-late -l app=late -o name | wc -l) -eq 1 ]]"
  # creationTimestamp has one-second precision: label strictly later.
  sleep 1.1
  kubectl label namespace e2e-late palisade.dev/inject=enabled >/dev/null
  local out json
  out=$("$PALISADE_BIN" status -n e2e-late) || fail "status failed: $out"
  # shellcheck disable=SC2001 # indents every line
  echo "$out" | sed 's/^/    /'
  grep -E '^e2e-late +late-[a-z0-9-]+ +none \(created-before-opt-in\) +- +deployment/late: created before the namespace was labelled' <<<"$out" >/dev/null \
    || fail "status does not explain the pod: $out"
  json=$("$PALISADE_BIN" status -n e2e-late -o json)
  jq -e '.[0].injection == {"state": "notInjected", "reason": "created-before-opt-in"}
    and .[0].workload == {"kind": "Deployment", "namespace": "e2e-late", "name": "late"}' <<<"$json" >/dev/null \
    || fail "status -o json: $json"
  "$PALISADE_BIN" status -n e2e-late --restart >/dev/null 2>"$WORK/restart.err" || fail "restart: $(cat "$WORK/restart.err")"
  grep -q '^deployment/late restarted in e2e-late$' "$WORK/restart.err" || fail "restart said: $(cat "$WORK/restart.err")"
  # The new pod comes through the webhook (no kubelet here: the old one
  # stays until the new one is ready, which it never is).
  local version
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
  # shellcheck disable=SC2317 # called through wait_for
  injected_late_pod() {
    "$PALISADE_BIN" status -n e2e-late -o json | jq -e --arg v "$version" \
      'any(.[]; .injection.state == "injected" and .injection.version == $v and (has("restart") | not))' >/dev/null
  }
  wait_for "an injected pod of the restarted deployment" 60 injected_late_pod || fail "no injected pod after restart: $("$PALISADE_BIN" status -n e2e-late)"
  # What an enforce switch would deny among the live workloads: the
  # Deployment's template lacks the restricted securityContext (audited
  # today, so the plain check passes).
  out=$("$PALISADE_BIN" check --cluster -n e2e-late --policies "$ROOT/policies" 2>&1) \
    || fail "check --cluster denied under today's modes: $out"
  grep -q '^e2e-late/Deployment/late: warn: \[pod-security-restricted\]' <<<"$out" || fail "check --cluster: $out"
  out=$("$PALISADE_BIN" check --cluster -n e2e-late --policies "$ROOT/policies" --as-enforce 2>&1) \
    && fail "check --cluster --as-enforce found nothing to deny: $out"
  grep -q '^e2e-late/Deployment/late: deny: \[pod-security-restricted\]' <<<"$out" || fail "check --cluster --as-enforce: $out"
  grep -q 'object(s) denied (every policy as enforce)' <<<"$out" || fail "no summary: $out"
  kubectl delete namespace e2e-late --wait=false >/dev/null
}

# ---------------------------------------------------------------- pod shapes
# Each shape goes through the real apiserver: the patched pod must be one it
# stores. Validation runs on a second instance with no policies, so what is
# proven here is the injector's output (pod-security-baseline would deny
# hostPID and hostPath for its own reasons).

SHAPES_PORT=$((E2E_WEBHOOK_PORT + 3))

start_policy_free_validator() {
  mkdir -p "$WORK/no-policies"
  start_bg palisade-shapes env PALISADE_LISTEN="127.0.0.1:$SHAPES_PORT" \
    PALISADE_TLS__CERT_FILE="$WORK/palisade-tls/tls.crt" PALISADE_TLS__KEY_FILE="$WORK/palisade-tls/tls.key" \
    PALISADE_SERVICE__ENABLED=false PALISADE_POLICIES__DIR="$WORK/no-policies" "$PALISADE_BIN" serve
  wait_for "policy-free validator" 20 curl -fsS --cacert "$WORK/palisade-tls/ca.crt" \
    "https://127.0.0.1:$SHAPES_PORT/readyz" || fail "validator did not start"
  register_webhooks Fail "$E2E_WEBHOOK_PORT" "$SHAPES_PORT"
}

stop_policy_free_validator() {
  register_webhooks Fail
  stop_bg palisade-shapes
}

status_of() { jp "pod/$1" e2e-shapes '{.metadata.annotations.palisade\.dev/status}'; }

# shape name: a pod manifest with the given spec lines (YAML, 2-space indent
# under spec) and metadata annotations.
shape() { # name, annotations (flow map), spec body
  cat <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $1
  annotations: ${2:-{\}}
spec:
$3
YAML
}

case_every_pod_shape_is_stored_by_the_apiserver() {
  start_policy_free_validator
  # The registration is restored whatever happens to the shapes.
  local rc=0
  (pod_shapes) || rc=$?
  stop_policy_free_validator
  return "$rc"
}

pod_shapes() {
  local out
  # hostPID: skipped (no shareProcessNamespace, which the apiserver forbids with it).
  shape hostpid '' '  hostPID: true
  containers: [{name: app, image: registry.k8s.io/pause:3.10}]' | kubectl apply -n e2e-shapes -f - >/dev/null \
    || fail "hostPID pod refused"
  [[ $(pod_names pod/hostpid e2e-shapes) == "|app" ]] || fail "enforcer in a hostPID pod"
  [[ -z $(jp pod/hostpid e2e-shapes '{.spec.shareProcessNamespace}') ]] || fail "shareProcessNamespace with hostPID"
  status_of hostpid | jq -e '.skipped == "host-pid"' >/dev/null || fail "status: $(status_of hostpid)"

  # Windows: skipped (Linux securityContext fields are forbidden there).
  shape windows '' '  os: {name: windows}
  containers: [{name: app, image: mcr.microsoft.com/windows/nanoserver:ltsc2022}]' \
    | kubectl apply -n e2e-shapes -f - >/dev/null || fail "windows pod refused"
  [[ $(pod_names pod/windows e2e-shapes) == "|app" ]] || fail "enforcer in a windows pod"
  status_of windows | jq -e '.skipped == "windows"' >/dev/null || fail "status: $(status_of windows)"
  shape winselector '' '  nodeSelector: {kubernetes.io/os: windows}
  containers: [{name: app, image: mcr.microsoft.com/windows/nanoserver:ltsc2022}]' \
    | kubectl apply -n e2e-shapes -f - >/dev/null || fail "windows-selected pod refused"
  [[ $(pod_names pod/winselector e2e-shapes) == "|app" ]] || fail "enforcer in a pod for Windows nodes"

  # shareProcessNamespace: false is kept; the enforcer is injected, degraded.
  shape separate '' '  shareProcessNamespace: false
  containers: [{name: app, image: registry.k8s.io/pause:3.10}]' | kubectl apply -n e2e-shapes -f - >/dev/null \
    || fail "pod with separate process namespaces refused"
  [[ $(jp pod/separate e2e-shapes '{.spec.shareProcessNamespace}') == false ]] || fail "choice overridden"
  [[ $(pod_names pod/separate e2e-shapes) == "palisade-enforcer|app" ]] || fail "no enforcer"
  status_of separate | jq -e '.degraded == ["process-namespace-not-shared"]' >/dev/null \
    || fail "status: $(status_of separate)"

  # A request above the default limit: the limit is raised to it.
  shape requestonly '' '  containers:
    - name: app
      image: registry.k8s.io/pause:3.10
      resources: {requests: {memory: 1Gi, cpu: "2"}}' | kubectl apply -n e2e-shapes -f - >/dev/null \
    || fail "request-only pod refused"
  [[ $(jp pod/requestonly e2e-shapes '{.spec.containers[0].resources.limits.memory} {.spec.containers[0].resources.limits.cpu}') == "1Gi 2" ]] \
    || fail "limits: $(jp pod/requestonly e2e-shapes '{.spec.containers[0].resources}')"

  # Pod-level resources: the pod's budget is not exceeded by defaults or the enforcer.
  shape podlevel '' '  resources: {limits: {cpu: 500m, memory: 256Mi}}
  containers: [{name: app, image: registry.k8s.io/pause:3.10}]' | kubectl apply -n e2e-shapes -f - >/dev/null \
    || fail "pod with pod-level resources refused"
  [[ $(jp pod/podlevel e2e-shapes '{.spec.resources.limits.memory}') == 256Mi ]] || fail "pod-level resources dropped"
  [[ -z $(jp pod/podlevel e2e-shapes '{.spec.containers[0].resources.limits}') ]] || fail "container defaults under a pod budget"
  [[ -z $(jp pod/podlevel e2e-shapes '{.spec.initContainers[0].resources.limits.memory}') ]] || fail "enforcer memory under a pod budget"
  [[ $(jp pod/podlevel e2e-shapes '{.spec.initContainers[0].name}') == palisade-enforcer ]] || fail "no enforcer"

  # The pod's own volume under the injector's usual name stays the pod's.
  shape volumes '' '  volumes: [{name: palisade-enforcer-state, hostPath: {path: /etc}}]
  containers: [{name: app, image: registry.k8s.io/pause:3.10}]' | kubectl apply -n e2e-shapes -f - >/dev/null \
    || fail "pod with a colliding volume name refused"
  [[ $(jp pod/volumes e2e-shapes '{.spec.initContainers[0].volumeMounts[0].name}') == palisade-enforcer-state-1 ]] \
    || fail "enforcer mounts: $(jp pod/volumes e2e-shapes '{.spec.initContainers[0].volumeMounts}')"

  # An annotated request above the default limit raises the enforcer's limit...
  shape bigger '{palisade.dev/sidecar-memory: 100Mi}' '  containers: [{name: app, image: registry.k8s.io/pause:3.10}]' \
    | kubectl apply -n e2e-shapes -f - >/dev/null || fail "sidecar-memory annotation refused"
  [[ $(jp pod/bigger e2e-shapes '{.spec.initContainers[0].resources.limits.memory}') == 100Mi ]] || fail "enforcer limit"
  # ...and annotations that contradict each other are refused, saying why.
  if out=$(shape contradict '{palisade.dev/sidecar-cpu: "1", palisade.dev/sidecar-cpu-limit: 500m}' \
      '  containers: [{name: app, image: registry.k8s.io/pause:3.10}]' | kubectl apply -n e2e-shapes -f - 2>&1); then
    fail "contradicting annotations admitted"
  fi
  grep -q 'a request must not exceed its limit' <<<"$out" || fail "$out"

  # The property test's generated pods (hostPID, Windows, process namespace
  # choices, pod-level resources, request-only containers, colliding volume
  # names, override annotations, init containers, commands; every other one
  # under a prevention policy), all through the apiserver.
  local generated="$ROOT/tests/fixtures/admission/generated-pods.json"
  kubectl create -n e2e-shapes --dry-run=server -o json -f "$generated" >"$WORK/generated.out" 2>"$WORK/generated.err" \
    || fail "generated pods refused: $(grep -v '^Warning' "$WORK/generated.err" | head -5)"
  jq -s --argjson want "$(jq '.items | length' "$generated")" -e '
    [.[] | if .kind == "List" then .items[] else . end]
    | length == $want and all(
        (.metadata.annotations["palisade.dev/status"] | fromjson) as $status
        | ([.spec.initContainers[]?.name] | index("palisade-enforcer")) as $enforcer
        | if $status.skipped then $enforcer == null else $enforcer != null end)' \
    "$WORK/generated.out" >/dev/null || fail "generated pods not injected as their status says"
  # Those the prevention policy selects start their commands under the
  # launcher, installed by the first init container.
  jq -s -e '
    [.[] | if .kind == "List" then .items[] else . end
     | select(.metadata.labels["palisade.dev/e2e-prevent"] == "true")
     | select((.metadata.annotations["palisade.dev/status"] | fromjson).skipped | not)] as $confined
    | ($confined | length) > 5 and all($confined[];
        .spec.initContainers[0].name == "palisade-launch-install"
        and all(.spec.containers[] | select(.command != null and .name != "palisade-enforcer");
                .command[0] == "/palisade/launch/palisade-launch"))' \
    "$WORK/generated.out" >/dev/null || fail "generated pods under the prevention policy are not confined"
}

case_a_container_posing_as_the_enforcer_is_denied() {
  local out
  if out=$(kubectl run posing -n e2e-in --image=registry.k8s.io/pause:3.10 \
      --overrides='{"spec":{"containers":[{"name":"palisade-enforcer","image":"registry.k8s.io/pause:3.10"}]}}' 2>&1); then
    fail "impostor admitted"
  fi
  grep -q 'is reserved for the Palisade enforcer' <<<"$out" || fail "$out"
}

mutate_calls() {
  kubectl get --raw /metrics \
    | awk '/^apiserver_admission_webhook_request_total\{/ && /name="inject.palisade.dev"/ && /type="admit"/ {s += $NF} END {print s + 0}'
}

case_mutate_is_called_once_per_pod_and_the_enforcer_gets_no_api_token() {
  local before after i
  before=$(mutate_calls)
  for i in 1 2 3; do
    restricted_pod "once-$i" | kubectl apply -n e2e-in -f - >/dev/null
  done
  after=$(mutate_calls)
  ((after - before == 3)) || fail "/mutate called $((after - before)) times for 3 pods"
  # The ServiceAccount plugin mounts the API token into the app only.
  local mounts
  mounts=$(jp pod/once-1 e2e-in '{range .spec.initContainers[0].volumeMounts[*]}{.name}={.mountPath} {end}')
  [[ "$mounts" == *"palisade-no-api-token=/var/run/secrets/kubernetes.io/serviceaccount"* ]] || fail "enforcer mounts: $mounts"
  [[ "$mounts" != *kube-api-access* ]] || fail "the enforcer got the API token: $mounts"
  [[ $(jp pod/once-1 e2e-in '{.spec.containers[0].volumeMounts[0].name}') == kube-api-access-* ]] || fail "the app lost its token"
}

case_request_only_containers_pass_the_resource_limits_policy() {
  kubectl apply -n e2e-in -f - >/dev/null <<'YAML' || fail "request-only pod denied"
apiVersion: v1
kind: Pod
metadata: {name: requests-only}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: app
      image: registry.k8s.io/pause:3.10
      resources: {requests: {memory: 1Gi}}
      securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
YAML
  [[ $(jp pod/requests-only e2e-in '{.spec.containers[0].resources.limits.memory}') == 1Gi ]] || fail "limit"
}

case_template_metadata_updates_are_rejudged() {
  local out
  kubectl apply -n e2e-in -f - >/dev/null <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: armored}
spec:
  replicas: 0
  selector: {matchLabels: {app: armored}}
  template:
    metadata:
      labels: {app: armored}
      annotations: {container.apparmor.security.beta.kubernetes.io/web: ""}
    spec:
      containers: [{name: web, image: registry.k8s.io/pause:3.10}]
YAML
  [[ $(jp deploy/armored e2e-in '{.metadata.name}') == armored ]] || fail "empty AppArmor annotation denied"
  if out=$(kubectl patch deployment armored -n e2e-in --type merge \
      -p '{"spec":{"template":{"metadata":{"annotations":{"container.apparmor.security.beta.kubernetes.io/web":"unconfined"}}}}}' 2>&1); then
    fail "metadata-only template update not re-judged"
  fi
  grep -q 'podSecurity/appArmorProfile' <<<"$out" || fail "$out"
}

case_sigterm_keeps_serving_with_readiness_503_while_draining() {
  local port=$((E2E_WEBHOOK_PORT + 4)) url pid code
  url="https://127.0.0.1:$port"
  start_bg palisade-drain env PALISADE_LISTEN="127.0.0.1:$port" PALISADE_TLS__SELF_SIGNED_DIR="$WORK/drain-tls" \
    PALISADE_SERVICE__ENABLED=false PALISADE_SHUTDOWN_DRAIN_SECS=3 PALISADE_POLICIES__DIR="$POLICIES" "$PALISADE_BIN" serve
  wait_for "drain instance" 20 curl -fsS --cacert "$WORK/drain-tls/ca.crt" "$url/readyz" || fail "did not start"
  pid=$(cat "$WORK/pids/palisade-drain.pid")
  kill -TERM "$pid"
  sleep 0.5
  code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$WORK/drain-tls/ca.crt" "$url/readyz") || fail "refused during drain"
  [[ "$code" == 503 ]] || fail "/readyz during drain: $code"
  curl -fsS -o /dev/null --cacert "$WORK/drain-tls/ca.crt" "$url/healthz" || fail "not serving during drain"
  wait_for "listener closed" 10 bash -c "! curl -s -o /dev/null --cacert '$WORK/drain-tls/ca.crt' '$url/healthz'" \
    || fail "still listening after the drain"
  rm -f "$WORK/pids/palisade-drain.pid"
}

# ---------------------------------------------------------------- background audit
# Workloads created before the auditors start get a palisade-admission
# PolicyReport per labelled namespace; changes, exception expiry and deletions reach
# it; two replicas elect one auditor, and the other takes over when it stops.

AUDIT_PORTS=($((E2E_WEBHOOK_PORT + 5)) $((E2E_WEBHOOK_PORT + 6)))

start_auditor() { # index (0|1)
  local i="$1"
  start_bg "palisade-audit-$i" env PALISADE_LISTEN="127.0.0.1:${AUDIT_PORTS[$i]}" \
    PALISADE_TLS__SELF_SIGNED_DIR="$WORK/audit-tls-$i" PALISADE_SERVICE__ENABLED=false \
    PALISADE_POLICIES__DIR="$WORK/audit-policies" PALISADE_AUDIT__ENABLED=true \
    PALISADE_AUDIT__FLUSH_INTERVAL_SECS=1 PALISADE_AUDIT__LEASE_NAMESPACE=default \
    PALISADE_AUDIT__NAMESPACE_LABEL=palisade.dev/e2e-audit=yes \
    PALISADE_AUDIT__LEASE_DURATION_SECS=6 HOSTNAME="auditor-$i" KUBECONFIG="$KUBECONFIG" "$PALISADE_BIN" serve
  wait_for "auditor $i" 20 curl -fsS --cacert "$WORK/audit-tls-$i/ca.crt" "https://127.0.0.1:${AUDIT_PORTS[$i]}/readyz" \
    || fail "auditor $i did not start: $(tail -5 "$WORK/logs/palisade-audit-$i.log")"
}

auditor_metric() { # index, metric line prefix
  curl -fsS --cacert "$WORK/audit-tls-$1/ca.crt" "https://127.0.0.1:${AUDIT_PORTS[$1]}/metrics" \
    | awk -v m="$2" '$1 == m {print $2}'
}

audit_report() { kubectl get policyreport palisade-admission -n e2e-audit -o json 2>/dev/null; }

# result of rule on kind/name: prints fail|warn|skip|... (one per line)
audit_results() { # kind name rule
  audit_report | jq -r --arg k "$1" --arg n "$2" --arg r "$3" \
    '.results[] | select(.resources[0].kind == $k and .resources[0].name == $n and .rule == $r) | .result'
}

case_background_audit_reports_pre_existing_workloads() {
  kubectl apply -f "$ROOT/tests/e2e/policyreport-crd.yaml" >/dev/null
  wait_for "CRD policyreports.wgpolicyk8s.io established" 30 kubectl wait --for condition=established --timeout=5s crd/policyreports.wgpolicyk8s.io
  kubectl create namespace e2e-audit >/dev/null
  wait_for "default service account in e2e-audit" 30 kubectl get serviceaccount default -n e2e-audit
  local name
  for name in legacy tagged; do
    kubectl apply -n e2e-audit -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: $name}
spec:
  replicas: 1
  selector: {matchLabels: {app: $name}}
  template:
    metadata: {labels: {app: $name}}
    spec:
      containers: [{name: app, image: registry.k8s.io/pause:3.10}]
YAML
  done
  restricted_pod bare registry.k8s.io/pause:3.10 | kubectl apply -n e2e-audit -f - >/dev/null
  # Owned ReplicaSets and Pods exist before the audit starts (and are left
  # to their controllers' templates).
  wait_for "the deployments' pods" 60 bash -c "[[ \$(kubectl get pods -n e2e-audit -l 'app in (legacy,tagged)' -o name | wc -l) -eq 2 ]]"
  # The auditors' policies: the library, a tag rule the webhook does not
  # have (so the workloads above were admitted before it), and an exception
  # for one of them that runs out during the test.
  mkdir -p "$WORK/audit-policies"
  cp "$POLICIES_AT_START"/*.yaml "$WORK/audit-policies/"
  local expires
  expires=$(date -u -d '+40 seconds' +%Y-%m-%dT%H:%M:%SZ)
  cat >"$WORK/audit-policies/e2e-audit.yaml" <<YAML
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: no-pause-310}
spec:
  mode: enforce
  selector: {namespaces: [e2e-audit]}
  admission: {disallowedTags: ["3.10"]}
---
apiVersion: palisade.dev/v1alpha1
kind: PolicyException
metadata: {name: tagged-for-now}
spec:
  policy: no-pause-310
  rules: [images/disallowedTags]
  selector: {namespaces: [e2e-audit], podLabels: {app: tagged}}
  expiresAt: "$expires"
  reason: migrating
  owner: e2e-team
YAML
  start_auditor 0
  wait_for "auditor 0 leads" 20 bash -c "[[ \$(curl -fsS --cacert '$WORK/audit-tls-0/ca.crt' https://127.0.0.1:${AUDIT_PORTS[0]}/metrics | awk '\$1 == \"palisade_audit_leader\" {print \$2}') == 1 ]]" \
    || fail "auditor 0 never took the Lease: $(tail -5 "$WORK/logs/palisade-audit-0.log")"
  start_auditor 1
  # Only labelled namespaces are reported; labelling one later is enough.
  sleep 2
  kubectl get policyreport palisade-admission -n e2e-audit >/dev/null 2>&1 && fail "a namespace without the label was reported"
  kubectl label namespace e2e-audit palisade.dev/e2e-audit=yes >/dev/null
  wait_for "the admission PolicyReport" 30 bash -c "kubectl get policyreport palisade-admission -n e2e-audit >/dev/null 2>&1" \
    || fail "no report: $(tail -5 "$WORK/logs/palisade-audit-0.log")"
  local report
  report=$(audit_report)
  [[ $(audit_results Deployment legacy images/disallowedTags) == fail ]] || fail "legacy not failed: $report"
  [[ $(audit_results Pod bare images/disallowedTags) == fail ]] || fail "bare pod not failed: $report"
  [[ $(audit_results Deployment tagged images/disallowedTags) == skip ]] || fail "excepted workload not skipped: $report"
  jq -e '.results[] | select(.resources[0].name == "tagged" and .rule == "images/disallowedTags")
      | .message | contains("excepted by PolicyException tagged-for-now")' <<<"$report" >/dev/null || fail "no exception note: $report"
  # Audit-mode findings are reported too (the library's restricted profile).
  audit_results Deployment legacy podSecurity/runAsNonRoot | grep -qx warn || fail "no audit-mode finding: $report"
  jq -e '[.results[].resources[0].kind] | all(. == "Deployment" or . == "Pod")' <<<"$report" >/dev/null || fail "owned objects reported: $report"
  jq -e '[.results[] | select(.resources[0].kind == "Pod")] | all(.resources[0].name == "bare")' <<<"$report" >/dev/null || fail "owned pods reported: $report"
  jq -e '.results[] | select(.resources[0].name == "legacy" and .rule == "images/disallowedTags")
      | .properties.path == "spec.template.spec.containers[0].image"' <<<"$report" >/dev/null || fail "no field path: $report"
  # The summary counts what the results list (nothing was cut here).
  jq -e '.summary.fail == ([.results[] | select(.result == "fail")] | length)
      and .summary.warn == ([.results[] | select(.result == "warn")] | length)
      and .summary.skip == 1' <<<"$report" >/dev/null \
    || fail "summary: $(jq -c '.summary, [.results[] | [.resources[0].name, .rule, .result]]' <<<"$report")"
  [[ $(auditor_metric 1 palisade_audit_leader) == 0 ]] || fail "two leaders"
  [[ $(kubectl get lease palisade-audit -n default -o 'jsonpath={.spec.holderIdentity}') == auditor-0-* ]] || fail "Lease holder"
  # A change reaches the report: the fixed workload's failure goes.
  kubectl set image -n e2e-audit deployment/legacy app=registry.k8s.io/pause:3.9 >/dev/null
  wait_for "legacy fixed in the report" 20 bash -c "! kubectl get policyreport palisade-admission -n e2e-audit -o json | jq -e '.results[] | select(.resources[0].name == \"legacy\" and .rule == \"images/disallowedTags\")' >/dev/null" \
    || fail "the fix did not reach the report: $(audit_report | jq -c '.results[] | [.resources[0].name, .rule, .result]')"
  # The exception runs out: what it covered fails.
  wait_for "exception expired in the report" 60 bash -c "[[ \$(kubectl get policyreport palisade-admission -n e2e-audit -o json | jq -r '.results[] | select(.resources[0].name == \"tagged\" and .rule == \"images/disallowedTags\") | .result') == fail ]]" \
    || fail "the expired exception still skips: $(audit_report | jq -c '.results[] | [.resources[0].name, .rule, .result]')"
  audit_report | jq -e '.results[] | select(.resources[0].name == "tagged" and .rule == "images/disallowedTags") | .message | contains("has expired")' >/dev/null \
    || fail "the failure does not name the expired exception"
  local writes
  writes=$(auditor_metric 0 'palisade_audit_report_writes_total{op="apply"}')
  ((writes >= 3 && writes <= 8)) || fail "auditor 0 wrote the report $writes times for 3 changes"
  # The leader stops (releasing the Lease); the other takes over, adopts the
  # report and keeps it current: with every workload gone, it is deleted.
  stop_bg palisade-audit-0
  wait_for "auditor 1 leads" 30 bash -c "[[ \$(curl -fsS --cacert '$WORK/audit-tls-1/ca.crt' https://127.0.0.1:${AUDIT_PORTS[1]}/metrics | awk '\$1 == \"palisade_audit_leader\" {print \$2}') == 1 ]]" \
    || fail "no takeover: $(tail -5 "$WORK/logs/palisade-audit-1.log")"
  kubectl delete -n e2e-audit deployment/legacy deployment/tagged pod/bare --wait=false >/dev/null
  wait_for "the report deleted with its findings" 30 bash -c "! kubectl get policyreport palisade-admission -n e2e-audit >/dev/null 2>&1" \
    || fail "report still there: $(audit_report | jq -c '.results[] | [.resources[0].kind, .resources[0].name, .rule, .result]')"
  stop_bg palisade-audit-1
  kubectl delete namespace e2e-audit --wait=false >/dev/null
}

# ---------------------------------------------------------------- main

echo "work dir: $WORK"
mkdir -p "$POLICIES"
cp "$ROOT"/policies/*.yaml "$POLICIES/"
# Prevention for the generated pods that carry the label (see case shapes).
cat >"$POLICIES/e2e-prevent.yaml" <<'YAML'
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: e2e-prevent}
spec:
  mode: audit
  selector: {podLabels: {palisade.dev/e2e-prevent: "true"}}
  runtime: {prevent: true}
YAML
# What the cases that start servers of their own load while case_latest_*
# switches a mode back and forth in $POLICIES.
POLICIES_AT_START="$WORK/policies-at-start"
cp -R "$POLICIES" "$POLICIES_AT_START"
SUITE_STARTED=$EPOCHREALTIME
start_control_plane
start_webhook "$POLICIES"
register_webhooks Fail
new_namespace e2e-in yes
new_namespace e2e-out no
new_namespace e2e-psa yes pod-security.kubernetes.io/enforce=restricted
new_namespace e2e-shapes yes
new_namespace e2e-crd no palisade.dev/e2e-crd=yes
# Applied here as well as in the cases that use it, which run side by side.
kubectl apply -f "$ROOT/tests/e2e/policyreport-crd.yaml" >/dev/null
wait_for "CRD policyreports.wgpolicyk8s.io established" 30 kubectl wait --for condition=established --timeout=5s crd/policyreports.wgpolicyk8s.io
echo "    control plane and webhook up ($(elapsed_since "$SUITE_STARTED") s)"

# Cases that bring their own servers, ports and namespaces (and mostly wait)
# run beside the rest. They keep out of what the others count or switch:
# the main webhook, its registration and policies, and the opted-in namespaces.
# Each line runs in order; the chart's server dry run (which includes
# Palisade's CRDs) comes before the case that creates them.
PARALLEL_CASES=(
  "case_background_audit_reports_pre_existing_workloads"
  "case_helm_chart_lints_and_applies case_runtime_policy_and_exception_resources_are_watched"
  "case_sigterm_keeps_serving_with_readiness_503_while_draining"
)
# The rest share the main webhook, which some of them restart or register
# elsewhere for a while: one after the other.
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
  case_every_pod_shape_is_stored_by_the_apiserver
  case_a_container_posing_as_the_enforcer_is_denied
  case_mutate_is_called_once_per_pod_and_the_enforcer_gets_no_api_token
  case_request_only_containers_pass_the_resource_limits_policy
  case_template_metadata_updates_are_rejudged
  case_classic_sidecar_mode_stays_available
  case_webhook_down_failure_policy
  case_enforcer_tokens_verified_by_tokenreview
  case_status_explains_pods_from_before_the_label_and_check_cluster_what_enforce_would_deny
)
selected() { [[ -z "${E2E_ONLY:-}" || "$1" == *"$E2E_ONLY"* ]]; }
for line in "${PARALLEL_CASES[@]}"; do
  chain=()
  for c in $line; do
    if selected "$c"; then chain+=("$c"); fi
  done
  if ((${#chain[@]})); then run_cases_bg "${chain[@]}"; fi
done
for c in "${CASES[@]}"; do
  if selected "$c"; then run_case "$c"; fi
done
wait_cases
print_case_times "$(elapsed_since "$SUITE_STARTED")"

echo
echo "e2e: $PASSED passed, ${#FAILED[@]} failed"
if ((${#FAILED[@]})); then
  printf '  failed: %s\n' "${FAILED[@]}"
  exit 1
fi
