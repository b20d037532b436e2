"""The container deployment, checked without Docker (no daemon on the machines that run the
tests): the compose file parses, sets only settings that exist, with values the hub and the
nodes accept; a missing secret stops it; every service is health-checked and waits on the
health of what it needs; and the images run `havenet` commands that exist, as non-root.

Compose's variable interpolation is re-implemented here for the forms the file uses
(``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``, ``$$``), after the compose
specification; the images themselves are not built.
"""

from __future__ import annotations

import importlib.util
import json
import re
import secrets
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import uvicorn
import yaml
from typer.testing import CliRunner

from compose.cli import app as havenet
from hub.main import create_app as create_hub
from hub.settings import HubSettings
from node.main import create_app as create_node
from node.settings import NodeSettings

COMPOSE = Path(__file__).resolve().parents[3] / "compose"
COMPOSE_FILE = COMPOSE / "compose.yaml"
DOCKERFILE = COMPOSE / "Dockerfile"
REPOSITORY = COMPOSE.parent

SECRET_WORDS = ("SECRET", "KEY", "TOKEN", "PASSWORD")
HAVENET_SERVICES = {"hub": "hub", "node-a": "node", "node-b": "node"}


class MissingVariable(Exception):
    pass


_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:\?|:-)(?P<arg>[^}]*))?\}"
)


def interpolate(text: str, environ: dict[str, str]) -> str:
    """Compose's interpolation: ``:?`` stops with its message when unset or empty."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = environ.get(name, "")
        if value:
            return value
        if op == ":?":
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        return arg if op == ":-" else ""

    return _VARIABLE.sub(substitute, text)


def required_variables() -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", COMPOSE_FILE.read_text()))


def filled_in() -> dict[str, str]:
    """A value for each required variable, as `openssl rand -hex 32` would make it."""
    return {name: secrets.token_hex(32) for name in required_variables()}


def compose(environ: dict[str, str] | None = None) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        interpolate(COMPOSE_FILE.read_text(), filled_in() if environ is None else environ)
    )
    return loaded


def service_env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in compose()["services"][service]["environment"].items()}


# -- the compose file -------------------------------------------------------------------------


def test_the_compose_file_has_a_hub_its_database_and_two_hospitals() -> None:
    services = set(compose()["services"])

    assert services == {"hub-db", "hub", "pacs-a", "node-a", "pacs-b", "node-b"}


def test_every_havenet_variable_is_a_setting_of_the_hub_or_the_node() -> None:
    fields = {
        "hub": {f"HAVENET_HUB_{name.upper()}" for name in HubSettings.model_fields},
        "node": {f"HAVENET_NODE_{name.upper()}" for name in NodeSettings.model_fields},
    }
    for service, kind in HAVENET_SERVICES.items():
        names = {n.split("__")[0] for n in service_env(service) if n.startswith("HAVENET_")}
        assert names, service
        assert names <= fields[kind], (service, names - fields[kind])
    for kind, names in dockerfile_env().items():
        assert {n for n in names if n.startswith("HAVENET_")} <= fields[kind], kind


def test_the_hubs_environment_makes_settings_the_hub_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {**dockerfile_env()["hub"], **service_env("hub")}.items():
        monkeypatch.setenv(name, value)

    settings = HubSettings()

    settings.secret_bytes()  # a good secret, or a ConfigurationError
    assert settings.database.startswith("postgresql+psycopg://havenet:")
    assert settings.database.endswith("@hub-db:5432/havenet")
    assert (settings.host, settings.port) == ("0.0.0.0", 8443)  # noqa: S104 - in its container


@pytest.mark.parametrize(("node", "pacs"), [("node-a", "pacs-a"), ("node-b", "pacs-b")])
def test_each_node_and_its_pacs_are_wired_to_each_other(
    monkeypatch: pytest.MonkeyPatch, node: str, pacs: str
) -> None:
    for name, value in {**dockerfile_env()["node"], **service_env(node)}.items():
        monkeypatch.setenv(name, value)
    orthanc = service_env(pacs)

    settings = NodeSettings()

    settings.validate_secrets()
    (target,) = settings.pacs
    assert (target.host, target.port) == (pacs, int(orthanc["ORTHANC__DICOM_PORT"]))
    assert target.ae_title == orthanc["ORTHANC__DICOM_AET"]
    assert settings.allowed_peers == [orthanc["ORTHANC__DICOM_AET"]]
    (modality,) = json.loads(orthanc["ORTHANC__DICOM_MODALITIES"]).values()
    assert modality == [settings.ae_title, node, settings.dicom_port]


def test_every_secret_is_required_with_a_message() -> None:
    text = COMPOSE_FILE.read_text()
    referenced = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    secret_like = {name for name in referenced if any(w in name for w in SECRET_WORDS)}

    assert secret_like
    assert secret_like <= required_variables()
    assert not re.search(r"\$\{[A-Z_]*(SECRET|KEY|TOKEN|PASSWORD)[A-Z_]*:-", text)
    for service, kind in HAVENET_SERVICES.items():
        prefix = f"HAVENET_{kind.upper()}_"
        secret_settings = {
            f"{prefix}{field.upper()}"
            for field, info in (HubSettings if kind == "hub" else NodeSettings).model_fields.items()
            if "SecretStr" in str(info.annotation) and "list" not in str(info.annotation)
        }
        raw = yaml.safe_load(text)["services"][service]["environment"]
        for name in secret_settings & set(raw):
            assert re.fullmatch(r".*\$\{[A-Z0-9_]+:\?[^}]+\}.*", raw[name]), (service, name)


@pytest.mark.parametrize("missing", sorted(required_variables()))
def test_a_missing_secret_stops_the_start_naming_it(missing: str) -> None:
    environ = filled_in()
    del environ[missing]

    with pytest.raises(MissingVariable, match=missing):
        compose(environ)


def test_every_service_has_a_health_check_and_waits_on_the_health_of_what_it_needs() -> None:
    services = compose()["services"]

    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), name
        for needed, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, (name, needed)
            assert services[needed]["healthcheck"]["test"], needed
    assert set(services["node-a"]["depends_on"]) == {"pacs-a", "hub"}
    assert set(services["hub"]["depends_on"]) == {"hub-db"}


def test_published_ports_listen_on_the_hosts_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_state_lives_in_named_volumes() -> None:
    loaded = compose()
    for name in ("hub-db", "hub", "node-a", "node-b", "pacs-a", "pacs-b"):
        (volume,) = loaded["services"][name]["volumes"]
        assert volume.split(":")[0] in loaded["volumes"], name


# -- the health checks ----------------------------------------------------------------------


def healthcheck_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "havenet_healthcheck", COMPOSE / "images" / "healthcheck.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_havenet_services_health_checks_run_the_images_probe() -> None:
    services = compose()["services"]
    copied = dockerfile_copies()

    for service, kind in HAVENET_SERVICES.items():
        command = services[service]["healthcheck"]["test"]
        assert command[0] == "CMD"
        assert command[2] in copied.values(), command
        assert command[3] == kind


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[dict[str, int]]:
    """The hub's and the node's own apps on loopback ports (their /health needs no state)."""
    secret = secrets.token_hex(32)
    apps = {
        "hub": create_hub(HubSettings(data_dir=tmp_path / "hub", secret=secret)),  # type: ignore[arg-type]
        "node": create_node(NodeSettings(data_dir=tmp_path / "node")),
    }
    servers, ports = [], {}
    for kind, app in apps.items():
        ports[kind] = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=ports[kind], lifespan="off", log_config=None
        )
        server = uvicorn.Server(config)
        threading.Thread(target=server.run, daemon=True).start()
        servers.append(server)
    deadline = time.monotonic() + 10
    while not all(server.started for server in servers) and time.monotonic() < deadline:
        time.sleep(0.02)
    yield ports
    for server in servers:
        server.should_exit = True


def test_the_probe_reports_a_serving_hub_and_node_healthy(
    serving: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = healthcheck_script()
    monkeypatch.setenv("HAVENET_HUB_PORT", str(serving["hub"]))
    monkeypatch.setenv("HAVENET_NODE_API_PORT", str(serving["node"]))

    assert probe.main(["havenet-healthcheck", "hub"]) == 0
    assert probe.main(["havenet-healthcheck", "node"]) == 0


def test_the_probe_reports_a_service_that_does_not_answer_unhealthy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = healthcheck_script()
    monkeypatch.setenv("HAVENET_NODE_API_PORT", str(free_port()))

    assert probe.main(["havenet-healthcheck", "node"]) == 1


# -- the images -----------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions (continuation lines joined), by stage name."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            current = stages.setdefault(rest.split()[-1], [])
        current.append((instruction.upper(), rest.strip()))
    return stages


def dockerfile_env() -> dict[str, dict[str, str]]:
    found = {}
    for target in ("hub", "node"):
        names: dict[str, str] = {}
        for instruction, rest in dockerfile_stages()[target]:
            if instruction == "ENV":
                names.update(item.split("=", 1) for item in shlex.split(rest))
        found[target] = names
    return found


def dockerfile_copies() -> dict[str, str]:
    """Source -> destination of every COPY from the build context."""
    copies = {}
    for instructions in dockerfile_stages().values():
        for instruction, rest in instructions:
            if instruction == "COPY" and not rest.startswith("--from"):
                *sources, destination = rest.split()
                copies.update(dict.fromkeys(sources, destination))
    return copies


def final_instruction(target: str, name: str) -> str:
    return [rest for instruction, rest in dockerfile_stages()[target] if instruction == name][-1]


@pytest.mark.parametrize("target", ["hub", "node"])
def test_each_image_runs_a_havenet_command_that_exists(target: str) -> None:
    entrypoint = json.loads(final_instruction(target, "ENTRYPOINT"))
    command = json.loads(final_instruction(target, "CMD"))

    assert entrypoint == ["havenet"]
    assert command == [target, "serve"]
    result = CliRunner().invoke(havenet, [*command, "--help"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("target", ["hub", "node"])
def test_each_image_runs_as_a_non_root_user_with_a_health_check(target: str) -> None:
    user = final_instruction(target, "USER")
    healthcheck = final_instruction(target, "HEALTHCHECK")

    assert user.split(":")[0] not in {"0", "root"}
    assert healthcheck.endswith(f'CMD ["python", "/usr/local/bin/havenet-healthcheck", "{target}"]')


def test_the_images_are_built_from_files_the_build_context_sends() -> None:
    ignored = (COMPOSE / "Dockerfile.dockerignore").read_text().splitlines()
    sent = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}

    for source in dockerfile_copies():
        assert (REPOSITORY / source).exists(), source
        assert source.split("/")[0] in sent, source
