"""What every `sentinel` sub-command prints with: stdout and stderr consoles (piped output is not
cut at 80 columns), the settings or a clear configuration error, and a failure with an exit code."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from sentinel.settings import Settings, get_settings

out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def settings_or_exit() -> Settings:
    """The process settings; a bad `SENTINEL_*` variable is named and exits with 2."""
    try:
        return get_settings()
    except ValidationError as exc:
        for problem in exc.errors():
            field = ".".join(str(p) for p in problem["loc"])
            err.print(f"[red]configuration error[/]: SENTINEL_{field.upper()}: {problem['msg']}")
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` on stderr; raise the returned Exit."""
    err.print(Text.assemble(("error", "red"), f": {message}"), highlight=False)
    return typer.Exit(code)
