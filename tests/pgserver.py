"""A real PostgreSQL server for the tests that run the services' stores on Postgres: `initdb` into
a temporary folder and `pg_ctl start` on a free loopback port, as the `postgres` system user
(PostgreSQL refuses to run as root). Debian's `postgresql` package provides both (.ci/run)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sentinel.kafka import free_port


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(f"no `{name}`: install Debian's postgresql package (.ci/run does)")
    return found


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


@contextmanager
def postgres_server(root: Path) -> Iterator[str]:
    """Yield the server's base URL `postgresql://sentinel@127.0.0.1:PORT`; stopped at the end."""
    data, sockets = root / "data", root / "sockets"
    for folder in (root, data, sockets):
        folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        for folder in (data, sockets):
            shutil.chown(folder, "postgres")
    # The postgres user must be able to reach the folder through every parent.
    for parent in root.parents:
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o005)
    subprocess.run(
        _as_postgres(
            _binary("initdb"), "-D", str(data), "-U", "sentinel", "--auth=trust", "-E", "UTF8"
        ),
        check=True,
        capture_output=True,
    )
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    log = root / "server.log"
    subprocess.run(
        _as_postgres(
            _binary("pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start"
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://sentinel@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_postgres(_binary("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"),
            check=False,
            capture_output=True,
        )


def new_database(server_url: str) -> str:
    """A fresh database on the server; its URL."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server_url}/{name}"
