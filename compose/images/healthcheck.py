"""Container health check: GET /health on the hub's or the node's own HTTP port.

``havenet-healthcheck hub|node``; exit status 0 when the service answers 200, else 1.
The port is the one the service listens on (HAVENET_HUB_PORT, HAVENET_NODE_API_PORT).
"""

from __future__ import annotations

import os
import sys
import urllib.request

PORTS = {"hub": ("HAVENET_HUB_PORT", "8443"), "node": ("HAVENET_NODE_API_PORT", "8080")}
TIMEOUT_SECONDS = 4


def health_url(service: str, environ: dict[str, str]) -> str:
    variable, default = PORTS[service]
    return f"http://127.0.0.1:{environ.get(variable, default)}/health"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in PORTS:
        sys.stderr.write("usage: havenet-healthcheck hub|node\n")
        return 2
    url = health_url(argv[1], dict(os.environ))
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - a fixed http URL
            return 0 if response.status == 200 else 1
    except OSError as exc:
        sys.stderr.write(f"{url}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
