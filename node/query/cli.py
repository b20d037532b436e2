"""`havenet node ontology-load`: the vocabularies into the node's database (queries expand
concepts with them; `serve` loads them at start unless ``ontology_at_start`` is off)."""

from __future__ import annotations

import typer

from node.federation.cli import ConfigOption, DataDirOption, _settings
from node.store.db import make_engine, migrate
from ontology import loader


def ontology_load(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Load the vocabularies into the node's database (once)."""
    settings = _settings(config, data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.database)
    engine = make_engine(settings.database)
    try:
        loaded = loader.ensure_loaded(engine)
    finally:
        engine.dispose()
    typer.echo("vocabularies loaded" if loaded else "vocabularies already loaded")
