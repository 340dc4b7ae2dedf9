"""Enrichment feeds held in memory: threat-intel addresses and ranges, file hashes, the host
inventory, each read from a CSV (or JSONL) file or http(s) URL."""

from __future__ import annotations

import csv
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import orjson

from streams.enrichment.metrics import EnrichmentMetrics

Record = dict[str, Any]
REPUTATIONS = ("malicious", "suspicious", "benign")
CRITICALITIES = ("low", "medium", "high", "critical")
MAX_PROBLEMS = 20  # a broken feed usually breaks the same way on every line: show the first few


class FeedError(ValueError):
    """A feed could not be loaded. Each problem reads `source:line: what is wrong`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))

    @classmethod
    def at(cls, source: str, reason: str, line: int | None = None) -> FeedError:
        return cls([f"{source}:{line}: {reason}" if line else f"{source}: {reason}"])


@dataclass(frozen=True, slots=True)
class Column:
    """A feed column: its name, whether a row may leave it empty, and how to read its value."""

    name: str
    parse: Callable[[Any], Any]
    required: bool = False


@dataclass(frozen=True, slots=True)
class FeedData:
    """One parsed version of a feed, swapped in whole so lookups never see half a reload."""

    entries: dict[str, Record]  # every entry by its normalized key (CIDR keys included)
    exact: dict[str, Record]  # entries a plain key lookup can find (all but address ranges)
    snapshot: str
    # Address feeds only: per IP version, (netmask, {network address: record}), longest first.
    networks: dict[int, tuple[tuple[int, dict[int, Record]], ...]] = field(default_factory=dict)


def _text(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"expected text, got {type(value).__name__}")
    return str(value).strip()


def _lower(value: Any) -> str:
    return _text(value).lower()


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _lower(value)
        if text not in allowed:
            raise ValueError(f"'{text}' is not one of {', '.join(allowed)}")
        return text

    return parse


def _tags(value: Any) -> list[str]:
    # CSV cells separate tags with '|'; JSONL may give a list.
    items = value if isinstance(value, list) else _text(value).split("|")
    return [tag for tag in map(_lower, items) if tag]


def _asn(value: Any) -> int:
    text = _text(value).upper().removeprefix("AS")
    if not text.isdigit() or not 0 < int(text) < 2**32:
        raise ValueError(f"'{value}' is not an AS number (e.g. 64500 or AS64500)")
    return int(text)


def _country(value: Any) -> str:
    text = _text(value).upper()
    if not re.fullmatch(r"[A-Z]{2}", text):
        raise ValueError(f"'{value}' is not a two-letter country code (ISO 3166-1 alpha-2)")
    return text


def _date(value: Any) -> str:
    text = _text(value)
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise ValueError(f"'{text}' is not a date (YYYY-MM-DD)") from None


def _sha256(value: Any) -> str:
    text = _lower(value)
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ValueError(f"'{text}' is not a SHA-256 (64 hexadecimal digits)")
    return text


def _identifier(value: Any) -> str:
    text = _text(value)
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"'{text}' is not an identifier (no spaces)")
    return text


def _indicator(value: Any) -> str:
    """An address or a network in canonical text; a /32 (or /128) network is its address."""
    text = _text(value)
    if "/" in text:
        net = ipaddress.ip_network(text)  # strict: '10.0.0.1/8' is a mistake, not a range
        if net.prefixlen < net.max_prefixlen:
            return str(net)
        text = str(net.network_address)
    return str(parse_address(text))


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address; IPv4-mapped IPv6 addresses are read as the IPv4 address they carry."""
    ip = ipaddress.ip_address(text)
    # '::ffff:203.0.113.7' is how dual-stack sockets show IPv4 peers.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class LocalFeed:
    """A feed read whole into memory from a CSV/JSONL file or an http(s) URL."""

    prefix: ClassVar[str]  # names the feed in the combined snapshot, e.g. 'ti'
    kind: ClassVar[str]  # the rule engine's enrichment kind, e.g. 'ip'
    columns: ClassVar[tuple[Column, ...]]  # the key column first

    def __init__(self, source: str | Path, *, fetch_timeout_s: float = 10.0) -> None:
        self.source = str(source)
        self.fetch_timeout_s = fetch_timeout_s
        self.metrics = EnrichmentMetrics()
        self._data = self.read()

    # --- loading

    def read(self) -> FeedData:
        """Fetch and parse the feed without installing it; raises `FeedError`."""
        text, fmt = self._fetch()
        rows = self._jsonl_rows(text) if fmt == "jsonl" else self._csv_rows(text)
        key_column = self.columns[0].name
        entries: dict[str, Record] = {}
        first_line: dict[str, int] = {}
        problems: list[str] = []
        for line, raw in rows:
            if isinstance(raw, str):  # the row itself is malformed
                problems.append(f"{self.source}:{line}: {raw}")
            else:
                record, problem = self._record(raw)
                if problem:
                    problems.append(f"{self.source}:{line}: {problem}")
                else:
                    key = record[key_column]
                    if key in entries:
                        problems.append(
                            f"{self.source}:{line}: duplicate {key_column} '{key}' "
                            f"(first on line {first_line[key]}); keep one row per {key_column}"
                        )
                    entries[key] = record
                    first_line.setdefault(key, line)
            if len(problems) >= MAX_PROBLEMS:
                problems.append(f"{self.source}: stopped after {MAX_PROBLEMS} problems")
                break
        if problems:
            raise FeedError(problems)
        digest = hashlib.sha256(orjson.dumps(entries, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return self._index(entries, digest[:12])

    def install(self, data: FeedData) -> bool:
        """Swap in `data` (from `read`); True when its content differs from what was there."""
        changed = data.snapshot != self._data.snapshot
        self._data = data
        return changed

    def reload(self) -> bool:
        """Re-read the feed; on `FeedError` the current content stays."""
        return self.install(self.read())

    def _index(self, entries: dict[str, Record], snapshot: str) -> FeedData:
        return FeedData(entries=entries, exact=entries, snapshot=snapshot)

    def _fetch(self) -> tuple[str, str]:
        """The feed's text and format ('csv' or 'jsonl', by suffix, else by content type)."""
        suffix = Path(urlsplit(self.source).path).suffix.lower()
        fmt = "jsonl" if suffix in (".jsonl", ".ndjson") else "csv"
        if self.source.startswith(("http://", "https://")):
            try:
                response = httpx.get(
                    self.source, timeout=self.fetch_timeout_s, follow_redirects=True
                )
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise FeedError.at(self.source, f"could not fetch the feed: {exc}") from None
            content_type = response.headers.get("content-type", "")
            if suffix not in (".csv", ".jsonl", ".ndjson") and (
                "ndjson" in content_type or "jsonl" in content_type
            ):
                fmt = "jsonl"
            return response.text, fmt
        try:
            return Path(self.source).read_text(encoding="utf-8"), fmt
        except FileNotFoundError:
            raise FeedError.at(self.source, "no such feed file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise FeedError.at(self.source, f"cannot read the feed: {exc}") from None

    def _csv_rows(self, text: str) -> Iterator[tuple[int, dict[str, str] | str]]:
        # One record per line (no multi-line quoted cells) keeps line numbers exact.
        header: list[str] | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                cells = next(csv.reader([line], strict=True))
            except csv.Error as exc:
                yield number, f"not valid CSV: {exc}"
                continue
            if header is None:
                header = [cell.strip() for cell in cells]
                missing = [c.name for c in self.columns if c.name not in header]
                if missing:
                    expected = ",".join(c.name for c in self.columns)
                    raise FeedError.at(
                        self.source,
                        f"the header lacks column(s) {', '.join(missing)}; "
                        f"expected a header line '{expected}'",
                        number,
                    )
                continue
            if len(cells) != len(header):
                problem = f"expected {len(header)} fields ({','.join(header)}), found {len(cells)}"
                yield number, problem
                continue
            yield number, dict(zip(header, cells, strict=True))
        if header is None:
            expected = ",".join(c.name for c in self.columns)
            raise FeedError.at(self.source, f"the feed is empty; expected a header '{expected}'")

    def _jsonl_rows(self, text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield number, f"not valid JSON: {exc}"
                continue
            yield number, row if isinstance(row, dict) else "expected a JSON object"

    def _record(self, raw: dict[str, Any]) -> tuple[Record, str]:
        """The row as a record (empty optional cells left out), or a problem."""
        record: Record = {}
        for column in self.columns:
            value = raw.get(column.name)
            if value is None or value == "" or value == []:
                if column.required:
                    return {}, f"'{column.name}' is missing or empty; every row needs one"
                continue
            try:
                record[column.name] = column.parse(value)
            except ValueError as exc:
                return {}, f"{column.name}: {exc}"
        known = {c.name for c in self.columns}
        # Extra columns of a richer production feed are kept as they are.
        record.update({k: v for k, v in raw.items() if k not in known and v not in ("", None)})
        return record, ""

    # --- lookups

    def lookup(self, key: str) -> Record | None:
        """The record for `key`, or None. Records are shared: treat them as read-only."""
        self.metrics.lookups += 1
        record = self._find(key)
        if record is None:
            self.metrics.misses += 1
        else:
            self.metrics.hits += 1
        return record

    def _find(self, key: str) -> Record | None:
        return self._data.exact.get(key)

    def table(self) -> dict[str, Record]:
        """Exact-key entries, for `RuleEngine.set_enrichment(kind, table)`."""
        return dict(self._data.exact)

    def __contains__(self, key: object) -> bool:
        """Whether `key`, exactly as written, is a key of `table()`."""
        return key in self._data.exact

    def __len__(self) -> int:
        return len(self._data.entries)

    @property
    def snapshot(self) -> str:
        """A short hash of the content (not the bytes: comments and row order do not count)."""
        return self._data.snapshot


class IpReputation(LocalFeed):
    """Threat intel on IPv4/IPv6 addresses and ranges; an exact address beats any range, and a
    longer prefix beats a shorter one."""

    prefix = "ti"
    kind = "ip"
    columns = (
        Column("indicator", _indicator, required=True),
        Column("reputation", _choice(*REPUTATIONS), required=True),
        Column("feed", _text),
        Column("tags", _tags),
        Column("country", _country),
        Column("asn", _asn),
        Column("first_seen", _date),
    )

    def _index(self, entries: dict[str, Record], snapshot: str) -> FeedData:
        exact = {key: record for key, record in entries.items() if "/" not in key}
        by_prefix: dict[tuple[int, int], dict[int, Record]] = {}
        for key, record in entries.items():
            if "/" in key:
                net = ipaddress.ip_network(key)
                nets = by_prefix.setdefault((net.version, net.prefixlen), {})
                nets[int(net.network_address)] = record
        networks: dict[int, tuple[tuple[int, dict[int, Record]], ...]] = {}
        for version, bits in ((4, 32), (6, 128)):
            lengths = sorted((p for v, p in by_prefix if v == version), reverse=True)
            networks[version] = tuple(
                (((1 << bits) - 1) ^ ((1 << (bits - p)) - 1), by_prefix[(version, p)])
                for p in lengths
            )
        return FeedData(entries=entries, exact=exact, snapshot=snapshot, networks=networks)

    _MEMO_MAX = 100_000
    # Addresses not in the table recur batch after batch; parsing and range matching them again
    # each time cost more than the rest of the stage. Remembered for the feed content at hand.
    _memo: tuple[FeedData, dict[str, Record | None]] | None = None

    def _find(self, key: str) -> Record | None:
        data = self._data
        record = data.exact.get(key)
        if record is not None:
            return record
        memo = self._memo
        if memo is None or memo[0] is not data or len(memo[1]) > self._MEMO_MAX:
            memo = self._memo = (data, {})
        known = memo[1]
        if key not in known:
            known[key] = self._match(data, key)
        return known[key]

    @staticmethod
    def _match(data: FeedData, key: str) -> Record | None:
        try:
            ip = parse_address(key)
        except ValueError:
            return None  # not an address: nothing to say about it
        record = data.exact.get(str(ip))
        if record is not None:
            return record
        value = int(ip)
        for mask, nets in data.networks.get(ip.version, ()):
            record = nets.get(value & mask)
            if record is not None:
                return record
        return None


class FileHashReputation(LocalFeed):
    """Reputation of files by SHA-256 (case-insensitive)."""

    prefix = "fh"
    kind = "file_hash"
    columns = (
        Column("sha256", _sha256, required=True),
        Column("reputation", _choice(*REPUTATIONS), required=True),
        Column("family", _text),
        Column("source", _text),
    )

    def _find(self, key: str) -> Record | None:
        exact = self._data.exact
        return exact.get(key) or exact.get(key.strip().lower())


class HostInventory(LocalFeed):
    """The asset inventory: what each host id is, who owns it and how much it matters."""

    prefix = "hosts"
    kind = "host"
    columns = (
        Column("host_id", _identifier, required=True),
        Column("name", _text),
        Column("role", _lower),
        Column("owner", _text),
        Column("criticality", _choice(*CRITICALITIES)),
        Column("environment", _lower),
    )
