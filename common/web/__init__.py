"""What the hub's and the node's pages share: the session cookie, server-drawn charts and
the style sheet (served by each app at ``/ui/assets``)."""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"
