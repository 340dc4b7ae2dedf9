"""The one Dagster entry point: merges the slices that each `defs/<domain>/` package returns.

No domain has landed yet (the lake arrives with issue 5), so the merged definitions are empty.
"""

from __future__ import annotations

import dagster as dg

SLICES: list[dg.Definitions] = []

defs = dg.Definitions.merge(*SLICES) if SLICES else dg.Definitions()
