"""What a node remembers of its enrollment: the hub's URL, its node id and name.

Kept as ``federation/enrollment.json`` in the node's data folder, beside its key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from common.errors import ConfigurationError
from node.federation.exceptions import NotEnrolled
from node.federation.keys import federation_dir

ENROLLMENT_FILE = "enrollment.json"


@dataclass(frozen=True)
class Enrollment:
    hub_url: str
    node_id: str
    name: str


def enrollment_path(data_dir: Path) -> Path:
    return federation_dir(data_dir) / ENROLLMENT_FILE


def is_enrolled(data_dir: Path) -> bool:
    return enrollment_path(data_dir).is_file()


def load(data_dir: Path) -> Enrollment:
    path = enrollment_path(data_dir)
    if not path.is_file():
        raise NotEnrolled()
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        return Enrollment(
            hub_url=str(values["hub_url"]), node_id=str(values["node_id"]), name=str(values["name"])
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"{path}: not a valid enrollment file ({type(exc).__name__}); enroll again"
        ) from None


def save(data_dir: Path, enrollment: Enrollment) -> Path:
    path = enrollment_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(asdict(enrollment), indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path
