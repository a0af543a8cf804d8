#!/usr/bin/env bash
# Background audit at 1000 workloads, against a real control plane (etcd,
# kube-apiserver, kube-controller-manager from tests/e2e/cluster.sh): the
# apiserver writes it causes when 1000 Deployments are created, re-judged by
# a policy change and updated at once, how long reports take to settle, and
# the server's memory. Prints a RESULTS.md section; with --update FILE it
# replaces (or inserts) that section of FILE.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE_DIR="${PALISADE_E2E_CACHE:-$HOME/.cache/palisade-e2e}"
export PATH="$CACHE_DIR/bin:$PATH"
PALISADE_BIN="${PALISADE_BIN:-$ROOT/target/release/palisade}"
NAMESPACES="${AUDIT_NAMESPACES:-10}"
PER_NAMESPACE="${AUDIT_PER_NAMESPACE:-100}"
WORKLOADS=$((NAMESPACES * PER_NAMESPACE))
WORK="$(mktemp -d /tmp/palisade-audit-bench.XXXXXX)"
PORT=$((${E2E_WEBHOOK_PORT:-28443} + 7))
# Different ports from a running e2e suite's.
export E2E_ETCD_PORT="${E2E_ETCD_PORT:-23890}" E2E_API_PORT="${E2E_API_PORT:-26543}" E2E_WEBHOOK_PORT="${E2E_WEBHOOK_PORT:-28543}"

# shellcheck source=tests/e2e/cluster.sh
source "$ROOT/tests/e2e/cluster.sh"
trap 'stop_bg palisade-audit; stop_all; [[ -n "${KEEP_WORK:-}" ]] || rm -rf "$WORK"' EXIT

metric() { # name (with labels) -> value
  curl -fsS --cacert "$WORK/tls/ca.crt" "https://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2; f=1} END {if (!f) print 0}'
}
# Writes to policyreports the apiserver counted (create, patch, delete).
apiserver_writes() {
  kubectl get --raw /metrics | awk '/^apiserver_request_total\{/ && /resource="policyreports"/ && /verb="(POST|PATCH|DELETE|APPLY|CREATE)"/ {s += $NF} END {print s + 0}'
}
server_pid() { cat "$WORK/pids/palisade-audit.pid"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$(server_pid)/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$(server_pid)/status"; }
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$(server_pid)/stat"; }
now_ms() { date +%s%3N; }

# Every namespace's report satisfies a jq test on its summary.
reports_settled() { # jq expression on .summary
  local ns
  for ns in $(seq 1 "$NAMESPACES"); do
    kubectl get policyreport palisade-admission -n "bench-$ns" -o json 2>/dev/null \
      | jq -e ".summary | $1" >/dev/null || return 1
  done
}

# Counts over one phase: server applies, apiserver writes, milliseconds.
phase_start() { P_APPLY=$(metric 'palisade_audit_report_writes_total{op="apply"}'); P_API=$(apiserver_writes); P_T=$(now_ms); P_CPU=$(cpu_ms); }
phase_end() { # name
  local apply api t cpu
  apply=$(metric 'palisade_audit_report_writes_total{op="apply"}'); api=$(apiserver_writes); t=$(now_ms); cpu=$(cpu_ms)
  ROWS+=("| $1 | $((t - P_T)) | $((apply - P_APPLY)) | $((api - P_API)) | $((cpu - P_CPU)) |")
}

deployments() { # namespace
  local i
  for i in $(seq 1 "$PER_NAMESPACE"); do
    cat <<YAML
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: w$i, namespace: $1}
spec:
  replicas: 1
  selector: {matchLabels: {app: w$i}}
  template:
    metadata: {labels: {app: w$i}}
    spec:
      containers: [{name: app, image: registry.k8s.io/pause:3.10}]
YAML
  done
}

mkdir -p "$WORK/policies" "$WORK/logs"
cp "$ROOT"/policies/*.yaml "$WORK/policies/"
start_control_plane >/dev/null
kubectl apply -f "$ROOT/tests/e2e/policyreport-crd.yaml" >/dev/null
wait_for "PolicyReport CRD" 30 kubectl wait --for condition=established --timeout=5s crd/policyreports.wgpolicyk8s.io >/dev/null
for ns in $(seq 1 "$NAMESPACES"); do kubectl create namespace "bench-$ns" >/dev/null; done

start_bg palisade-audit env PALISADE_LISTEN="127.0.0.1:$PORT" PALISADE_TLS__SELF_SIGNED_DIR="$WORK/tls" \
  PALISADE_SERVICE__ENABLED=false PALISADE_POLICIES__DIR="$WORK/policies" PALISADE_POLICIES__RELOAD_INTERVAL_SECS=1 \
  PALISADE_AUDIT__ENABLED=true PALISADE_AUDIT__LEASE_NAMESPACE=default PALISADE_LOG__LEVEL=warn \
  KUBECONFIG="$KUBECONFIG" "$PALISADE_BIN" serve
wait_for "auditor" 30 curl -fsS --cacert "$WORK/tls/ca.crt" "https://127.0.0.1:$PORT/readyz" >/dev/null
wait_for "audit leader" 30 bash -c "[[ \$(curl -fsS --cacert '$WORK/tls/ca.crt' https://127.0.0.1:$PORT/metrics | awk '\$1 == \"palisade_audit_leader\" {print \$2}') == 1 ]]" >/dev/null
sleep 2
RSS_IDLE=$(rss_kib)
FLUSH=10
ROWS=()
# The clients of a phase, waited for by pid: a bare `wait` would also wait
# for the control plane started in the background.
CLIENTS=()

# 1. 1000 Deployments created at once (the controller-manager adds their
# ReplicaSets and Pods, which the audit watches and leaves to the template).
phase_start
for ns in $(seq 1 "$NAMESPACES"); do deployments "bench-$ns" | kubectl create -f - >/dev/null & CLIENTS+=($!); done
wait "${CLIENTS[@]}"
all_held() { [[ $(metric palisade_audit_workloads) -ge $WORKLOADS ]] && reports_settled '.warn > 0'; }
wait_for "reports of $WORKLOADS workloads" 300 all_held >/dev/null
sleep $((FLUSH + 2))
phase_end "$WORKLOADS Deployments created"
RSS_LOADED=$(rss_kib)
RESULTS_TOTAL=$(kubectl get policyreport palisade-admission -n bench-1 -o json | jq -r '.metadata.annotations["palisade.dev/results-total"]')
RESULTS_KEPT=$(kubectl get policyreport palisade-admission -n bench-1 -o json | jq '.results | length')
REPORT_BYTES=$(kubectl get policyreport palisade-admission -n bench-1 -o json | wc -c)

# 2. A policy change re-judges all of them at once.
phase_start
cat >"$WORK/policies/bench-tags.yaml" <<'YAML'
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: bench-no-pause-310}
spec:
  mode: enforce
  admission: {disallowedTags: ["3.10"]}
YAML
wait_for "every workload failing the new policy" 120 reports_settled ".fail == $PER_NAMESPACE" >/dev/null
sleep $((FLUSH + 2))
phase_end "policy change: $WORKLOADS re-judged"

# 3. Every workload updated at once.
phase_start
CLIENTS=()
for ns in $(seq 1 "$NAMESPACES"); do kubectl set image deployment --all -n "bench-$ns" app=registry.k8s.io/pause:3.9 >/dev/null & CLIENTS+=($!); done
wait "${CLIENTS[@]}"
wait_for "every update in the reports" 300 reports_settled '.fail == 0' >/dev/null
sleep $((FLUSH + 2))
phase_end "$WORKLOADS Deployments updated"
RSS_END=$(rss_kib)
HWM=$(hwm_kib)

section() {
  echo "## Background audit (\`make bench-audit\`)"
  echo
  echo "Measured $(date -u +%Y-%m-%d): one auditor against a real kube-apiserver, etcd and kube-controller-manager on this machine; $WORKLOADS Deployments in $NAMESPACES namespaces (the controller-manager adds $WORKLOADS ReplicaSets and Pods, which the audit watches and leaves to their Deployment). Reports are flushed every 10 s (the default). Each phase ends when every namespace's report shows the change, plus one flush."
  echo
  echo "| Phase | until settled (ms) | report writes by the auditor | policyreport writes counted by the apiserver | auditor CPU (ms) |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "- One report per namespace: $NAMESPACES objects for $WORKLOADS workloads. A report per workload would mean at least $WORKLOADS writes in each phase."
  echo "- Bounded: a namespace's report holds $RESULTS_KEPT of its $RESULTS_TOTAL findings ($REPORT_BYTES bytes as JSON); the summary counts all of them."
  echo "- Auditor memory (RSS): $((RSS_IDLE / 1024)) MiB with no workloads, $((RSS_LOADED / 1024)) MiB holding $WORKLOADS, $((RSS_END / 1024)) MiB after the updates; peak $((HWM / 1024)) MiB."
}

if [[ "${1:-}" == --update ]]; then
  file="$2"
  section >"$WORK/section.md"
  if grep -q '^## Background audit' "$file"; then
    # Replace the section up to the next heading.
    awk -v s="$WORK/section.md" '
      /^## Background audit/ {while ((getline line < s) > 0) print line; print ""; skip = 1; next}
      skip && /^## / {skip = 0}
      !skip {print}' "$file" >"$WORK/results.md"
  else
    awk -v s="$WORK/section.md" '
      /^## Container images/ && !done {while ((getline line < s) > 0) print line; print ""; done = 1}
      {print}' "$file" >"$WORK/results.md"
  fi
  mv "$WORK/results.md" "$file"
  echo "updated the background audit section of $file"
else
  section
fi
