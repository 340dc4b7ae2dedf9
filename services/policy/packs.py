"""Checking an uploaded pack (manifest, compilation, golden tests) and diffing two versions.

An upload is the pack folder as JSON: `{"files": {"pack.yaml": "...", "x.rhai": "...",
"tests/x.yaml": "...", "lists/y.txt": "..."}}`, paths relative to the folder. `folder_files`
builds that body from a local folder such as rules/core.
"""

from __future__ import annotations

import difflib
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sentinel.rules import Pack, PackError, load_pack

ALLOWED_SUFFIXES = (".yaml", ".yml", ".rhai", ".txt")
MAX_FILES = 1000
_SAFE_PART = re.compile(r"^[A-Za-z0-9_.-]+$")


class UploadRejected(Exception):
    """The upload does not pass; `body` is the 422 answer (every problem found, for people)."""

    def __init__(self, detail: str, problems: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.body: dict[str, Any] = {"detail": detail, "problems": problems}


@dataclass
class Checked:
    pack: Pack
    cases: int
    per_rule: dict[str, int] = field(default_factory=dict)


def folder_files(path: Path) -> dict[str, str]:
    """The upload body's `files` for a local pack folder (what `policy packs upload` sends)."""
    return {
        p.relative_to(path).as_posix(): p.read_text()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.suffix in ALLOWED_SUFFIXES
    }


def _safe_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if (
        not name
        or path.is_absolute()
        or not all(_SAFE_PART.match(part) and part not in (".", "..") for part in path.parts)
        or path.suffix not in ALLOWED_SUFFIXES
        or len(path.parts) > 4
    ):
        raise UploadRejected(
            "bad file name in the upload",
            [
                {
                    "kind": "upload",
                    "file": name[:200],
                    "message": "file names are relative paths of letters, digits, '_', '-', '.' "
                    f"ending in {', '.join(ALLOWED_SUFFIXES)}, at most 4 levels deep",
                }
            ],
        )
    return path


def _relative(text: str, root: Path) -> str:
    return text.replace(f"{root}/", "").replace(str(root), ".")


def check_upload(files: dict[str, str], expected_name: str) -> Checked:
    """Load, compile and golden-test the uploaded folder; raise UploadRejected listing every
    problem (compile errors with rule, file, line and column; failing tests with their diff)."""
    from sentinel_rhai import RuleCompileError, RuleEngine, RuleError

    from sentinel.rules.testkit import run_pack_tests

    if not files:
        raise UploadRejected("empty upload", [{"kind": "upload", "message": "no files"}])
    if len(files) > MAX_FILES:
        raise UploadRejected(
            "too many files", [{"kind": "upload", "message": f"at most {MAX_FILES} files"}]
        )
    with tempfile.TemporaryDirectory(prefix="policy-upload-") as tmp:
        root = Path(tmp)
        for name, text in files.items():
            target = root / _safe_path(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        try:
            pack = load_pack(root)
        except PackError as exc:
            raise UploadRejected(
                "the pack manifest is not valid",
                [{"kind": "manifest", "message": _relative(str(exc), root)}],
            ) from None
        if pack.name != expected_name:
            raise UploadRejected(
                "the upload is another pack",
                [
                    {
                        "kind": "manifest",
                        "file": "pack.yaml",
                        "message": f"pack.yaml names pack '{pack.name}', "
                        f"this is pack '{expected_name}'",
                    }
                ],
            )
        problems: list[dict[str, Any]] = []
        for rule in pack.rules:
            try:
                RuleEngine().replace_all([rule.engine_spec(pack)])  # type: ignore[list-item]
            except RuleCompileError as exc:
                problems.append(
                    {
                        "kind": "compile",
                        "rule": rule.id,
                        "file": rule.file,
                        "line": exc.line,
                        "column": exc.column,
                        "message": str(exc),
                    }
                )
            except RuleError as exc:
                problems.append(
                    {"kind": "compile", "rule": rule.id, "file": rule.file, "message": str(exc)}
                )
        if problems:
            raise UploadRejected("rules do not compile", problems)
        suite = run_pack_tests(root)
        for error in suite.errors:
            problems.append({"kind": "test", "message": _relative(error, root)})
        for case in suite.failed:
            problems.append(
                {
                    "kind": "test",
                    "rule": case.rule_id,
                    "file": case.file.relative_to(root).as_posix(),
                    "test": case.name,
                    "message": "; ".join(case.problems),
                    "diff": case.diff(),
                }
            )
        per_rule = {r.id: 0 for r in pack.rules}
        for case in suite.cases:
            per_rule[case.rule_id] = per_rule.get(case.rule_id, 0) + 1
        for rule_id, count in per_rule.items():
            if not count:
                problems.append(
                    {
                        "kind": "test",
                        "rule": rule_id,
                        "message": "the rule has no golden test (tests/<rule>.yaml)",
                    }
                )
        if problems:
            raise UploadRejected("golden tests failed", problems)
        return Checked(pack, len(suite.cases), per_rule)


_META = ("title", "severity", "kinds", "mitre", "capabilities", "dedup", "suppress_seconds")


def diff_messages(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Per rule: added, removed or changed (changed fields and a unified diff of the source)."""
    before = {r["id"]: r for r in old["rules"]}
    after = {r["id"]: r for r in new["rules"]}
    rules: list[dict[str, Any]] = []
    for rule_id in sorted(before.keys() | after.keys()):
        a, b = before.get(rule_id), after.get(rule_id)
        if a is None or b is None:
            present = b if a is None else a
            assert present is not None
            lines = present["source"].splitlines()
            rules.append(
                {
                    "id": rule_id,
                    "change": "added" if a is None else "removed",
                    "diff": "\n".join(
                        difflib.unified_diff(
                            [] if a is None else lines,
                            lines if a is None else [],
                            f"{old['version']}/{present.get('file', rule_id)}",
                            f"{new['version']}/{present.get('file', rule_id)}",
                            lineterm="",
                        )
                    ),
                }
            )
            continue
        fields = [k for k in _META if a.get(k) != b.get(k)]
        if a["source"] == b["source"] and not fields:
            continue
        rules.append(
            {
                "id": rule_id,
                "change": "changed",
                "fields": {k: {"old": a.get(k), "new": b.get(k)} for k in fields},
                "diff": "\n".join(
                    difflib.unified_diff(
                        a["source"].splitlines(),
                        b["source"].splitlines(),
                        f"{old['version']}/{a.get('file', rule_id)}",
                        f"{new['version']}/{b.get('file', rule_id)}",
                        lineterm="",
                    )
                ),
            }
        )
    lists = sorted(
        name
        for name in (old.get("lists") or {}).keys() | (new.get("lists") or {}).keys()
        if (old.get("lists") or {}).get(name) != (new.get("lists") or {}).get(name)
    )
    return {"from": old["version"], "to": new["version"], "rules": rules, "lists_changed": lists}
