"""`sentinel gateway ...`: serve the LLM gateway, manage its API keys, show usage."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sentinel.console import err, out
from sentinel.console import fail as _fail
from sentinel.console import settings_or_exit as _settings

app = typer.Typer(
    help="The OpenAI-compatible LLM gateway: keys, quotas, fallbacks, redacted logs.",
    no_args_is_help=True,
)
keys_app = typer.Typer(help="API keys (stored as SHA-256 hashes).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="gateway.yaml (default: SENTINEL_GATEWAY_CONFIG or the embedded one)"
    ),
]


def _store() -> Any:
    from services.gateway.keys import KeyStore, KeyStoreError

    try:
        return KeyStore(_settings().gateway_database_url)
    except KeyStoreError as exc:
        raise _fail(str(exc)) from None


@app.command("serve")
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="default: SENTINEL_GATEWAY_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: SENTINEL_GATEWAY_PORT")] = None,
) -> None:
    """Serve the OpenAI-compatible API (/v1/chat/completions, /v1/models, /metrics) until Ctrl-C."""
    import uvicorn

    from sentinel.logs import configure_logging
    from services.gateway.app import create_app
    from services.gateway.config import ConfigError, load_config
    from services.gateway.keys import KeyStoreError

    settings = _settings()
    configure_logging(settings)
    try:
        gateway_config = load_config(settings, config)
        application = create_app(gateway_config, settings)
    except (ConfigError, KeyStoreError) as exc:
        raise _fail(str(exc), 2) from None
    bind_host, bind_port = host or settings.gateway_host, port or settings.gateway_port
    err.print(
        f"gateway on http://{bind_host}:{bind_port}/v1 (config {gateway_config.source}, "
        f"keys {settings.gateway_database_url})",
        highlight=False,
    )
    uvicorn.run(
        application,
        host=bind_host,
        port=bind_port,
        log_config=None,  # structlog (configure_logging) formats uvicorn's records too
        access_log=False,  # the gateway writes its own request log
    )


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", "-n", help="who or what uses the key")],
    models: Annotated[
        str, typer.Option(help="comma-separated model names the key may use; * for all")
    ] = "*",
    rpm: Annotated[
        int | None, typer.Option(min=1, help="requests per minute (default: unlimited)")
    ] = None,
    tokens_per_day: Annotated[
        int | None, typer.Option(min=1, help="prompt + completion tokens per UTC day")
    ] = None,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    from services.gateway.keys import KeyStoreError

    allowed = [m.strip() for m in models.split(",") if m.strip()]
    store = _store()
    try:
        key, plain = store.create(name, allowed, rpm, tokens_per_day)
    except KeyStoreError as exc:
        raise _fail(str(exc)) from None
    finally:
        store.close()
    err.print(
        f"created key '{key.name}' ({key.prefix}...), models {', '.join(key.models)}; "
        "it is shown only now:",
        highlight=False,
    )
    print(plain)


@keys_app.command("list")
def keys_list() -> None:
    """Every key: name, visible prefix, models, quotas, state."""
    store = _store()
    try:
        keys = store.list_keys()
    finally:
        store.close()
    table = Table("name", "prefix", "models", "rpm", "tokens/day", "state", "created")
    for key in keys:
        table.add_row(
            key.name,
            f"{key.prefix}...",
            ", ".join(key.models),
            str(key.rpm or "-"),
            f"{key.tokens_per_day:,}" if key.tokens_per_day else "-",
            "[red]revoked[/]" if key.disabled else "active",
            key.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="the key's name or visible prefix")],
) -> None:
    """Disable a key (a running gateway refuses it within key_cache_s, 5 s by default)."""
    from services.gateway.keys import KeyStoreError

    store = _store()
    try:
        revoked = store.revoke(key)
    except KeyStoreError as exc:
        raise _fail(str(exc)) from None
    finally:
        store.close()
    out.print(f"revoked key '{revoked.name}' ({revoked.prefix}...)", highlight=False)


@app.command("usage")
def usage(
    days: Annotated[int, typer.Option(min=1, help="the last N UTC days, today included")] = 7,
    key: Annotated[str | None, typer.Option(help="only this key (name or prefix)")] = None,
) -> None:
    """Requests and tokens per key, model and rule (X-Sentinel-Rule), summed over the days."""
    from services.gateway.keys import today

    store = _store()
    try:
        rows = store.usage(since=today() - timedelta(days=days - 1), key=key)
    finally:
        store.close()
    totals: dict[tuple[str, str, str], list[int]] = {}
    for row in rows:
        total = totals.setdefault((row.key, row.model, row.rule), [0, 0, 0])
        total[0] += row.requests
        total[1] += row.prompt_tokens
        total[2] += row.completion_tokens
    table = Table("key", "model", "rule", "requests", "prompt tokens", "completion tokens")
    for (name, model, rule), (requests, prompt, completion) in sorted(totals.items()):
        table.add_row(name, model, rule or "-", f"{requests:,}", f"{prompt:,}", f"{completion:,}")
    out.print(table)
    if not totals:
        err.print(f"no usage in the last {days} day(s)")
