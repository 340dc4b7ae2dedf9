"""Nightly LLM triage evaluations: golden datasets, metrics, the ragas runner, reports and the gate."""

import os

# ragas posts usage analytics to its vendor unless told not to; evaluations never call out.
# It reads the variable once, on first use, so it must be set before ragas is imported.
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
