"""The one dbt project of the lake, its manifest, and the translator that aligns asset keys.

dbt model names are the Dagster asset keys (`silver_events`, `host_activity_5m`); the bronze
sources map onto the Python landing assets (`bronze_events`, ...), so the graph is one piece.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
)

from sentinel.settings import PROJECT_ROOT

DBT_DIR = PROJECT_ROOT / "dbt"
# Models a data engineer looks at for what went wrong rather than for analytics.
QUALITY_MODELS = frozenset({"silver_dead_letters"})
GOLD_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=3), warn_window=timedelta(hours=2)
)

dbt_project = DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)


def _newest_source(project_dir: Path) -> float:
    files = [project_dir / "dbt_project.yml", project_dir / "profiles.yml"]
    for folder in ("models", "macros", "tests", "seeds"):
        files += [p for p in (project_dir / folder).rglob("*") if p.is_file()]
    return max((p.stat().st_mtime for p in files if p.exists()), default=0.0)


def dbt_executable() -> str:
    """dbt from this interpreter's environment (a venv is seldom on PATH)."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else "dbt"


def ensure_manifest(lake_duckdb: Path | None = None, project: DbtProject = dbt_project) -> Path:
    """Parse the project when its manifest is missing or older than a model, macro or test.

    dbt reuses a parse (partial parsing) only for the profile it was made with, so parse with
    the DuckDB path of the lake that runs will use; parsing never opens the file.
    """
    manifest = Path(project.manifest_path)
    if manifest.exists() and manifest.stat().st_mtime >= _newest_source(Path(project.project_dir)):
        return manifest
    duckdb_path = lake_duckdb or Path(project.project_dir) / "target" / "lake.duckdb"
    env = {
        **os.environ,
        "SENTINEL_LAKE_DUCKDB": str(duckdb_path),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    result = subprocess.run(
        [
            dbt_executable(),
            "parse",
            "--quiet",
            "--project-dir",
            str(project.project_dir),
            "--profiles-dir",
            str(project.profiles_dir),
            "--target-path",
            str(Path(project.target_path)),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"dbt parse failed for {project.project_dir}:\n{result.stdout}{result.stderr}"
        )
    return manifest


class SentinelDbtTranslator(DagsterDbtTranslator):
    """Model name = asset key; bronze sources = the landing assets; groups by layer."""

    def __init__(self) -> None:
        super().__init__(DagsterDbtTranslatorSettings(enable_code_references=False))

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey(f"{dbt_resource_props['source_name']}_{dbt_resource_props['name']}")
        return dg.AssetKey(dbt_resource_props["name"])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["name"] in QUALITY_MODELS:
            return "quality"
        return "lake"

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "model" and "gold" in props.get("fqn", []):
            spec = spec.replace_attributes(freshness_policy=GOLD_FRESHNESS)
        return spec


def dbt_resource(project: DbtProject = dbt_project) -> DbtCliResource:
    return DbtCliResource(
        project_dir=project, profiles_dir=str(project.profiles_dir), dbt_executable=dbt_executable()
    )
