#!/usr/bin/env bash
# Build the hub and node images where Docker Hub cannot be reached but a Debian mirror and
# PyPI can (how they were built and run on the project's CI machines): a Debian base made
# with debootstrap, Python 3.11 from Debian, then compose/Dockerfile on top of it.
#
#   sudo compose/offline-build.sh            # from the repository root; needs podman, debootstrap
#
# MIRROR, TAG and PODMAN (e.g. "podman --cgroup-manager=cgroupfs --runtime runc", which a
# container host without systemd needs) can be set in the environment. A host whose egress
# goes through a proxy with its own CA: the base image trusts the host's CA bundle.
set -euo pipefail

MIRROR=${MIRROR:-http://deb.debian.org/debian}
TAG=${TAG:-dev}
PODMAN=${PODMAN:-podman}
BUILD_FLAGS=(--format docker --network host --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR" >/dev/null
tar -C "$work/rootfs" -c . | $PODMAN import - localhost/debian:bookworm >/dev/null

cp /etc/ssl/certs/ca-certificates.crt "$work/host-ca.crt"
cat >"$work/Containerfile" <<'IMAGE'
FROM localhost/debian:bookworm
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-venv ca-certificates \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && rm -rf /var/lib/apt/lists/*
COPY host-ca.crt /etc/ssl/certs/ca-certificates.crt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
IMAGE
$PODMAN build "${BUILD_FLAGS[@]}" -t localhost/python:3.11-bookworm "$work"

for target in hub node; do
    $PODMAN build "${BUILD_FLAGS[@]}" --build-arg PYTHON_IMAGE=localhost/python:3.11-bookworm \
        -f compose/Dockerfile --target "$target" -t "havenet-$target:$TAG" .
done
$PODMAN images --filter reference='havenet-*'
