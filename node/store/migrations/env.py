"""Alembic environment for the node's store."""

from __future__ import annotations

from alembic import context

from node.clinical import models as clinical_models  # noqa: F401 - registers the fact tables
from node.query import models as query_models  # noqa: F401 - registers the query tables
from node.release import models as release_models  # noqa: F401 - registers the release tables
from node.store.db import make_engine
from node.store.models import Base

config = context.config


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=url.startswith("sqlite"),  # SQLite alters tables by copying
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
