"""Alembic environment: the URL comes from the Config that `services.policy.db.migrate` builds."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from services.policy.db import Base

url = context.config.get_main_option("sqlalchemy.url")
assert url, "run migrations through services.policy.db.migrate(url)"
connectable = create_engine(url)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
connectable.dispose()
