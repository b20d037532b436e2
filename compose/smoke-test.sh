#!/usr/bin/env bash
# Smoke run of the hub and node images (compose/offline-build.sh) with podman on one host,
# host network, the hub on SQLite: a missing secret refuses the start, both health checks
# pass, the node enrolls, answers a C-ECHO, takes a C-STORE (DCMTK on the host), reports its
# status and its hub channel, and publishes its catalogue.
#
#   compose/smoke-test.sh FILE.dcm...        # PODMAN and TAG as for offline-build.sh
set -u
P=${PODMAN:-podman}
TAG=${TAG:-dev}
RUN="$P run --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --network host"
healthy() {  # podman runs health checks from systemd timers; without systemd, run them here
    for i in $(seq 90); do $P healthcheck run "$1" >/dev/null 2>&1 && break; sleep 1; done
    echo "$1 healthy after ~${i}s: $($P inspect --format '{{.State.Health.Status}}' "$1")"
}
$P rm -fv hv-hub hv-node >/dev/null 2>&1

echo "== a missing secret stops the start"
$RUN --rm "havenet-hub:$TAG" 2>&1 | tail -1
echo "== hub"
$RUN -d --name hv-hub -e "HAVENET_HUB_SECRET=$(openssl rand -hex 32)" \
    -e HAVENET_HUB_HOST=127.0.0.1 -e HAVENET_HUB_PORT=18443 "havenet-hub:$TAG" >/dev/null
healthy hv-hub
$P exec hv-hub havenet hub user add admin --role admin >/dev/null && echo "admin added"
TOKEN=$($P exec hv-hub havenet hub node add hospital-a | tail -1)
echo "== node"
$RUN -d --name hv-node -e "HAVENET_NODE_SITE_SECRET=$(openssl rand -hex 32)" \
    -e "HAVENET_NODE_CORRESPONDENCE_KEY=$(openssl rand -hex 32)" \
    -e "HAVENET_NODE_API_TOKEN=$(openssl rand -hex 32)" -e HAVENET_NODE_API_HOST=127.0.0.1 \
    -e HAVENET_NODE_API_PORT=18080 -e HAVENET_NODE_DICOM_PORT=11199 \
    -e HAVENET_NODE_AE_TITLE=HAVENET_A "havenet-node:$TAG" >/dev/null
healthy hv-node
echo "$TOKEN" | $P exec -i hv-node havenet node enroll http://127.0.0.1:18443 - | tail -1
$P restart hv-node >/dev/null  # its channel to the hub starts with the process
healthy hv-node
echo "== DICOM, status, channel, catalogue"
echoscu -aec HAVENET_A 127.0.0.1 11199 && echo "C-ECHO ok"
storescu -aec HAVENET_A 127.0.0.1 11199 "$@" && echo "C-STORE of $# file(s) ok"
sleep 3
$P exec hv-node havenet node status --json
$P exec hv-node havenet node federation status | tail -1
$P exec hv-node havenet node catalogue publish | tail -1
$P rm -fv hv-hub hv-node >/dev/null
