"""Read what routing needs from an OpenAI-style request body, and rewrite its ``model``.

Only JSON bodies of the OpenAI API are read (chat/completions, completions, embeddings). The
prompt text feeds the prefix index; its length (≈ 4 characters per token) and ``max_tokens``
feed the gateway's token accounting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["BodyError", "OpenAIRequest", "model_of", "parse_body", "with_model"]

CHARS_PER_TOKEN = 4
DEFAULT_MAX_TOKENS = 256


class BodyError(ValueError):
    """The body is not a JSON object as the OpenAI API requires."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenAIRequest:
    model: str | None
    # the prompt text in the parts it came in (one per chat message), so the prefix hasher
    # can reuse what it computed for a part it has seen before (a shared system prompt)
    prompt_parts: tuple[str, ...]
    stream: bool
    max_tokens: int
    document: dict[str, object]

    @property
    def prompt(self) -> str:
        return "".join(self.prompt_parts)

    @property
    def prompt_tokens(self) -> int:
        return max(1, sum(map(len, self.prompt_parts)) // CHARS_PER_TOKEN)


def model_of(body: bytes) -> str | None:
    """The ``model`` an OpenAI request body names; None for anything else (not JSON, not an
    object, no string ``model``). Never raises: for bodies passed through, not judged."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    model = doc.get("model") if isinstance(doc, dict) else None
    return model if isinstance(model, str) else None


def parse_body(body: bytes) -> OpenAIRequest:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyError(f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # arrays or objects nested deeper than the parser goes
        raise BodyError("the body's JSON is nested too deeply") from exc
    if not isinstance(doc, dict):
        raise BodyError("the body must be a JSON object")
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise BodyError("'model' must be a string")
    max_tokens = doc.get("max_completion_tokens", doc.get("max_tokens"))
    return OpenAIRequest(
        model=model,
        prompt_parts=_prompt_parts(doc),
        stream=doc.get("stream") is True,
        max_tokens=max_tokens
        if isinstance(max_tokens, int) and max_tokens > 0
        else DEFAULT_MAX_TOKENS,
        document=doc,
    )


def _prompt_parts(doc: dict[str, object]) -> tuple[str, ...]:
    messages = doc.get("messages")
    if isinstance(messages, list):
        return tuple(
            f"{msg.get('role', '')}: {_content(msg.get('content'))}\n"
            for msg in messages
            if isinstance(msg, dict)
        )
    for key in ("prompt", "input"):
        value = doc.get(key)
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list):
            return ("\n".join(v if isinstance(v, str) else json.dumps(v) for v in value),)
    return ()


def _content(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def with_model(req: OpenAIRequest, model: str) -> bytes:
    """The body with ``model`` replaced (other fields unchanged)."""
    return json.dumps({**req.document, "model": model}, separators=(",", ":")).encode()
