"""Sticky variant assignment for A/B splits and rollouts: which variant a request's key gets.

Decides: for a key (a user id, a session cookie, a hashed API key) and weighted variants, the
one variant that key is served by. Must never: keep state, read a clock, or use Python's
``hash`` (salted per process). Every gateway replica, before and after a restart, computes the
same answer from the same inputs, so stickiness needs no shared store.

Algorithm: weighted rendezvous hashing (the logarithmic method of Schindelhauer & Schomaker,
"Weighted distributed hash tables", SPAA 2005). For each variant ``v`` with weight ``w > 0``
the key draws ``u = H(salt, key, v)`` uniform in (0, 1) (blake2b) and scores ``-ln(u) / w``,
an Exp(w) variable; the smallest score wins. Hence

- shares are exact: the minimum of independent Exp(w_i) is variant ``i`` with probability
  ``w_i / Σw`` (Gateway API ``weight / sum(weights)``);
- reweighting is monotone: ``u`` does not depend on any weight, so raising the candidate's
  weight (or lowering another's) can only lower the candidate's score relative to the rest. No
  key ever leaves the candidate, and with two variants every key that moves, moves to it: going
  from a 10 % to a 20 % share moves 10 % of the keys (in expectation; binomial spread).
  ``hash % sum`` would reshuffle most keys instead;
- removing a variant (weight 0, or drained) moves only its own keys, and restoring it moves
  exactly those keys back.

The salt (the experiment's ``namespace/name``) makes experiments independent: a user on the
candidate of one rollout is not thereby on the candidate of every other.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b

__all__ = ["StickySpec", "assign", "key_from"]

_UNIT = 2.0**-53
_API_KEY_PERSON = b"sluice-apikey"


@dataclass(frozen=True, slots=True, kw_only=True)
class StickySpec:
    """Where a request's sticky key comes from, tried in this order: ``header`` (its value),
    ``cookie`` (its value), then the ``Authorization: Bearer`` token (hashed, never kept in
    the clear) when ``api_key`` is set. Header names are lower case."""

    header: str | None = None
    cookie: str | None = None
    api_key: bool = False


def assign(
    key: str,
    variants: Sequence[tuple[str, int]],
    *,
    salt: str,
    override: str | None = None,
    drained: Collection[str] = (),
) -> str | None:
    """The variant for ``key`` among ``(name, weight)`` pairs; None when no variant has a
    weight above 0 (the Gateway API answer for that is 500).

    ``override`` (a tester's forced variant) wins when it names a listed variant that is not
    drained, whatever its weight: as GEP-1619 lets a session beat weights, even weight 0, a
    tester can reach a candidate before it takes any traffic. An unknown or drained override is
    ignored and the key decides. A ``drained`` variant is treated as weight 0 (its keys move to
    the others) and cannot be forced. Names must be unique; ties (probability 2**-53) go to
    the earlier variant."""
    if override is not None and override not in drained:
        for name, _ in variants:
            if name == override:
                return name
    prefix = f"{salt}\x00{key}\x00"
    log = math.log
    best: str | None = None
    best_score = math.inf
    for name, weight in variants:
        if weight > 0 and name not in drained:
            digest = blake2b(
                (prefix + name).encode("utf-8", "surrogatepass"), digest_size=8
            ).digest()
            # the top 53 bits, centred in their interval: u lies strictly inside (0, 1)
            u = ((int.from_bytes(digest, "big") >> 11) + 0.5) * _UNIT
            score = -log(u) / weight
            if score < best_score:
                best, best_score = name, score
    return best


def key_from(
    headers: Mapping[str, str], cookies: Mapping[str, str], spec: StickySpec
) -> str | None:
    """The sticky key of a request, or None when it carries none of ``spec``'s sources.

    ``headers`` must look names up case-insensitively (aiohttp's ``request.headers`` does) or
    have lower-case keys. Keys are tagged with their source, so a header value can never
    collide with a cookie value or an API-key digest. Blank values count as absent."""
    if spec.header is not None:
        value = headers.get(spec.header, "").strip()
        if value:
            return "h:" + value
    if spec.cookie is not None:
        value = cookies.get(spec.cookie, "").strip()
        if value:
            return "c:" + value
    if spec.api_key:
        token = _bearer_token(headers.get("authorization", ""))
        if token:
            digest = blake2b(
                token.encode("utf-8", "surrogatepass"), digest_size=16, person=_API_KEY_PERSON
            )
            return "k:" + digest.hexdigest()
    return None


STICKY_COOKIE_MAX_AGE_S = 7 * 24 * 3600


def issue_cookie(spec: StickySpec, token: str, *, secure: bool = False) -> tuple[str, str] | None:
    """For a request that carries no sticky key: the key to assign it by, and the
    ``Set-Cookie`` value that makes the client's next requests carry that same key (so the
    first request lands where the later ones will); None when ``spec`` names no cookie.
    ``token`` is a fresh random cookie value (URL-safe characters only); ``secure`` (the client
    came over HTTPS) adds the ``Secure`` attribute, so the cookie never travels in clear text
    (RFC 6265 §4.1.2.5)."""
    if spec.cookie is None:
        return None
    cookie = (
        f"{spec.cookie}={token}; Path=/; Max-Age={STICKY_COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Lax"
    )
    return "c:" + token, cookie + "; Secure" if secure else cookie


def _bearer_token(value: str) -> str:
    scheme, _, token = value.strip().partition(" ")
    # RFC 9110 §11.1: the auth scheme is case-insensitive
    return token.strip() if scheme.lower() == "bearer" else ""
