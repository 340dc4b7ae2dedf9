"""The Feast store of `feature_repo/`, with its paths from the settings.

Training and scoring both come through here, so the same feature service yields the same columns
in the same order offline (point-in-time joins over the Parquet export) and online (SQLite).
"""

from __future__ import annotations

import copy
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from sentinel.settings import PROJECT_ROOT

FEATURE_REPO = PROJECT_ROOT / "feature_repo"
GOLD_TABLE = "gold.host_features_5m"
LABELS_TABLE = "gold.host_labels_5m"
EXPORT = Path("data") / "host_features_5m.parquet"
ENTITY = "host_id"
TIMESTAMP = "event_timestamp"
PUSH_SOURCE = "host_activity_push"
WINDOW = timedelta(minutes=5)


def repo_config(root: Path) -> Any:
    """feature_store.yaml with SENTINEL_FEAST_DIR = `root` (other variables from the
    environment); relative source paths resolve against that folder."""
    from feast.repo_config import RepoConfig

    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    text = (FEATURE_REPO / "feature_store.yaml").read_text()
    values = {**os.environ, "SENTINEL_FEAST_DIR": str(root)}
    config = RepoConfig(**yaml.safe_load(string.Template(text).safe_substitute(values)))
    config.repo_path = root
    return config


def feature_store(root: Path) -> Any:
    """The store of feature_repo/ with its state under `root` (Settings.feast_root)."""
    from feast import FeatureStore

    return FeatureStore(config=repo_config(root))


def repo_objects() -> list[Any]:
    """Copies of the definitions: Feast records materializations on the objects it is given, and
    the module's objects are shared by every store in the process (tests, in-process runs)."""
    from feature_repo.definitions import OBJECTS

    return copy.deepcopy(list(OBJECTS))


def apply(store: Any) -> list[str]:
    """Register the definitions (idempotent); the names of the feature views."""
    objects = repo_objects()
    store.apply(objects)
    return sorted(v.name for v in store.list_feature_views())


@dataclass(frozen=True)
class Export:
    path: Path
    rows: int
    hosts: int
    newest: datetime | None


def export_gold(root: Path, con: Any) -> Export:
    """Write gold.host_features_5m (DuckDB connection `con`) to the batch source's Parquet file
    under `root`, atomically."""
    path = root.resolve() / EXPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    con.execute(
        f"COPY (SELECT * EXCLUDE (window_start) FROM {GOLD_TABLE} ORDER BY {TIMESTAMP}, {ENTITY}) "
        f"TO '{tmp}' (FORMAT parquet)"
    )
    os.replace(tmp, path)
    row = con.execute(
        f"SELECT count(*), count(DISTINCT {ENTITY}), max({TIMESTAMP}) FROM {GOLD_TABLE}"
    ).fetchone()
    newest = row[2].astimezone(UTC) if row and row[2] is not None else None
    return Export(path, int(row[0]) if row else 0, int(row[1]) if row else 0, newest)


@dataclass(frozen=True)
class Materialization:
    start: datetime
    end: datetime
    views: list[str]
    rows: int  # (host, view) pairs written: the online store keeps one row per host and view
    hosts: int
    newest: datetime | None  # the newest feature timestamp now online


def materialize(root: Path, store: Any, end: datetime | None = None) -> Materialization:
    """Incremental: from the end of the last materialization (or the oldest exported row) to
    `end` (now). Only rows stamped before `end` go online; a window still open stays offline."""
    import duckdb

    end = end or datetime.now(UTC)
    views = [v for v in store.list_feature_views() if v.online]
    done = [i[1] for v in views for i in v.materialization_intervals]
    path = root.resolve() / EXPORT
    con = duckdb.connect()
    try:
        oldest = con.execute(f"SELECT min({TIMESTAMP}) FROM read_parquet('{path}')").fetchone()
        start = (
            max(done)
            if done
            else (oldest[0] if oldest and oldest[0] else end) - timedelta(seconds=1)
        )
        start = start.astimezone(UTC)
        if start >= end:
            return Materialization(start, end, [v.name for v in views], 0, 0, None)
        store.materialize(start_date=start, end_date=end, feature_views=[v.name for v in views])
        hosts, newest = con.execute(
            f"SELECT count(DISTINCT {ENTITY}), max({TIMESTAMP}) FROM read_parquet('{path}') "
            f"WHERE {TIMESTAMP} >= ? AND {TIMESTAMP} < ?",
            [start, end],
        ).fetchone() or (0, None)
    finally:
        con.close()
    return Materialization(
        start,
        end,
        [v.name for v in views],
        int(hosts) * len(views),
        int(hosts),
        newest.astimezone(UTC) if newest is not None else None,
    )


def feature_names(store: Any, service: str) -> list[str]:
    """The service's features, in the order models see them."""
    fs = store.get_feature_service(service)
    return [f.name for projection in fs.feature_view_projections for f in projection.features]


def historical(store: Any, service: str, entities: Any) -> Any:
    """Point-in-time features for `entities` (a DataFrame of host_id, event_timestamp and any
    other columns, which are kept), sorted by time and host."""
    fs = store.get_feature_service(service)
    frame = store.get_historical_features(entity_df=entities, features=fs).to_df()
    return frame.sort_values([TIMESTAMP, ENTITY]).reset_index(drop=True)


def online(store: Any, service: Any, hosts: Sequence[str]) -> Any:
    """The online features of `hosts` (one row each, in order), as a DataFrame. `service`: a
    name, or the FeatureService itself (saves a registry lookup per call)."""
    import pandas as pd

    fs = store.get_feature_service(service) if isinstance(service, str) else service
    answer = store.get_online_features(
        features=fs, entity_rows=[{ENTITY: h} for h in hosts]
    ).to_dict()
    names = [f.name for projection in fs.feature_view_projections for f in projection.features]
    return pd.DataFrame(answer)[[ENTITY, *names]]


def push_activity(store: Any, rows: Any) -> None:
    """Write live window counters (a DataFrame of host_activity's columns) online."""
    from feast.data_source import PushMode

    store.push(PUSH_SOURCE, rows, to=PushMode.ONLINE)
