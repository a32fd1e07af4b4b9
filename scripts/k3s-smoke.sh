#!/usr/bin/env bash
# Against a real cluster (the Vagrantfile's k3s): run the control plane with the Kubernetes source,
# apply deploy/k3s/smoke.yaml, and check what it serves and what it wrote back. Exits non-zero
# naming the first thing that is not as expected. Needs kubectl (or k3s) and a built checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBECONFIG="${KUBECONFIG:-/etc/rancher/k3s/k3s.yaml}"
export KUBECONFIG
kubectl() { if command -v kubectl >/dev/null; then command kubectl "$@"; else k3s kubectl "$@"; fi; }
fail() { echo "k3s-smoke: $*" >&2; exit 1; }

kubectl apply -f deploy/k3s/smoke.yaml
kubectl -n smoke rollout status deployment/web --timeout=180s

state=$(mktemp -d)
./bin/ambit controlplane --kubeconfig "$KUBECONFIG" --state-dir "$state" --listen 127.0.0.1 --serving-ip 127.0.0.1 >"$state/controlplane.log" 2>&1 &
cp_pid=$!
trap 'kill "$cp_pid" 2>/dev/null || true; wait "$cp_pid" 2>/dev/null || true; rm -rf "$state"' EXIT

debug() { curl -sf "http://127.0.0.1:15014$1"; }
for _ in $(seq 60); do debug /ready >/dev/null 2>&1 && break; sleep 1; done
debug /ready >/dev/null || { cat "$state/controlplane.log" >&2; fail "the control plane never became ready"; }

# Every web pod is a workload, HBONE only once an agent has recorded its redirection (none runs
# here, so TCP), and the service names its waypoint.
sleep 2
workloads=$(debug '/debug/config_dump?type=workloads')
for pod in $(kubectl -n smoke get pods -l app=web -o jsonpath='{.items[*].metadata.name}'); do
  echo "$workloads" | grep -q "Kubernetes//Pod/smoke/$pod" || fail "pod smoke/$pod is not served as a workload"
done
debug '/debug/config_dump?type=services' | grep -q 'web.smoke.svc.cluster.local' || fail "service smoke/web is not served"
debug '/debug/config_dump?type=services' | grep -q 'waypoint.smoke.svc.cluster.local' || fail "service smoke/web does not name its waypoint"

# Where each policy is enforced, through the CLI, and the status written to the objects.
./bin/ambit mesh-config policies --address 127.0.0.1:15014
./bin/ambit mesh-config policies --address 127.0.0.1:15014 -o json | grep -q '"ztunnel"' || fail "web-from-smoke is not enforced by ztunnel"
for _ in $(seq 30); do
  cond=$(kubectl -n smoke get authorizationpolicy web-get-only -o jsonpath='{.status.conditions[0].type}' 2>/dev/null || true)
  [ "$cond" = WaypointAccepted ] && break
  sleep 1
done
[ "$cond" = WaypointAccepted ] || fail "web-get-only has no WaypointAccepted status condition (got '$cond')"
kubectl -n smoke get authorizationpolicy web-from-smoke -o jsonpath='{.status.conditions[0].type}' | grep -q ZtunnelAccepted || fail "web-from-smoke has no ZtunnelAccepted status condition"

# An edit reaches the served state.
kubectl -n smoke scale deployment/web --replicas=3
kubectl -n smoke rollout status deployment/web --timeout=180s
sleep 2
n=$(debug '/debug/config_dump?type=workloads' | grep -o 'Kubernetes//Pod/smoke/web-' | wc -l)
[ "$n" -ge 3 ] || fail "after scaling to 3, $n web workloads are served"
echo "k3s-smoke: ok"
