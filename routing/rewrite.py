"""Pure request/response transforms of HTTPRoute filters: header modifiers, URL rewrites,
redirect Locations and CORS answers. Inputs and outputs are plain values; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from routing import model as m
from routing.hostnames import hostname_matches

__all__ = [
    "CorsAnswer",
    "apply_header_modifier",
    "cors_preflight",
    "cors_response_headers",
    "redirect_location",
    "rewrite_path",
]

Headers = list[tuple[str, str]]
_WELL_KNOWN_PORTS = {"http": 80, "https": 443}


def apply_header_modifier(headers: Iterable[tuple[str, str]], mod: m.HeaderModifier) -> Headers:
    """``headers`` after ``mod``: set replaces every value, add appends, remove drops (names
    compare case-insensitively, as HTTP requires)."""
    drop = {name.lower() for name in mod.remove} | {name.lower() for name, _ in mod.set}
    out = [(k, v) for k, v in headers if k.lower() not in drop]
    out.extend(mod.set)
    for name, value in mod.add:
        # append to an existing value ("a,b"), which is what a backend sees either way; but
        # Set-Cookie values are never joined (RFC 9110 §5.3, RFC 6265 §3): another field line
        lname = name.lower()
        at = next((i for i, (k, _) in enumerate(out) if k.lower() == lname), None)
        if at is None or lname == "set-cookie":
            out.append((name, value))
        else:
            out[at] = (out[at][0], f"{out[at][1]},{value}")
    return out


def rewrite_path(modifier: m.PathModifier, matched_prefix: str | None, path: str) -> str:
    """The rewritten path. ReplacePrefixMatch replaces the matched prefix element-wise:
    ``/foo`` → ``/xyz`` turns ``/foo/bar`` into ``/xyz/bar`` and ``/foo`` into ``/xyz``."""
    if modifier.kind is m.PathModifierKind.FULL or matched_prefix is None:
        # a path is absolute; a relative value would otherwise be glued to the authority
        return modifier.value if modifier.value.startswith("/") else "/" + modifier.value
    prefix = matched_prefix.rstrip("/")
    rest = path[len(prefix) :] if path.startswith(prefix) else path
    replaced = modifier.value.rstrip("/") + rest
    if not replaced.startswith("/"):
        replaced = "/" + replaced
    return replaced


def redirect_location(
    redirect: m.RequestRedirect,
    *,
    scheme: str,
    host: str,
    listener_port: int,
    path: str,
    query: str,
    matched_prefix: str | None,
) -> str:
    """The ``Location`` of a RequestRedirect, per the spec's port rules: an explicit port wins;
    else a redirect scheme implies its well-known port; else the listener's port. Ports 80 for
    http and 443 for https are left out."""
    new_scheme = redirect.scheme or scheme
    if redirect.port is not None:
        port = redirect.port
    elif redirect.scheme is not None:
        port = _WELL_KNOWN_PORTS[redirect.scheme]
    else:
        port = listener_port
    new_host = redirect.hostname or host
    if ":" in new_host and not new_host.startswith("["):
        new_host = f"[{new_host}]"
    new_path = rewrite_path(redirect.path, matched_prefix, path) if redirect.path else path
    authority = new_host if _WELL_KNOWN_PORTS.get(new_scheme) == port else f"{new_host}:{port}"
    return f"{new_scheme}://{authority}{new_path}" + (f"?{query}" if query else "")


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _split_origin(origin: str) -> tuple[str, str, str] | None:
    """(scheme, host, port) with the scheme's default port filled in (HTTPCORSFilter: "if not
    included, port 80 is assumed for http ... and port 443 ... for https")."""
    scheme, sep, rest = origin.partition("://")
    if not sep:
        return None
    host, colon, port = rest.rpartition(":")
    if not colon or not port.isdigit():
        host, port = rest, _DEFAULT_PORTS.get(scheme.lower(), "")
    return scheme.lower(), host.lower(), port


def _origin_allowed(policy: m.CorsPolicy, origin: str) -> bool:
    got = _split_origin(origin)
    for allowed in policy.allow_origins:
        if allowed in ("*", origin):
            return True
        want = _split_origin(allowed)
        if got is None or want is None or want[0] != got[0] or want[2] != got[2]:
            continue
        pattern = want[1]
        if pattern == "*" or pattern == got[1]:  # "A wildcard by itself matches all hosts."
            return True
        if pattern.startswith("*.") and hostname_matches(pattern, got[1]):
            return True
    return False


def _allow_origin_value(policy: m.CorsPolicy, origin: str) -> str:
    # With credentials a wildcard cannot be sent back (Fetch spec), so echo the origin.
    if policy.allow_origins == ("*",) and not policy.allow_credentials:
        return "*"
    return origin


CorsAnswer = list[tuple[str, str]]


def cors_preflight(
    policy: m.CorsPolicy, origin: str, method: str, request_headers: Sequence[str]
) -> CorsAnswer:
    """Headers answering a preflight; [] when the origin is not allowed (no CORS headers)."""
    if not _origin_allowed(policy, origin):
        return []
    out = [("Access-Control-Allow-Origin", _allow_origin_value(policy, origin))]
    if policy.allow_credentials:
        out.append(("Access-Control-Allow-Credentials", "true"))
    methods = policy.allow_methods
    if "*" in methods:
        # with credentials '*' is a literal method name (Fetch), so echo the requested one;
        # no Access-Control-Request-Method: omit the header (HTTPCORSFilter)
        methods = (method,) if method else ()
    if methods:
        out.append(("Access-Control-Allow-Methods", ", ".join(methods)))
    allow_headers = policy.allow_headers
    if "*" in allow_headers:
        allow_headers = tuple(request_headers) if policy.allow_credentials else ("*",)
    if allow_headers:
        out.append(("Access-Control-Allow-Headers", ", ".join(allow_headers)))
    _expose(policy, out)
    out.append(("Access-Control-Max-Age", str(policy.max_age_s)))
    if _allow_origin_value(policy, origin) != "*":
        out.append(("Vary", "Origin"))
    return out


def cors_response_headers(policy: m.CorsPolicy, origin: str) -> CorsAnswer:
    """Headers added to an actual (non-preflight) response from an allowed origin."""
    if not _origin_allowed(policy, origin):
        return []
    out = [("Access-Control-Allow-Origin", _allow_origin_value(policy, origin))]
    if policy.allow_credentials:
        out.append(("Access-Control-Allow-Credentials", "true"))
    _expose(policy, out)
    if _allow_origin_value(policy, origin) != "*":
        out.append(("Vary", "Origin"))
    return out


def _expose(policy: m.CorsPolicy, out: CorsAnswer) -> None:
    # With credentials a '*' cannot be sent (HTTPCORSFilter): send the named headers only.
    names = policy.expose_headers
    if policy.allow_credentials:
        names = tuple(n for n in names if n != "*")
    if names:
        out.append(("Access-Control-Expose-Headers", ", ".join(names)))
