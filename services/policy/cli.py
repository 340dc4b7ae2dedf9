"""`sentinel policy ...`: serve the policy service, make keys and users, verify the audit log,
upload a local pack folder. Each command only wires settings to library code."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer

from sentinel.console import err, out
from sentinel.console import fail as _fail
from sentinel.console import settings_or_exit as _settings

app = typer.Typer(
    help="The rule and policy service: packs, approvals, signed deploys, RBAC, audit, ingest.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
users_app = typer.Typer(help="Users and their API keys.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
packs_app = typer.Typer(help="Rule packs, through the service's HTTP API.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(audit_app, name="audit")
app.add_typer(packs_app, name="packs")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default: SENTINEL_POLICY_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: SENTINEL_POLICY_PORT")] = None,
) -> None:
    """Migrate the database, then serve the API (OpenAPI at /docs)."""
    import uvicorn

    from services.policy.app import create_app

    settings = _settings()
    application = create_app(settings)
    out.print(
        f"policy service on http://{host or settings.policy_host}:{port or settings.policy_port} "
        f"(signing key {application.state.policy.key_id}, "
        f"public key {application.state.policy.key_path.with_suffix('.pub')})",
        highlight=False,
    )
    uvicorn.run(
        application,
        host=host or settings.policy_host,
        port=port or settings.policy_port,
        log_level=settings.log_level,
    )


@app.command()
def keygen(
    directory: Annotated[
        Path | None,
        typer.Argument(help="where to write <id>.key and <id>.pub (default: <state>/policy/keys)"),
    ] = None,
) -> None:
    """Make an Ed25519 signing key pair; print its key id. Give the .pub to workers and agents."""
    from sentinel.rules.signing import keygen as make_key

    directory = directory or _settings().policy_root / "keys"
    key_id = make_key(directory)
    out.print(f"key id {key_id}", highlight=False)
    out.print(f"private key {directory / (key_id + '.key')} (SENTINEL_POLICY_SIGNING_KEY)")
    out.print(f"public key  {directory / (key_id + '.pub')} (SENTINEL_RULES_TRUSTED_KEYS)")


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Option(help="user (or agent) name, unique")],
    role: Annotated[str, typer.Option(help="viewer, author, approver, deployer, admin or agent")],
) -> None:
    """Create a user straight in the database and print its API key (shown only this once)."""
    from sqlalchemy import select

    from services.policy import audit
    from services.policy.auth import ROLES, hash_key, new_key
    from services.policy.db import User, make_engine, migrate

    if role not in ROLES:
        raise _fail(f"unknown role '{role}'; one of: {', '.join(ROLES)}", 2)
    url = _settings().policy_database_url
    migrate(url)
    engine = make_engine(url)
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        if session.scalars(select(User).where(User.name == name)).first() is not None:
            raise _fail(f"user '{name}' exists")
        key = new_key()
        session.add(User(name=name, role=role, key_hash=hash_key(key)))
        session.flush()
        audit.append(
            session,
            actor=f"cli:{getpass.getuser()}",
            action="user.create",
            subject=f"user:{name}",
            request_id="cli",
            detail={"role": role},
        )
    engine.dispose()
    err.print(f"created {role} '{name}'; its API key (shown once):", highlight=False)
    print(key)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the whole hash chain; report the first broken entry and exit 1 if there is one."""
    from sqlalchemy.orm import Session

    from services.policy.audit import verify_chain
    from services.policy.db import make_engine, migrate

    url = _settings().policy_database_url
    migrate(url)
    engine = make_engine(url)
    with Session(engine) as session:
        report = verify_chain(session)
    engine.dispose()
    if not report.ok:
        raise _fail(f"audit chain broken at entry {report.broken_at}: {report.reason}")
    out.print(f"audit chain ok: {report.entries} entries", highlight=False)


@packs_app.command("upload")
def packs_upload(
    pack_dir: Annotated[
        Path, typer.Argument(help="a pack folder, e.g. rules/core", file_okay=False)
    ],
    key: Annotated[str, typer.Option(envvar="SENTINEL_POLICY_API_KEY", help="an author's API key")],
    url: Annotated[
        str | None, typer.Option(help="service URL (default: http://policy_host:policy_port)")
    ] = None,
) -> None:
    """Upload a local pack folder as a new version (the pack is created first if needed)."""
    import httpx

    from sentinel.rules import PackError
    from services.policy.client import upload_folder

    settings = _settings()
    base = url or f"http://{settings.policy_host}:{settings.policy_port}"
    try:
        response = upload_folder(base, key, pack_dir)
    except PackError as exc:
        raise _fail(str(exc)) from None
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach {base}: {exc!r}") from None
    if response.status_code != 201:
        body = response.json()
        for problem in body.get("problems", []):
            where = ":".join(
                str(problem[k]) for k in ("file", "line", "column") if problem.get(k) is not None
            )
            out.print(
                f"{problem.get('kind')}: {where} {problem.get('rule', '')} "
                f"{problem.get('test', '')}: {problem.get('message')}",
                highlight=False,
                markup=False,
            )
        raise _fail(f"{response.status_code}: {body.get('detail')}")
    version = response.json()
    out.print(
        f"uploaded {pack_dir} as version {version['version']}: {version['rules']} rules, "
        f"{version['tests_passed']} golden tests passed; awaiting approval",
        highlight=False,
    )
