"""The HTTP API. Every route's allowed roles come from `auth.ENDPOINT_ROLES` (by route name)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from opentelemetry import trace
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sentinel.rules.signing import canonical, digest, sign_pack
from sentinel.tracing import traceparent_of
from services.policy import audit
from services.policy.auth import ENDPOINT_ROLES, ROLES, Principal, describe, hash_key, new_key
from services.policy.db import (
    AuditRow,
    DeploymentRow,
    HeartbeatRow,
    PackRow,
    User,
    VersionRow,
    now,
)
from services.policy.heartbeats import record_heartbeat
from services.policy.packs import UploadRejected, check_upload, diff_messages
from services.policy.service import KafkaUnavailable, Policy

NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
VERSION = r"^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$"
USER = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
INSTANCE = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"


def _policy(request: Request) -> Policy:
    policy: Policy = request.app.state.policy
    return policy


def _session(request: Request) -> Any:
    with _policy(request).session() as session:
        yield session


def authorize(request: Request) -> Principal | None:
    """401 without a known key, 403 when the route's table entry does not list the caller's role."""
    route = request.scope.get("route")
    allowed = ENDPOINT_ROLES.get(getattr(route, "name", ""), frozenset())
    if allowed is None:
        return None  # a public route
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else ""
    key = key or request.headers.get("x-api-key", "")
    if not key:
        raise HTTPException(
            401,
            "no API key: send 'Authorization: Bearer <key>' (keys come from "
            "`sentinel policy users create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    with _policy(request).session() as session:
        user = session.scalars(select(User).where(User.key_hash == hash_key(key))).first()
    if user is None or user.disabled:
        raise HTTPException(401, "unknown or disabled API key", {"WWW-Authenticate": "Bearer"})
    if user.role not in allowed:
        raise HTTPException(
            403, f"this needs role {describe(allowed)}; {user.name} has role {user.role}"
        )
    principal = Principal(user.name, user.role)
    request.state.principal = principal
    return principal


router = APIRouter(dependencies=[Depends(authorize)])
SessionDep = Annotated[Session, Depends(_session)]
PolicyDep = Annotated[Policy, Depends(_policy)]


def _me(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def _rid(request: Request) -> str:
    return str(request.state.request_id)


Me = Annotated[Principal, Depends(_me)]
RequestId = Annotated[str, Depends(_rid)]


# ------------------------------------------------------------------ models
class PackIn(BaseModel):
    name: str = Field(pattern=NAME, description="the pack name, as in pack.yaml")
    description: str = Field("", max_length=2000)


class UploadIn(BaseModel):
    files: dict[str, str] = Field(
        description="the pack folder: relative path -> text, e.g. pack.yaml, x.rhai, tests/x.yaml"
    )


class DeployIn(BaseModel):
    target: str = Field("all", pattern=NAME, description="'all', or a group such as 'canary'")


class RollbackIn(BaseModel):
    to: str = Field(pattern=VERSION, description="the approved version to run again")
    target: str = Field("all", pattern=NAME)


class HeartbeatIn(BaseModel):
    instance: str = Field(pattern=INSTANCE, description="worker or agent id, unique")
    kind: str = Field(pattern=r"^(worker|agent)$")
    group: str = Field("", pattern=r"^([a-z0-9][a-z0-9_-]{0,63})?$")
    packs: dict[str, str] = Field(description="pack name -> the version it runs")


class UserIn(BaseModel):
    name: str = Field(pattern=USER)
    role: str = Field(pattern="^(" + "|".join(ROLES) + ")$")


# ------------------------------------------------------------------ helpers
def _pack(session: Session, name: str) -> PackRow:
    row = session.scalars(select(PackRow).where(PackRow.name == name)).first()
    if row is None:
        raise HTTPException(404, f"no pack '{name}' (create it with POST /packs)")
    return row


def _version(session: Session, pack: PackRow, version: str) -> VersionRow:
    row = session.scalars(
        select(VersionRow).where(VersionRow.pack_id == pack.id, VersionRow.version == version)
    ).first()
    if row is None:
        raise HTTPException(404, f"pack '{pack.name}' has no version {version}")
    return row


def _pack_out(row: PackRow, latest: str | None = None) -> dict[str, Any]:
    return {
        "name": row.name,
        "description": row.description,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "deprecated": row.deprecated,
        "latest_version": latest,
    }


def _version_out(row: VersionRow, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": row.version,
        "digest": row.digest,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "tests_passed": row.tests_passed,
        "rules": len(row.message.get("rules", [])),  # type: ignore[arg-type]
        "status": "deprecated"
        if row.deprecated
        else ("approved" if row.approved_by else "awaiting approval"),
        "approved_by": row.approved_by,
        "approved_at": row.approved_at.isoformat() if row.approved_at else None,
        "signature": row.signature,
    }
    if full:
        out["message"] = row.message
    return out


def _deployment_out(row: DeploymentRow, pack: str, version: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "pack": pack,
        "version": version,
        "target": row.target,
        "rollback": row.rollback,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "topic": row.topic,
        "partition": row.partition,
        "offset": row.offset,
        "digest": row.digest,
    }


# ------------------------------------------------------------------ routes
@router.get("/health", tags=["service"])
def health(policy: PolicyDep) -> dict[str, Any]:
    """Liveness; no key needed. Names the key id workers and agents must trust."""
    return {"status": "ok", "signing_key_id": policy.key_id}


@router.get("/whoami", tags=["service"])
def whoami(me: Me) -> dict[str, str]:
    return {"name": me.name, "role": me.role}


@router.get("/packs", tags=["packs"])
def list_packs(session: SessionDep) -> list[dict[str, Any]]:
    out = []
    for row in session.scalars(select(PackRow).order_by(PackRow.name)):
        latest = session.scalars(
            select(VersionRow.version)
            .where(VersionRow.pack_id == row.id)
            .order_by(VersionRow.id.desc())
        ).first()
        out.append(_pack_out(row, latest))
    return out


@router.post("/packs", status_code=201, tags=["packs"])
def create_pack(body: PackIn, me: Me, rid: RequestId, session: SessionDep) -> dict[str, Any]:
    if session.scalars(select(PackRow).where(PackRow.name == body.name)).first() is not None:
        raise HTTPException(409, f"pack '{body.name}' exists")
    row = PackRow(name=body.name, description=body.description, created_by=me.name)
    session.add(row)
    session.flush()
    audit.append(
        session,
        actor=me.name,
        action="pack.create",
        subject=f"pack:{body.name}",
        request_id=rid,
        detail={"description": body.description},
    )
    return _pack_out(row)


@router.get("/packs/{name}", tags=["packs"])
def get_pack(name: str, session: SessionDep) -> dict[str, Any]:
    row = _pack(session, name)
    versions = session.scalars(
        select(VersionRow).where(VersionRow.pack_id == row.id).order_by(VersionRow.id)
    ).all()
    out = _pack_out(row, versions[-1].version if versions else None)
    out["versions"] = [_version_out(v) for v in versions]
    return out


@router.post("/packs/{name}/deprecate", tags=["packs"])
def deprecate_pack(name: str, me: Me, rid: RequestId, session: SessionDep) -> dict[str, Any]:
    row = _pack(session, name)
    row.deprecated = True
    audit.append(
        session, actor=me.name, action="pack.deprecate", subject=f"pack:{name}", request_id=rid
    )
    return _pack_out(row)


@router.get("/packs/{name}/versions", tags=["versions"])
def list_versions(name: str, session: SessionDep) -> list[dict[str, Any]]:
    row = _pack(session, name)
    return [
        _version_out(v)
        for v in session.scalars(
            select(VersionRow).where(VersionRow.pack_id == row.id).order_by(VersionRow.id)
        )
    ]


@router.post(
    "/packs/{name}/versions",
    status_code=201,
    tags=["versions"],
    responses={422: {"description": "the pack does not compile or fails its golden tests"}},
)
def upload_version(name: str, body: UploadIn, me: Me, rid: RequestId, session: SessionDep) -> Any:
    """Add an immutable version: compiled and golden-tested here; 422 lists every problem."""
    pack = _pack(session, name)
    if pack.deprecated:
        raise HTTPException(409, f"pack '{name}' is deprecated")
    try:
        checked = check_upload(body.files, name)
    except UploadRejected as exc:
        return JSONResponse(exc.body, status_code=422)
    version = checked.pack.version
    exists = session.scalars(
        select(VersionRow).where(VersionRow.pack_id == pack.id, VersionRow.version == version)
    ).first()
    if exists is not None:
        raise HTTPException(
            409, f"pack '{name}' already has version {version}; versions are immutable"
        )
    message = checked.pack.message()
    row = VersionRow(
        pack_id=pack.id,
        version=version,
        message=message,
        digest=digest(message),
        created_by=me.name,
        tests_passed=checked.cases,
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        actor=me.name,
        action="version.upload",
        subject=f"pack:{name}@{version}",
        request_id=rid,
        after=row.digest,
        detail={"rules": len(checked.pack.rules), "tests_passed": checked.cases},
    )
    return _version_out(row)


@router.get("/packs/{name}/versions/{version}", tags=["versions"])
def get_version(name: str, version: str, session: SessionDep) -> dict[str, Any]:
    return _version_out(_version(session, _pack(session, name), version), full=True)


@router.get("/packs/{name}/diff", tags=["versions"])
def diff_versions(
    name: str,
    session: SessionDep,
    base: Annotated[str, Query(alias="from", description="the older version")],
    head: Annotated[str, Query(alias="to", description="the newer version")],
) -> dict[str, Any]:
    """Per rule: added, removed or changed, with a unified diff of the source."""
    pack = _pack(session, name)
    old, new = _version(session, pack, base), _version(session, pack, head)
    return diff_messages(old.message, new.message)


@router.post("/packs/{name}/versions/{version}/approve", tags=["versions"])
def approve_version(
    name: str, version: str, me: Me, rid: RequestId, session: SessionDep, policy: PolicyDep
) -> dict[str, Any]:
    """Approve and sign; the two-person rule forbids approving a version you uploaded."""
    row = _version(session, _pack(session, name), version)
    if row.created_by == me.name:
        raise HTTPException(
            403,
            f"two-person rule: {me.name} uploaded {name} {version} and cannot approve it; "
            "another approver (or higher) must",
        )
    if row.deprecated:
        raise HTTPException(409, f"{name} {version} is deprecated")
    if row.approved_by:
        raise HTTPException(409, f"{name} {version} was approved by {row.approved_by}")
    signed = sign_pack(row.message, policy.key, policy.key_id)
    row.signature = signed["signature"]
    row.approved_by, row.approved_at = me.name, now()
    audit.append(
        session,
        actor=me.name,
        action="version.approve",
        subject=f"pack:{name}@{version}",
        request_id=rid,
        before=row.digest,
        after=row.digest,
        detail={"key_id": policy.key_id, "author": row.created_by},
    )
    return _version_out(row)


@router.post("/packs/{name}/versions/{version}/deprecate", tags=["versions"])
def deprecate_version(
    name: str, version: str, me: Me, rid: RequestId, session: SessionDep
) -> dict[str, Any]:
    row = _version(session, _pack(session, name), version)
    row.deprecated = True
    audit.append(
        session,
        actor=me.name,
        action="version.deprecate",
        subject=f"pack:{name}@{version}",
        request_id=rid,
        before=row.digest,
    )
    return _version_out(row)


def _deploy(
    session: Session,
    policy: Policy,
    pack: PackRow,
    row: VersionRow,
    target: str,
    me: Principal,
    rid: str,
    rollback: bool,
) -> dict[str, Any]:
    if not row.approved_by or row.signature is None:
        raise HTTPException(
            409, f"{pack.name} {row.version} is not approved (POST .../approve by an approver)"
        )
    if row.deprecated or pack.deprecated:
        raise HTTPException(409, f"{pack.name} {row.version} is deprecated")
    previous = session.scalars(
        select(DeploymentRow)
        .where(DeploymentRow.pack_id == pack.id, DeploymentRow.target == target)
        .order_by(DeploymentRow.id.desc())
    ).first()
    deployment_id = (session.scalar(select(func.max(DeploymentRow.id))) or 0) + 1
    message = {
        **row.message,
        "published_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "deployment": {
            "id": deployment_id,
            "target": target,
            "rollback": rollback,
            "approved_by": row.approved_by,
        },
    }
    signed = sign_pack(message, policy.key, policy.key_id)
    key = pack.name if target == "all" else f"{pack.name}@{target}"
    topic = policy.settings.policy_rules_topic
    try:
        partition, offset = policy.publish(topic, key, orjson.dumps(signed))
    except KafkaUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
    deployment = DeploymentRow(
        id=deployment_id,
        pack_id=pack.id,
        version_id=row.id,
        target=target,
        rollback=rollback,
        created_by=me.name,
        topic=topic,
        partition=partition,
        offset=offset,
        digest=digest(signed),
    )
    session.add(deployment)
    session.flush()
    audit.append(
        session,
        actor=me.name,
        action="pack.rollback" if rollback else "pack.deploy",
        subject=f"pack:{pack.name}@{row.version}",
        request_id=rid,
        before=previous.digest if previous else None,
        after=deployment.digest,
        detail={
            "target": target,
            "topic": topic,
            "offset": offset,
            "bytes": len(canonical(signed)),
        },
    )
    return _deployment_out(deployment, pack.name, row.version)


@router.post("/packs/{name}/versions/{version}/deploy", tags=["deployments"])
def deploy_version(
    name: str,
    version: str,
    body: DeployIn,
    me: Me,
    rid: RequestId,
    session: SessionDep,
    policy: PolicyDep,
) -> dict[str, Any]:
    """Publish the signed version to the rules topic for `target` (a group first, then `all`)."""
    pack = _pack(session, name)
    return _deploy(
        session, policy, pack, _version(session, pack, version), body.target, me, rid, False
    )


@router.post("/packs/{name}/rollback", tags=["deployments"])
def rollback_pack(
    name: str, body: RollbackIn, me: Me, rid: RequestId, session: SessionDep, policy: PolicyDep
) -> dict[str, Any]:
    """Republish an earlier approved version; workers take it although its version is older."""
    pack = _pack(session, name)
    return _deploy(
        session, policy, pack, _version(session, pack, body.to), body.target, me, rid, True
    )


@router.get("/deployments", tags=["deployments"])
def list_deployments(
    session: SessionDep, pack: Annotated[str | None, Query(max_length=64)] = None
) -> list[dict[str, Any]]:
    query = (
        select(DeploymentRow, PackRow.name, VersionRow.version)
        .join(PackRow, PackRow.id == DeploymentRow.pack_id)
        .join(VersionRow, VersionRow.id == DeploymentRow.version_id)
        .order_by(DeploymentRow.id)
    )
    if pack is not None:
        query = query.where(PackRow.name == pack)
    return [_deployment_out(d, p, v) for d, p, v in session.execute(query)]


@router.post("/heartbeats", status_code=202, tags=["deployments"])
def post_heartbeat(body: HeartbeatIn, me: Me, session: SessionDep) -> dict[str, Any]:
    """A worker or agent reports the pack versions it runs (the latest report counts)."""
    record_heartbeat(
        session,
        instance=body.instance,
        kind=body.kind,
        group=body.group,
        packs=body.packs,
        reported_by=me.name,
    )
    return {"instance": body.instance, "packs": body.packs}


@router.get("/heartbeats", tags=["deployments"])
def list_heartbeats(session: SessionDep) -> dict[str, Any]:
    """Every instance's last report, and per pack how many instances run each version."""
    rows = session.scalars(select(HeartbeatRow).order_by(HeartbeatRow.instance)).all()
    running: dict[str, dict[str, int]] = {}
    for row in rows:
        for pack, version in row.packs.items():
            per = running.setdefault(pack, {})
            per[str(version)] = per.get(str(version), 0) + 1
    return {
        "instances": [
            {
                "instance": r.instance,
                "kind": r.kind,
                "group": r.group,
                "packs": r.packs,
                "seen_at": r.seen_at.isoformat(),
            }
            for r in rows
        ],
        "running": running,
    }


@router.get("/audit", tags=["audit"])
def list_audit(
    session: SessionDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(AuditRow).where(AuditRow.id > after).order_by(AuditRow.id).limit(limit)
    )
    return [audit.as_dict(r) for r in rows]


@router.get("/audit/verify", tags=["audit"])
def verify_audit(session: SessionDep) -> dict[str, Any]:
    report = audit.verify_chain(session)
    return {
        "ok": report.ok,
        "entries": report.entries,
        "broken_at": report.broken_at,
        "reason": report.reason,
    }


@router.get("/users", tags=["users"])
def list_users(session: SessionDep) -> list[dict[str, Any]]:
    return [
        {
            "name": u.name,
            "role": u.role,
            "disabled": u.disabled,
            "created_at": u.created_at.isoformat(),
        }
        for u in session.scalars(select(User).order_by(User.name))
    ]


@router.post("/users", status_code=201, tags=["users"])
def create_user(body: UserIn, me: Me, rid: RequestId, session: SessionDep) -> dict[str, str]:
    """Create a user; the answer holds its API key, shown this once (only a hash is kept)."""
    if session.scalars(select(User).where(User.name == body.name)).first() is not None:
        raise HTTPException(409, f"user '{body.name}' exists")
    key = new_key()
    session.add(User(name=body.name, role=body.role, key_hash=hash_key(key)))
    session.flush()
    audit.append(
        session,
        actor=me.name,
        action="user.create",
        subject=f"user:{body.name}",
        request_id=rid,
        detail={"role": body.role},
    )
    return {"name": body.name, "role": body.role, "api_key": key}


@router.post(
    "/ingest",
    tags=["ingest"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["events"],
                        "properties": {"events": {"type": "array", "items": {"type": "object"}}},
                    }
                }
            },
        }
    },
    responses={413: {"description": "body or batch too large"}},
)
async def ingest(request: Request, policy: PolicyDep) -> Any:
    """`{"events": [...]}` from an agent that cannot reach Kafka: valid events go to the events
    topic (key = host id); the answer lists each rejected event's index, field and reason."""
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"the body is not JSON: {exc}") from None
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list):
        raise HTTPException(422, 'the body must be {"events": [event, ...]}')
    limit = policy.settings.policy_ingest_max_events
    if len(events) > limit:
        raise HTTPException(413, f"{len(events)} events in one batch; at most {limit}")
    parent = traceparent_of(trace.get_current_span())  # the request's span: the events' parent
    try:
        result = await run_in_threadpool(policy.ingest, events, parent)
    except KafkaUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
    counted = request.app.state.metrics.ingest_events
    counted.labels("accepted").inc(result.accepted)
    counted.labels("rejected").inc(len(result.rejected))
    return {
        "accepted": result.accepted,
        "rejected": len(result.rejected),
        "errors": result.rejected,
    }
