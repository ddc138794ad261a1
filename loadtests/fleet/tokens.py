"""Deterministic stand-ins for a tokenizer, a chat template, sampling and an embedding model.

Rules: the same text always yields the same tokens, and a shared text prefix yields the same
leading tokens (so shared system prompts share prefix-cache blocks); nothing here is random
across processes (hashes are blake2b/shake, never Python's salted `hash`).
"""

import hashlib
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence

# A "token" is a run of up to 8 word characters or a single other non-space character: about
# 4 characters per token on English text, like a BPE tokenizer, and prefix-stable.
_TOKEN_RE = re.compile(r"\w{1,8}|[^\w\s]")

_VOCABULARY = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "from",
    "at",
    "or",
    "an",
    "have",
    "not",
    "they",
    "which",
    "one",
    "you",
    "were",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "model",
    "token",
    "cache",
    "batch",
    "queue",
    "route",
    "prefix",
    "adapter",
    "replica",
    "stream",
    "latency",
    "request",
    "engine",
    "block",
    "decode",
    "prefill",
    "sequence",
    "gateway",
]


def tokenize(text: str) -> tuple[str, ...]:
    return tuple(_TOKEN_RE.findall(text))


def render_chat(messages: Sequence[Mapping[str, object]]) -> str:
    """Render chat messages the way a chat template would, ending with the generation prompt.

    Each message is `<|role|>\\ncontent\\n`; content may be a string or a list of
    `{"type": "text", "text": ...}` parts. Raises ValueError on any other shape.
    """
    parts = []
    for message in messages:
        role, content = message.get("role"), message.get("content", "")
        if not isinstance(role, str):
            raise ValueError("every message needs a string 'role'")
        parts.append(f"<|{role}|>\n{_content_text(content)}\n")
    parts.append("<|assistant|>\n")
    return "".join(parts)


def _content_text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(t, str) for t in texts):
            return "\n".join(t for t in texts if isinstance(t, str))
    raise ValueError("message content must be a string or a list of text parts")


def detokenize(tokens: Iterable[str]) -> str:
    """Text of generated tokens; tokenizing it again yields the same tokens."""
    return "".join(f" {token}" for token in tokens)


def chain_block_hashes(
    tokens: Sequence[str], block_size: int, salt: str, previous: Sequence[int] = ()
) -> list[int]:
    """Hashes of every full block of `tokens`, each chained to its parent (like vLLM's).

    `previous` are already computed hashes of the leading blocks; only new ones are computed.
    `salt` keeps caches of different models/adapters apart.
    """
    hashes = list(previous)
    parent = hashes[-1] if hashes else int.from_bytes(_digest(salt.encode(), 8), "big")
    for start in range(len(hashes) * block_size, len(tokens) - block_size + 1, block_size):
        block = "\x1f".join(tokens[start : start + block_size]).encode()
        parent = int.from_bytes(_digest(parent.to_bytes(8, "big") + block, 8), "big")
        hashes.append(parent)
    return hashes


def plan_output(
    *, seed: int, model: str, prompt: str, max_tokens: int, ignore_eos: bool, min_fraction: float
) -> tuple[tuple[str, ...], bool]:
    """The tokens a request will generate and whether it ends on EOS ("stop") before max_tokens.

    Deterministic in (seed, model, prompt): the same request yields the same text on any replica.
    """
    rng = random.Random(_digest(f"{seed}\x1f{model}\x1f{prompt}".encode(), 16))
    length = max_tokens
    if not ignore_eos:
        length = rng.randint(max(1, math.ceil(min_fraction * max_tokens)), max_tokens)
    return tuple(rng.choices(_VOCABULARY, k=length)), length < max_tokens


def embedding_vector(model: str, text: str, dim: int) -> tuple[float, ...]:
    """A unit vector derived from (model, text): callers can recompute it to check the answer."""
    raw = hashlib.shake_256(f"{model}\x1f{text}".encode()).digest(2 * dim)
    values = [int.from_bytes(raw[i : i + 2], "big") / 32767.5 - 1.0 for i in range(0, 2 * dim, 2)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return tuple(round(v / norm, 6) for v in values)


def _digest(data: bytes, size: int) -> bytes:
    return hashlib.blake2b(data, digest_size=size).digest()
