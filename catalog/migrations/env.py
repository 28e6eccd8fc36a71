"""Alembic environment for the catalogue (run from code: see catalog/db/migrate.py).

The caller passes an open connection in ``config.attributes["connection"]`` (so a URL
with a password never goes through a config file or a log line); a bare URL in
``sqlalchemy.url`` works too, for the ``alembic`` command line.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from catalog.db.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs) -> None:
    context.configure(target_metadata=target_metadata, compare_type=True, **kwargs)
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
               dialect_opts={"paramstyle": "named"})


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")


if context.is_offline_mode():
    run_offline()
else:
    run_online()
