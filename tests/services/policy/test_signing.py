"""Pack signatures: what workers and agents accept, and what they reject with which reason."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agents.filters import RuleFilter
from sentinel.rules import load_pack
from sentinel.rules.signing import (
    KeyFileError,
    PackVerifier,
    SignatureError,
    canonical,
    key_id_of,
    keygen,
    load_private_key,
    load_trusted_keys,
    sign_pack,
    verify_pack,
)
from sentinel.settings import PROJECT_ROOT, Settings
from streams.detection.ruleset import RuleSet
from tests.services.policy.policytest import write_pack

KEY = Ed25519PrivateKey.generate()
KEY_ID = key_id_of(KEY.public_key())
TRUSTED = {KEY_ID: KEY.public_key()}
CORE = load_pack(PROJECT_ROOT / "rules" / "core").message()


def signed(message: dict[str, Any] | None = None) -> dict[str, Any]:
    return sign_pack(message or CORE, KEY, KEY_ID)


def test_a_signed_pack_verifies_and_the_signature_is_over_the_canonical_form() -> None:
    message = signed()
    verify_pack(message, TRUSTED, {"enrich"})
    assert message["signature"]["alg"] == "ed25519" and message["signature"]["key_id"] == KEY_ID
    reordered = dict(reversed(list(message.items())))
    verify_pack(reordered, TRUSTED, {"enrich"})  # key order does not matter
    assert canonical(message) == canonical(CORE)


def test_an_unsigned_pack_is_rejected_as_unsigned() -> None:
    with pytest.raises(SignatureError, match=r"^unsigned: pack 'core' 1.0.0 has no signature"):
        verify_pack(CORE, TRUSTED, {"enrich"})


def test_an_unknown_key_id_is_rejected_naming_the_key() -> None:
    other = sign_pack(CORE, Ed25519PrivateKey.generate())
    with pytest.raises(SignatureError, match=r"^unknown key id: .* trusted: " + KEY_ID):
        verify_pack(other, TRUSTED, {"enrich"})


def test_a_tampered_rule_source_breaks_the_signature() -> None:
    message = signed()
    tampered = copy.deepcopy(message)
    tampered["rules"][0]["source"] = "emit(#{});"
    with pytest.raises(SignatureError, match=r"^bad signature: pack 'core' 1.0.0 does not match"):
        verify_pack(tampered, TRUSTED, {"enrich"})
    forged = copy.deepcopy(message)
    forged["signature"]["key_id"] = KEY_ID
    forged["signature"]["value"] = "not base64!"
    with pytest.raises(SignatureError, match=r"^bad signature"):
        verify_pack(forged, TRUSTED, {"enrich"})


def test_a_capability_that_is_not_allowed_names_the_rule_and_the_capability() -> None:
    message = copy.deepcopy(CORE)
    message["rules"][2]["capabilities"] = ["enrich", "exec"]
    rule_id = message["rules"][2]["id"]
    with pytest.raises(SignatureError) as caught:
        verify_pack(signed(message), TRUSTED, {"enrich"})
    assert str(caught.value).startswith(
        f"capability not allowed: rule '{rule_id}' asks for 'exec' (allowed: enrich"
    )
    enriching = next(r for r in CORE["rules"] if "enrich" in r["capabilities"])
    with pytest.raises(SignatureError, match=f"rule '{enriching['id']}' asks for 'enrich'"):
        verify_pack(signed(), TRUSTED, set())


def test_key_files_round_trip_and_the_key_id_comes_from_the_key(tmp_path: Path) -> None:
    key_id = keygen(tmp_path / "keys")
    private, loaded_id = load_private_key(tmp_path / "keys" / f"{key_id}.key")
    assert loaded_id == key_id == key_id_of(private.public_key())
    assert (tmp_path / "keys" / f"{key_id}.key").stat().st_mode & 0o777 == 0o600
    renamed = tmp_path / "keys" / "someone-else.pub"
    (tmp_path / "keys" / f"{key_id}.pub").rename(renamed)
    assert list(load_trusted_keys(tmp_path / "keys")) == [key_id]
    assert list(load_trusted_keys(renamed)) == [key_id]
    verify_pack(sign_pack(CORE, private), load_trusted_keys(renamed), {"enrich"})


def test_a_bad_key_file_is_named_with_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "x.pub").write_text("definitely not base64 ###\n")
    with pytest.raises(KeyFileError, match=r"x\.pub: not base64"):
        load_trusted_keys(tmp_path)
    (tmp_path / "x.pub").write_text("c2hvcnQ=\n")
    with pytest.raises(KeyFileError, match="32 bytes of base64, this one is 5"):
        load_trusted_keys(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeyFileError, match=r"no \*.pub files"):
        load_trusted_keys(tmp_path / "empty")


def test_the_verifier_follows_the_settings(tmp_path: Path) -> None:
    assert PackVerifier.from_settings(Settings()) is None
    key_id = keygen(tmp_path)
    verifier = PackVerifier.from_settings(
        Settings(rules_trusted_keys=tmp_path, rules_allowed_capabilities="enrich, other")
    )
    assert verifier is not None
    assert list(verifier.trusted) == [key_id]
    assert verifier.allowed_capabilities == {"enrich", "other"}


# ---------------------------------------------------------------- the worker's RuleSet
def _tiny(tmp_path: Path, version: str = "1.0.0", **kw: Any) -> dict[str, Any]:
    return load_pack(write_pack(tmp_path, version, **kw)).message()


def test_a_ruleset_with_trusted_keys_runs_only_signed_packs(tmp_path: Path) -> None:
    ruleset = RuleSet(verifier=PackVerifier(TRUSTED))
    unsigned = ruleset.offer(orjson.dumps(_tiny(tmp_path)))
    assert not unsigned.applied and unsigned.reason.startswith("rejected: unsigned")
    message = signed(_tiny(tmp_path, "1.1.0"))
    applied = ruleset.offer(orjson.dumps(message))
    assert applied.applied, applied.reason
    assert ruleset.packs["tiny"].version == "1.1.0"
    tampered = signed(_tiny(tmp_path, "1.2.0"))
    tampered["rules"][0]["source"] = 'emit(#{ title: "x" });'
    tampered["rules"][0].pop("sha256")
    offer = ruleset.offer(orjson.dumps(tampered))
    assert not offer.applied and offer.reason.startswith("rejected: bad signature")
    greedy = signed(_tiny(tmp_path, "1.3.0", capabilities="[enrich]"))
    strict = RuleSet(verifier=PackVerifier(TRUSTED, frozenset()))
    offer = strict.offer(orjson.dumps(greedy))
    assert not offer.applied
    assert "capability not allowed: rule 'tiny.marker' asks for 'enrich'" in offer.reason
    assert ruleset.packs["tiny"].version == "1.1.0", "the old rules keep running"


def test_a_ruleset_without_trusted_keys_still_takes_unsigned_packs(tmp_path: Path) -> None:
    ruleset = RuleSet()
    assert ruleset.offer(orjson.dumps(_tiny(tmp_path))).applied


def test_signed_rollbacks_go_back_and_group_deployments_reach_only_their_group(
    tmp_path: Path,
) -> None:
    ruleset = RuleSet(verifier=PackVerifier(TRUSTED), groups=frozenset({"canary"}))
    other = RuleSet(verifier=PackVerifier(TRUSTED))
    new = signed({**_tiny(tmp_path, "1.1.0"), "deployment": {"target": "canary"}})
    assert ruleset.offer(orjson.dumps(new)).applied
    skipped = other.offer(orjson.dumps(new))
    assert not skipped.applied and skipped.reason == "skipped: tiny 1.1.0 is for group 'canary'"
    old = _tiny(tmp_path, "1.0.0")
    assert "older" in ruleset.offer(orjson.dumps(signed(old))).reason
    rollback = signed({**old, "deployment": {"target": "all", "rollback": True}})
    assert ruleset.offer(orjson.dumps(rollback)).applied
    assert ruleset.packs["tiny"].version == "1.0.0"


def test_an_agent_filter_with_trusted_keys_counts_only_signed_packs(tmp_path: Path) -> None:
    rule_filter = RuleFilter(verifier=PackVerifier(TRUSTED))
    message = {**_tiny(tmp_path), "agent": {"drop_unneeded_kinds": True}}
    assert rule_filter.offer("tiny", orjson.dumps(message)).startswith("rejected: unsigned")
    assert rule_filter.rates["net"] == 1.0 and rule_filter.rejected == 1
    assert rule_filter.offer("tiny", orjson.dumps(signed(message))) == "applied"
    assert rule_filter.rates["net"] == 0.0 and rule_filter.rates["proc"] == 1.0
