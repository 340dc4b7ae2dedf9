"""Start a detection worker as a child process, exactly as users do, and ask its /health.

Used by `sentinel demo`, the worker tests and the stream benchmark, so all three run the real
`faust -A streams.app worker` command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from sentinel.settings import PROJECT_ROOT


def spawn_worker(
    env: dict[str, str], log: Path, *, loglevel: str = "info"
) -> subprocess.Popen[bytes]:
    """`faust -A streams.app worker -l <loglevel>` with its output appended to `log`."""
    faust = Path(sys.executable).parent / "faust"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(faust), "-A", "streams.app", "worker", "-l", loglevel],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def health(port: int, host: str = "127.0.0.1") -> dict[str, Any] | None:
    """The worker's /health document, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as response:
            return dict(json.loads(response.read()))
    except (OSError, ValueError):
        return None
