"""The stream fixtures (a private broker, real workers) for the observability tests."""

from tests.streams.conftest import stream_env

__all__ = ["stream_env"]
