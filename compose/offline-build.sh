#!/usr/bin/env bash
# Build the hub and node images where Docker Hub cannot be reached but a Debian mirror and
# PyPI can (how they were built and run on the project's CI machines): a Debian base made
# with debootstrap, Python 3.11 from Debian, then compose/Dockerfile on top of it; and
# stand-ins for the postgres and orthancteam/orthanc images made from Debian's packages, for
# compose.yaml's HUB_DB_IMAGE and PACS_IMAGE (README.md, "Built and run with podman").
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

# postgres:15-bookworm's first start, for the variables compose.yaml sets. UTF8: on a
# SQL_ASCII database (initdb's default without a locale) psycopg returns bytes and the hub
# does not start.
mkdir "$work/postgres"
cat >"$work/postgres/entrypoint.sh" <<'SH'
#!/bin/sh
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --encoding=UTF8 --locale=C.UTF-8 --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "${POSTGRES_DB:-postgres}" != postgres ]; then
        createdb -U "$POSTGRES_USER" "$POSTGRES_DB"
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*'
SH
cat >"$work/postgres/Containerfile" <<'IMAGE'
FROM localhost/debian:bookworm
RUN mkdir -p /etc/postgresql-common \
    && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data
COPY --chmod=755 entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
IMAGE
$PODMAN build "${BUILD_FLAGS[@]}" -t localhost/postgres:15-bookworm "$work/postgres"

# orthancteam/orthanc's configuration from ORTHANC__* variables, for one level of keys
# (ORTHANC__DICOM_AET=X is {"DicomAet": "X"}; JSON values are parsed), and its health probe.
mkdir "$work/orthanc"
cat >"$work/orthanc/entrypoint.py" <<'ENTRYPOINT'
#!/usr/bin/python3
import json
import os
import tempfile

config = {"StorageDirectory": "/var/lib/orthanc/db", "IndexDirectory": "/var/lib/orthanc/db",
          "RemoteAccessAllowed": True}
for name, value in os.environ.items():
    if name.startswith("ORTHANC__"):
        key = "".join(word.capitalize() for word in name[len("ORTHANC__"):].split("_"))
        try:
            config[key] = json.loads(value)
        except ValueError:
            config[key] = value
path = os.path.join(tempfile.mkdtemp(), "orthanc.json")
with open(path, "w") as file:
    json.dump(config, file)
os.execv("/usr/sbin/Orthanc", ["Orthanc", path])
ENTRYPOINT
cat >"$work/orthanc/test-aliveness.py" <<'PROBE'
#!/usr/bin/python3
"""Alive when Orthanc's REST API answers at all (401 included: authentication is on)."""
import sys
import urllib.error
import urllib.request

try:
    urllib.request.urlopen("http://127.0.0.1:8042/system", timeout=4)
except urllib.error.HTTPError as error:
    sys.exit(0 if error.code == 401 else 1)
except OSError:
    sys.exit(1)
PROBE
cat >"$work/orthanc/Containerfile" <<'IMAGE'
FROM localhost/debian:bookworm
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends orthanc python3 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o orthanc -g orthanc /var/lib/orthanc/db
COPY --chmod=755 entrypoint.py /usr/local/bin/orthanc-entrypoint
COPY --chmod=755 test-aliveness.py /probes/test-aliveness.py
USER orthanc
EXPOSE 4242 8042
ENTRYPOINT ["/usr/local/bin/orthanc-entrypoint"]
IMAGE
$PODMAN build "${BUILD_FLAGS[@]}" -t localhost/orthanc:bookworm "$work/orthanc"

$PODMAN images --filter reference='havenet-*' --filter reference='localhost/postgres' \
    --filter reference='localhost/orthanc'
