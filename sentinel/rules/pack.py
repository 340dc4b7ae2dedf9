"""A rule pack on disk (`pack.yaml`, one `.rhai` file per rule) and its contract message form."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sentinel.contracts import ContractError, validate

SEVERITIES = ("low", "medium", "high", "critical")


class PackError(ValueError):
    """A pack that cannot be loaded; the message names the file and the rule or field."""


@dataclass(frozen=True)
class RuleSpec:
    id: str
    file: str
    title: str
    severity: str
    kinds: tuple[str, ...]
    source: str
    mitre: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    dedup: str = "host.id"
    suppress_seconds: int = 0
    description: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()

    def dedup_fields(self) -> list[str]:
        return [f.strip() for f in self.dedup.split(",") if f.strip()]

    def engine_spec(self, pack: Pack) -> dict[str, Any]:
        """What `sentinel_rhai.RuleEngine.replace_all` takes for this rule."""
        return {
            "id": self.id,
            "source": self.source,
            "kinds": list(self.kinds),
            "capabilities": list(self.capabilities),
            "meta": {
                "title": self.title,
                "severity": self.severity,
                "mitre": list(self.mitre),
                "pack": pack.name,
                "pack_version": pack.version,
            },
        }


@dataclass(frozen=True)
class Pack:
    name: str
    version: str
    rules: tuple[RuleSpec, ...]
    lists: dict[str, list[str]] = field(default_factory=dict)
    description: str = ""
    path: Path | None = None
    agent: dict[str, Any] = field(default_factory=dict)  # agent-side filters (agents/filters.py)

    def rule(self, rule_id: str) -> RuleSpec:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def message(self) -> dict[str, Any]:
        """The pack as a `sentinel.rule-pack/1` message (sources inlined), unsigned."""
        return {
            "schema": "sentinel.rule-pack/1",
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "lists": self.lists,
            "rules": [
                {
                    "id": r.id,
                    "file": r.file,
                    "title": r.title,
                    "severity": r.severity,
                    "kinds": list(r.kinds),
                    "mitre": list(r.mitre),
                    "capabilities": list(r.capabilities),
                    "dedup": r.dedup,
                    "suppress_seconds": r.suppress_seconds,
                    "source": r.source,
                    "sha256": r.sha256,
                }
                for r in self.rules
            ],
            **({"agent": self.agent} if self.agent else {}),
        }

    def engine_specs(self) -> list[dict[str, Any]]:
        return [r.engine_spec(self) for r in self.rules]


def pack_from_message(message: dict[str, Any]) -> Pack:
    """A pack as published on `sentinel.rules.v1` (a `sentinel.rule-pack/1` message)."""
    try:
        validate("rule-pack", message)
    except ContractError as exc:
        raise PackError(f"rule-pack message: {exc}") from None
    rules = []
    for entry in message["rules"]:
        source = entry["source"]
        if "sha256" in entry and hashlib.sha256(source.encode()).hexdigest() != entry["sha256"]:
            raise PackError(
                f"rule-pack message: rule '{entry['id']}': source does not match its sha256"
            )
        rules.append(
            RuleSpec(
                id=entry["id"],
                file=entry.get("file", f"{entry['id']}.rhai"),
                title=entry["title"],
                severity=entry["severity"],
                kinds=tuple(entry["kinds"]),
                source=source,
                mitre=tuple(entry.get("mitre") or ()),
                capabilities=tuple(entry.get("capabilities") or ()),
                dedup=str(entry.get("dedup", "host.id")),
                suppress_seconds=int(entry.get("suppress_seconds", 0)),
            )
        )
    return Pack(
        name=message["name"],
        version=message["version"],
        rules=tuple(rules),
        lists={k: list(v) for k, v in (message.get("lists") or {}).items()},
        description=str(message.get("description", "")),
        agent=dict(message.get("agent") or {}),
    )


def _read_list(base: Path, value: Any, where: str) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):  # a file of one value per line, '#' comments allowed
        path = base / value
        if not path.is_file():
            raise PackError(f"{where}: list file {path} does not exist")
        return [
            line.strip()
            for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    raise PackError(f"{where}: a list is either inline values or a file name")


def load_pack(path: Path) -> Pack:
    """Read and check a pack folder; every problem is a PackError naming file, rule and field."""
    manifest_path = path / "pack.yaml"
    if not manifest_path.is_file():
        raise PackError(f"{path}: no pack.yaml (a pack is a folder with pack.yaml and .rhai files)")
    try:
        manifest = yaml.safe_load(manifest_path.read_text())
    except yaml.YAMLError as exc:
        raise PackError(f"{manifest_path}: not valid YAML: {exc}") from None
    if not isinstance(manifest, dict):
        raise PackError(f"{manifest_path}: expected a mapping with name, version and rules")
    for key in ("name", "version", "rules"):
        if key not in manifest:
            raise PackError(f"{manifest_path}: missing '{key}'")
    lists = {
        str(name): _read_list(path, value, f"{manifest_path}: lists.{name}")
        for name, value in (manifest.get("lists") or {}).items()
    }
    rules: list[RuleSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(manifest["rules"] or []):
        where = f"{manifest_path}: rules[{index}]"
        if not isinstance(entry, dict) or "id" not in entry:
            raise PackError(f"{where}: each rule needs at least an id and a file")
        rule_id = str(entry["id"])
        where = f"{manifest_path}: rule '{rule_id}'"
        if rule_id in seen:
            raise PackError(f"{where}: duplicate rule id")
        seen.add(rule_id)
        file = entry.get("file") or f"{rule_id.rsplit('.', 1)[-1]}.rhai"
        source_path = path / file
        if not source_path.is_file():
            raise PackError(f"{where}: file {file} does not exist in {path}")
        kinds = entry.get("kinds")
        if not kinds:
            raise PackError(f"{where}: 'kinds' must list the event kinds the rule reads")
        rules.append(
            RuleSpec(
                id=rule_id,
                file=file,
                title=str(entry.get("title", "")),
                severity=str(entry.get("severity", "")),
                kinds=tuple(kinds),
                source=source_path.read_text(),
                mitre=tuple(entry.get("mitre") or ()),
                capabilities=tuple(entry.get("capabilities") or ()),
                dedup=str(entry.get("dedup", "host.id")),
                suppress_seconds=int(entry.get("suppress_seconds", 0)),
                description=str(entry.get("description", "")),
            )
        )
    pack = Pack(
        name=str(manifest["name"]),
        version=str(manifest["version"]),
        rules=tuple(rules),
        lists=lists,
        description=str(manifest.get("description", "")),
        path=path,
        agent=dict(manifest.get("agent") or {}),
    )
    try:
        validate("rule-pack", pack.message())
    except ContractError as exc:
        raise PackError(f"{manifest_path}: {_manifest_field(exc, pack)}: {exc.reason}") from None
    unused = sorted(p.name for p in path.glob("*.rhai") if p.name not in {r.file for r in rules})
    if unused:
        raise PackError(f"{manifest_path}: .rhai files not named by any rule: {', '.join(unused)}")
    return pack


def _manifest_field(exc: ContractError, pack: Pack) -> str:
    """Turn 'rules.3.severity' into "rule 'core.x' field 'severity'" for the manifest's author."""
    parts = exc.path.split(".")
    if len(parts) >= 2 and parts[0] == "rules" and parts[1].isdigit():
        rule = pack.rules[int(parts[1])]
        rest = ".".join(parts[2:]) or "(rule)"
        return f"rule '{rule.id}' field '{rest}'"
    return f"field '{exc.path}'"
