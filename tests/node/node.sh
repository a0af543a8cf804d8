# shellcheck shell=bash
# Sourced by tests/node/run.sh, inside the suite's own network namespace:
# one real node (containerd + runc + CNI bridge, kubelet, kube-proxy,
# kube-scheduler, CoreDNS) beside the control plane from tests/e2e/cluster.sh.
#
# Addresses (all inside the namespace):
#   NODE_IP       on lo: apiserver, kubelet, CoreDNS (:53, behind the
#                 kube-dns Service 10.0.0.10)
#   10.244.0.0/24 Pods, on the CNI bridge cni0 (gateway 10.244.0.1)
#   10.0.0.0/24   Services (kube-proxy, iptables mode)

NODE_NAME="palisade-node"
NODE_IP="${NODE_IP:-172.31.0.1}"
POD_CIDR="10.244.0.0/24"
# Cluster DNS as in any cluster: the kube-dns Service; its endpoint is CoreDNS
# on the node.
DNS_SERVICE_IP="10.0.0.10"
PAUSE_IMAGE="palisade.test/pause:$K8S_VERSION"
CONTAINERD_SOCK="$WORK/containerd/containerd.sock"
# The node's Pods live under their own cgroup in every hierarchy: two runs
# never share kubepods, and cleanup removes just this tree.
CGROUP_ROOT="/palisade-e2e-$$"

# Interfaces and kernel settings of the node's network namespace.
setup_node_network() {
  ip link set lo up
  # The node's address lives on lo (these kernels have no dummy driver):
  # local all the same, and Pods reach it through their default route.
  ip addr add "$NODE_IP/32" dev lo
  # Per-namespace settings: routing for Pods, and bridged Pod-to-Pod traffic
  # through iptables so Service replies are un-NATed (br_netfilter is a
  # module on stock kernels, built in on some).
  modprobe br_netfilter 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  sysctl -qw net.ipv4.conf.all.route_localnet=1
  # The node has no default route; Service addresses need one to reach
  # kube-proxy's DNAT in OUTPUT (after which packets are routed to Pods).
  ip route add 10.0.0.0/24 dev lo
}

start_containerd() {
  local d="$WORK/containerd"
  mkdir -p "$d/root" "$d/state" "$WORK/cni/net.d" "$WORK/cni/ipam"
  cat >"$WORK/cni/net.d/10-palisade-e2e.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "palisade-e2e",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {"type": "host-local", "dataDir": "$WORK/cni/ipam",
               "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
  cat >"$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # These VMs withhold CAP_SYS_RESOURCE: an OOM score below containerd's own
  # (the kubelet asks -998 for sandboxes) cannot be set.
  restrict_oom_score_adj = true
  # Pod network namespaces and runc state under the suite's directory: all of
  # it goes when the suite does.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$d/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${CNI_BIN_DIR:-/usr/lib/cni}"
    conf_dir = "$WORK/cni/net.d"
  # Per-registry hosts.toml files (registry_hosts), read at each pull.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$d/certs.d"
TOML
  start_bg containerd containerd --config "$d/config.toml"
  wait_for containerd 30 ctr --address "$CONTAINERD_SOCK" version
}

# Lets the node pull from a registry over plain HTTP, as containerd's
# hosts.toml says for any mirror or private registry.
registry_hosts() { # host:port
  local dir="$WORK/containerd/certs.d/$1"
  mkdir -p "$dir"
  printf 'server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$1" "$1" >"$dir/hosts.toml"
}

# Imports an OCI archive into the namespace the kubelet's runtime uses.
import_image() { # archive
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$1" >/dev/null
}

# Host-wide kernel settings the kubelet adjusts at start (its "kernel
# defaults"); saved here and put back by stop_node.
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# The node's kubelet, kube-proxy, kube-scheduler and CoreDNS.
start_node() {
  local s
  for s in "${KUBELET_SYSCTLS[@]}"; do
    echo "$s=$(sysctl -n "$s")"
  done >"$WORK/host-sysctls"
  local d="$WORK/pki" k="$WORK/kubelet"
  mkdir -p "$k/root"
  : >"$k/resolv.conf"
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    mkdir -p "$hierarchy${CGROUP_ROOT#/}"
  done
  cat >"$k/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$d/ca.crt"}
authorization: {mode: Webhook}
address: "$NODE_IP"
healthzBindAddress: 127.0.0.1
containerRuntimeEndpoint: "unix://$CONTAINERD_SOCK"
cgroupDriver: cgroupfs
cgroupRoot: "$CGROUP_ROOT"
failSwapOn: false
clusterDNS: ["$DNS_SERVICE_IP"]
clusterDomain: cluster.local
resolvConf: "$k/resolv.conf"
podLogsDir: "$k/pod-logs"
# A test node on a shared disk: never evict for disk or image pressure.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 5s
YAML
  start_bg kubelet kubelet --config "$k/config.yaml" --kubeconfig "$KUBECONFIG" \
    --root-dir "$k/root" --cert-dir "$k/pki" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1

  cat >"$WORK/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$KUBECONFIG"}
mode: iptables
clusterCIDR: "$POD_CIDR"
hostnameOverride: "$NODE_NAME"
bindAddress: "$NODE_IP"
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Leave the host's conntrack table sizes alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
  start_bg kube-proxy kube-proxy --config "$WORK/kube-proxy.yaml"

  start_bg kube-scheduler kube-scheduler --kubeconfig "$KUBECONFIG" \
    --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 10259

  cat >"$WORK/Corefile" <<CORE
.:53 {
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG e2e
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
CORE
  start_bg coredns coredns -conf "$WORK/Corefile"
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $DNS_SERVICE_IP
  ports:
    - {name: dns, port: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
YAML

  wait_for "node $NODE_NAME Ready" 120 \
    bash -c "kubectl get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
  wait_for "CoreDNS ready" 60 curl -fsS http://127.0.0.1:18181/ready
}

stop_node() {
  local name id
  for name in kube-scheduler kube-proxy coredns kubelet; do stop_bg "$name"; done
  # Pods' containers outlive the kubelet: kill and delete them through the
  # runtime, so no shim is left behind.
  local sandboxes=""
  if [[ -S "$CONTAINERD_SOCK" ]]; then
    sandboxes=$(ctr --address "$CONTAINERD_SOCK" -n k8s.io containers ls -q 2>/dev/null || true)
    for id in $(runtime_task_ids); do
      ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks kill -s KILL "$id" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for id in $(runtime_task_ids); do
      ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_bg containerd
  # Shims of tasks that would not delete: identified by this runtime's socket.
  pkill -KILL -f -- "-address $CONTAINERD_SOCK" 2>/dev/null || true
  # Volume mounts the kubelet made (secrets, projected tokens) and container roots.
  grep -o " $WORK/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # Any process left in a Pod cgroup, then the cgroups themselves.
  local cg
  for cg in /sys/fs/cgroup/*/"${CGROUP_ROOT#/}"; do
    [[ -d "$cg" ]] || continue
    # shellcheck disable=SC2038 # xargs gets PIDs (the files' contents), not file names
    find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  done
  sleep 0.5
  for cg in /sys/fs/cgroup/*/"${CGROUP_ROOT#/}"; do
    [[ -d "$cg" ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  # What the kubelet and the CNI plugins write to fixed host paths.
  find /var/log/containers -maxdepth 1 -lname "$WORK/*" -delete 2>/dev/null || true
  rm -f /var/lib/cni/results/palisade-e2e-* 2>/dev/null || true
  for id in $sandboxes; do rm -f /var/lib/cni/results/*-"$id"-* 2>/dev/null || true; done
  if [[ -f "$WORK/host-sysctls" ]]; then
    local setting
    while read -r setting; do sysctl -qw "$setting" || true; done <"$WORK/host-sysctls"
  fi
  return 0
}

runtime_task_ids() {
  ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null || true
}
