"""Every endpoint by every role: allowed roles get through, the others get a 403 naming the role."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute

from services.policy.api import router
from services.policy.auth import ENDPOINT_ROLES, ROLES
from services.policy.packs import folder_files
from tests.services.policy.policytest import ADMIN_KEY, Service, write_pack


def _routes(service: Service) -> list[APIRoute]:
    return [r for r in router.routes if isinstance(r, APIRoute)]


def test_every_route_declares_its_roles_in_the_one_table(service: Service) -> None:
    assert {r.name for r in _routes(service)} == set(ENDPOINT_ROLES)
    paths = {p for p in service.app.openapi()["paths"]}
    assert paths == {r.path for r in _routes(service)}


def _body(name: str, tmp_path: Path, n: int) -> dict[str, Any] | None:
    if name == "upload_version":
        return {"files": folder_files(write_pack(tmp_path, f"2.0.{n}"))}
    bodies: dict[str, Any] = {
        "create_pack": {"name": f"matrix-{n}"},
        "deploy_version": {"target": "all"},
        "rollback_pack": {"to": "1.0.0"},
        "post_heartbeat": {"instance": f"w{n}", "kind": "worker", "packs": {"tiny": "1.0.0"}},
        "create_user": {"name": f"matrix-user-{n}", "role": "viewer"},
        "ingest": {"events": []},
    }
    return bodies.get(name)


def test_the_full_endpoint_by_role_matrix(service: Service, tmp_path: Path) -> None:
    keys = {role: service.user(f"{role}-user", role) for role in ROLES if role != "admin"}
    keys["admin"] = ADMIN_KEY
    with service.client(keys["author"]) as author:
        author.post("/packs", json={"name": "tiny"})
        files = folder_files(write_pack(tmp_path, "1.0.0"))
        assert author.post("/packs/tiny/versions", json={"files": files}).status_code == 201
    params = {"name": "tiny", "version": "1.0.0"}
    query = {"diff_versions": {"from": "1.0.0", "to": "1.0.0"}}
    checked = 0
    # Deprecations last: they would stop the deploys and uploads that follow.
    routes = sorted(_routes(service), key=lambda r: "deprecate" in r.name)
    for n, role in enumerate(ROLES):
        for route in routes:
            method = next(iter(route.methods))
            path = re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], route.path)
            with service.client(keys[role]) as client:
                answer = client.request(
                    method,
                    path,
                    json=_body(route.name, tmp_path / role, n),
                    params=query.get(route.name),
                )
            allowed = ENDPOINT_ROLES[route.name]
            where = f"{role} {method} {route.path}: {answer.status_code} {answer.text[:300]}"
            if allowed is None or role in allowed:
                assert answer.status_code not in (401, 403), where
                assert answer.status_code < 500, where
            else:
                assert answer.status_code == 403, where
                assert answer.json()["detail"].startswith("this needs role "), where
                assert f"has role {role}" in answer.json()["detail"], where
            checked += 1
    assert checked == len(ROLES) * len(ENDPOINT_ROLES)


def test_no_key_or_an_unknown_key_is_401_and_health_is_public(service: Service) -> None:
    with service.client() as anonymous:
        answer = anonymous.get("/packs")
        assert answer.status_code == 401 and "no API key" in answer.json()["detail"]
        assert answer.headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/health").json()["status"] == "ok"
    with service.client("spk_wrong") as stranger:
        answer = stranger.post("/ingest", json={"events": []})
        assert answer.status_code == 401 and "unknown or disabled" in answer.json()["detail"]
    with service.client() as keyed:
        answer = keyed.get("/whoami", headers={"X-API-Key": ADMIN_KEY})
        assert answer.json() == {"name": "admin", "role": "admin"}


def test_a_viewer_is_told_which_role_it_needs(service: Service) -> None:
    key = service.user("vic", "viewer")
    with service.client(key) as viewer:
        answer = viewer.post("/packs", json={"name": "x"})
        assert answer.status_code == 403
        assert answer.json()["detail"] == "this needs role author (or higher); vic has role viewer"
        answer = viewer.post("/ingest", json={"events": []})
        assert answer.json()["detail"] == "this needs role admin or agent; vic has role viewer"
