"""The request bodies the gateway validates. OpenAI parameters it does not name (temperature's
siblings, response_format, seed, ...) are kept and sent on to the upstream as they are."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDef(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["function"]
    function: FunctionDef


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ChatRequest(BaseModel):
    """POST /v1/chat/completions, as OpenAI defines it, plus `sentinel_tools`."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="a public model name (GET /v1/models)")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=1, description="one choice per request")
    sentinel_tools: bool = Field(
        False,
        description="gateway extension: offer the sentinel triage tools and run the calls to them",
    )

    def upstream_body(self) -> dict[str, Any]:
        """What the client sent, validated, without the gateway's own fields."""
        body = self.model_dump(exclude_unset=True, exclude={"sentinel_tools"})
        body.pop("stream", None)
        return body
