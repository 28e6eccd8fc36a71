"""The SQL catalogue: SQLAlchemy models, Alembic migrations, the idempotent loader."""
