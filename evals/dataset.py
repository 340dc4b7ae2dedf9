"""Golden triage datasets: JSON Lines of cases (evidence + an analyst's reference answer), each
file pinned by version and sha256 in `datasets/manifest.yaml`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

DATASETS_DIR = Path(__file__).resolve().parent / "datasets"
MANIFEST = DATASETS_DIR / "manifest.yaml"
DEFAULT_DATASET = DATASETS_DIR / "triage-golden-v1.jsonl"
VERDICTS = ("true_positive", "benign", "needs_review")


class DatasetError(ValueError):
    """A dataset file that cannot be evaluated; the message names the file, line and field."""


@dataclass(frozen=True)
class Reference:
    """What a careful analyst answered for the case."""

    verdict: str
    summary: str
    recommended_actions: list[str] = field(default_factory=list)
    mitre: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GoldenCase:
    id: str
    rule_id: str
    evidence: dict[str, Any]  # alert, optional enrichment and timeline (rule metadata is added)
    reference: Reference
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dataset:
    name: str
    version: str  # the manifest's version, or "unversioned" for a file it does not list
    sha256: str
    path: Path
    cases: list[GoldenCase]

    @property
    def rules(self) -> list[str]:
        return sorted({c.rule_id for c in self.cases})

    def subset(self, ids: list[str]) -> Dataset:
        wanted = set(ids)
        return Dataset(
            self.name,
            self.version,
            self.sha256,
            self.path,
            [c for c in self.cases if c.id in wanted],
        )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest() -> dict[str, dict[str, Any]]:
    """Manifest entries by dataset name."""
    doc = yaml.safe_load(MANIFEST.read_text()) or {}
    return dict(doc.get("datasets") or {})


def _case(raw: Any, where: str) -> GoldenCase:
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: expected a JSON object")
    for key in ("id", "rule_id", "evidence", "reference"):
        if key not in raw:
            raise DatasetError(f"{where}: field '{key}' is missing")
    evidence, ref = raw["evidence"], raw["reference"]
    if not isinstance(evidence, dict) or not isinstance(evidence.get("alert"), dict):
        raise DatasetError(f"{where}: field 'evidence.alert' must be an object")
    if not isinstance(ref, dict):
        raise DatasetError(f"{where}: field 'reference' must be an object")
    if ref.get("verdict") not in VERDICTS:
        raise DatasetError(
            f"{where}: field 'reference.verdict' is {ref.get('verdict')!r}; "
            f"expected one of {', '.join(VERDICTS)}"
        )
    if not isinstance(ref.get("summary"), str) or not ref["summary"].strip():
        raise DatasetError(f"{where}: field 'reference.summary' must be a non-empty string")
    return GoldenCase(
        id=str(raw["id"]),
        rule_id=str(raw["rule_id"]),
        evidence=evidence,
        reference=Reference(
            verdict=ref["verdict"],
            summary=ref["summary"],
            recommended_actions=list(ref.get("recommended_actions") or []),
            mitre=list(ref.get("mitre") or []),
        ),
        tags=tuple(raw.get("tags") or ()),
    )


def load_dataset(path: Path = DEFAULT_DATASET) -> Dataset:
    """Read and check a dataset. A file the manifest lists must match its sha256."""
    if not path.is_file():
        raise DatasetError(f"no dataset at {path}")
    digest = file_sha256(path)
    cases: list[GoldenCase] = []
    seen: set[str] = set()
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                raw = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not JSON: {exc}") from None
            case = _case(raw, where)
            if case.id in seen:
                raise DatasetError(f"{where}: case id '{case.id}' appears twice")
            seen.add(case.id)
            cases.append(case)
    if not cases:
        raise DatasetError(f"{path}: no cases")
    name = path.stem
    entry = manifest().get(name)
    if entry is None or Path(str(entry.get("file", ""))).name != path.name:
        return Dataset(name, "unversioned", digest, path, cases)
    if entry.get("sha256") != digest:
        raise DatasetError(
            f"{path} changed (sha256 {digest}) but {MANIFEST} pins {entry.get('sha256')} for "
            f"version {entry.get('version')}: bump the version and update the sha256 there"
        )
    return Dataset(name, str(entry["version"]), digest, path, cases)
