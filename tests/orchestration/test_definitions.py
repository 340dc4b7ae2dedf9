"""The Dagster code location that workspace.yaml names loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sentinel.settings import PROJECT_ROOT


def test_workspace_code_location_loads() -> None:
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "orchestration.definitions" in result.stdout + result.stderr
