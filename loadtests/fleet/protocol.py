"""OpenAI-compatible request parsing and response/chunk shapes, framed the way vLLM frames them.

Pure functions over JSON-shaped values: no aiohttp, no engine. What vLLM sends:
- stream: `data: {json}\\n\\n` per chunk (compact JSON), chat chunks `chat.completion.chunk` (the
  first carries `delta.role`), completion chunks `text_completion`; the chunk with the last token
  carries `finish_reason`; with `stream_options.include_usage` one more chunk with `choices: []`
  and `usage`; then `data: [DONE]\\n\\n`.
- errors: `{"error": {"message", "type", "param", "code"}}` with the HTTP status as `code`.
"""

import dataclasses
import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .tokens import render_chat

DONE_EVENT = b"data: [DONE]\n\n"
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"


class Kind(enum.StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"


class ApiError(Exception):
    """An OpenAI-style error answer; `body` is what the client receives."""

    def __init__(self, status: int, message: str, err_type: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {
            "error": {"message": message, "type": err_type, "param": param, "code": status}
        }


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "BadRequestError", param)


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GenerationRequest:
    kind: Kind
    model: str
    prompt: str  # chat messages already rendered
    stream: bool
    include_usage: bool
    max_tokens: int | None
    ignore_eos: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddingRequest:
    model: str
    inputs: tuple[str, ...]


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"Invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def model_of(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("Field 'model' is required and must be a string.", "model")
    return model


def parse_generation(body: Mapping[str, Any], kind: Kind) -> GenerationRequest:
    """Validate a chat/completions body; chat messages are rendered into one prompt."""
    if kind is Kind.CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise bad_request("Field 'messages' must be a list of objects.", "messages")
        try:
            prompt = render_chat(messages)
        except ValueError as exc:
            raise bad_request(str(exc), "messages") from exc
    else:
        prompt = _completion_prompt(body.get("prompt"))
    options = body.get("stream_options") or {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise bad_request("max_tokens must be a positive integer.", "max_tokens")
    if body.get("n", 1) != 1:
        raise bad_request("Only n=1 is simulated.", "n")
    return GenerationRequest(
        kind=kind,
        model=model_of(body),
        prompt=prompt,
        stream=body.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        max_tokens=max_tokens,
        ignore_eos=body.get("ignore_eos") is True,
    )


def _completion_prompt(prompt: object) -> str:
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        return " ".join(str(t) for t in prompt)  # token ids: one simulated token each
    raise bad_request("Field 'prompt' must be a string or a list of token ids.", "prompt")


def parse_embedding(body: Mapping[str, Any]) -> EmbeddingRequest:
    raw = body.get("input")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(_is_int(t) for t in raw)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise bad_request("Field 'input' must be a string or a non-empty list.", "input")
    inputs = []
    for item in raw:
        if isinstance(item, str):
            inputs.append(item)
        elif isinstance(item, list) and all(_is_int(t) for t in item):
            inputs.append(" ".join(str(t) for t in item))
        else:
            raise bad_request("Each input must be a string or a list of token ids.", "input")
    return EmbeddingRequest(model=model_of(body), inputs=tuple(inputs))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def sse_event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def stream_chunk(
    kind: Kind, head: Mapping[str, Any], text: str, finish: str | None, *, role: bool = False
) -> dict[str, Any]:
    """One streamed choice; `head` holds id, created and model."""
    if kind is Kind.CHAT:
        delta = {"role": "assistant", "content": text} if role else {"content": text}
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text, "logprobs": None}
        obj = "text_completion"
    choice["finish_reason"] = finish
    if finish is not None:
        choice["stop_reason"] = None
    return {"id": head["id"], "object": obj, **_tail(head), "choices": [choice]}


def usage_chunk(kind: Kind, head: Mapping[str, Any], used: Mapping[str, Any]) -> dict[str, Any]:
    obj = "chat.completion.chunk" if kind is Kind.CHAT else "text_completion"
    return {"id": head["id"], "object": obj, **_tail(head), "choices": [], "usage": used}


def full_response(
    kind: Kind, head: Mapping[str, Any], text: str, finish: str, used: Mapping[str, Any]
) -> dict[str, Any]:
    if kind is Kind.CHAT:
        message = {"role": "assistant", "content": text, "tool_calls": []}
        choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None}
        obj = "text_completion"
    choice |= {"finish_reason": finish, "stop_reason": None}
    return {"id": head["id"], "object": obj, **_tail(head), "choices": [choice], "usage": used}


def _tail(head: Mapping[str, Any]) -> dict[str, Any]:
    return {"created": head["created"], "model": head["model"]}


def embeddings_response(
    head: Mapping[str, Any], vectors: Sequence[Sequence[float]], prompt_tokens: int
) -> dict[str, Any]:
    data = [
        {"index": i, "object": "embedding", "embedding": list(v)} for i, v in enumerate(vectors)
    ]
    return {
        "id": head["id"],
        "object": "list",
        **_tail(head),
        "data": data,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def models_response(
    *, model: str, adapters: Sequence[str], owned_by: str, created: int, max_model_len: int
) -> dict[str, Any]:
    """`/v1/models` as vLLM answers it: the base model, then each adapter with `parent`."""
    entries = [(model, model, None)] + [(a, f"/adapters/{a}", model) for a in adapters]
    data = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": owned_by,
            "root": root,
            "parent": parent,
            "max_model_len": max_model_len,
        }
        for name, root, parent in entries
    ]
    return {"object": "list", "data": data}
