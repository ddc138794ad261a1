"""Parse an HTTPRoute document (``gateway.networking.k8s.io/v1``) into ``routing.model``.

Validates what the Gateway API CRD schema and its CEL rules validate (path forms, status codes,
weights, filter combinations, regex syntax) so a bad route is refused at load, not at request.
"""

from __future__ import annotations

import re
from typing import TypeVar

from routing import model as m
from routing.reader import Reader

__all__ = ["parse_httproute", "parse_object_ref"]

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
# RFC 3986 path characters, or a percent-encoding (never of '/')
_PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})*$")
MAX_WEIGHT = 1_000_000
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
_Named = TypeVar("_Named", m.HeaderMatch, m.QueryMatch)
_FILTER_FIELDS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "RequestMirror": "requestMirror",
    "CORS": "cors",
    "ExtensionRef": "extensionRef",
}


def parse_httproute(r: Reader, meta: m.Meta) -> m.HTTPRoute:
    spec = r.mapping("spec")
    parents = spec.list_of("parentRefs", _parse_parent_ref)
    hostnames = tuple(h.lower() for h in spec.str_list("hostnames"))
    for i, name in enumerate(hostnames):
        problem = hostname_problem(name)
        if problem:
            spec.sink.error(f"{spec.sub('hostnames')}[{i}]", problem)
    rules = spec.list_of("rules", _parse_rule)
    if not spec.has("rules"):
        rules = (m.RouteRule(matches=(m.RouteMatch(),)),)
    spec.finish()
    return m.HTTPRoute(meta=meta, parent_refs=parents, hostnames=hostnames, rules=rules)


# one DNS label; checked label by label (a whole-name regex with nested quantifiers
# backtracks exponentially on long invalid names)
_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_IPV4 = re.compile(r"^[0-9]+(\.[0-9]+){3}$")


def hostname_problem(name: str) -> str | None:
    """Why ``name`` is not a Gateway API Hostname, or None."""
    if _IPV4.match(name) or ":" in name:
        return "IP addresses are not allowed as hostnames"
    labels = name.split(".")
    if labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        return (
            "must be a DNS name, optionally with a wildcard label '*.' by itself as the first label"
        )
    return None


def _parse_parent_ref(r: Reader) -> m.ParentRef:
    return m.ParentRef(
        group=r.string("group", m.GATEWAY_GROUP) or "",
        kind=r.string("kind", "Gateway") or "Gateway",
        name=r.req_str("name"),
        namespace=r.string("namespace"),
        section_name=r.string("sectionName"),
        port=r.number("port", None, lo=1, hi=65535),
    )


def _parse_rule(r: Reader) -> m.RouteRule:
    matches = r.list_of("matches", _parse_match) or (m.RouteMatch(),)
    filters = r.list_of("filters", _parse_filter)
    _check_filter_combination(r, r.sub("filters"), filters)
    backends = r.list_of("backendRefs", _parse_backend_ref)
    if backends and any(f.type == "RequestRedirect" for f in filters):
        r.sink.error(r.sub("filters"), "RequestRedirect must not be used with backendRefs")
    all_filters = [*filters, *(f for b in backends for f in b.filters)]
    if any(_replaces_prefix(f) for f in all_filters) and not (
        len(matches) == 1 and matches[0].path.kind is m.PathKind.PREFIX
    ):
        r.sink.error(
            r.sub("matches"),
            "ReplacePrefixMatch needs exactly one match, with a PathPrefix path",
        )
    r.ignore("sessionPersistence")
    return m.RouteRule(
        name=r.string("name"),
        matches=matches,
        filters=filters,
        backend_refs=backends,
        timeouts=_parse_timeouts(r.opt_mapping("timeouts")),
        retry=_parse_retry(r.opt_mapping("retry")),
    )


def _replaces_prefix(f: m.RouteFilter) -> bool:
    for mod in (f.redirect.path if f.redirect else None, f.rewrite.path if f.rewrite else None):
        if mod is not None and mod.kind is m.PathModifierKind.PREFIX:
            return True
    return False


def _check_filter_combination(r: Reader, path: str, filters: tuple[m.RouteFilter, ...]) -> None:
    kinds = [f.type for f in filters]
    if "RequestRedirect" in kinds and "URLRewrite" in kinds:
        r.sink.error(path, "RequestRedirect and URLRewrite cannot be combined")
    once = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite")
    for kind in (*once, "CORS"):
        if kinds.count(kind) > 1:
            r.sink.error(path, f"{kind} may appear at most once")


def _parse_match(r: Reader) -> m.RouteMatch:
    path = m.PathMatch()
    pr = r.opt_mapping("path")
    if pr is not None:
        path = _parse_path_match(pr)
        pr.finish()
    method = r.string("method")
    if method is not None and method not in _METHODS:
        r.sink.error(r.sub("method"), f"must be one of {', '.join(sorted(_METHODS))}")
    return m.RouteMatch(
        path=path,
        headers=_first_by_name(r.list_of("headers", _parse_header_match), fold_case=True),
        query_params=_first_by_name(r.list_of("queryParams", _parse_query_match), fold_case=False),
        method=method,
    )


def _first_by_name(items: tuple[_Named, ...], *, fold_case: bool) -> tuple[_Named, ...]:
    # Spec: "If multiple entries specify equivalent names, only the first entry ... MUST be
    # considered" (header names case-insensitively, query names case-sensitively).
    seen: set[str] = set()
    out = []
    for item in items:
        key = item.name.lower() if fold_case else item.name
        if key not in seen:
            seen.add(key)
            out.append(item)
    return tuple(out)


def _parse_path_match(r: Reader) -> m.PathMatch:
    raw_kind = r.string("type", "PathPrefix") or "PathPrefix"
    value = r.string("value", "/") or "/"
    try:
        kind = m.PathKind(raw_kind)
    except ValueError:
        r.sink.error(r.sub("type"), f"must be Exact, PathPrefix or RegularExpression: {raw_kind!r}")
        return m.PathMatch()
    if kind is m.PathKind.REGEX:
        _check_regex(r, "value", value)
    elif not value.startswith("/"):
        r.sink.error(r.sub("value"), "must be an absolute path starting with '/'")
    elif "//" in value or "/./" in value or "/../" in value or value.endswith(("/.", "/..")):
        r.sink.error(r.sub("value"), "must not contain '//', '/./' or '/../'")
    elif "?" in value or "#" in value:
        r.sink.error(r.sub("value"), "must not contain '?' or '#'")
    elif "%2f" in value.lower():
        r.sink.error(r.sub("value"), "must not contain '%2f' or '%2F'")
    elif not _PATH_CHARS.match(value):
        r.sink.error(r.sub("value"), "must only contain valid path characters (RFC 3986)")
    return m.PathMatch(kind=kind, value=value)


def _parse_header_match(r: Reader) -> m.HeaderMatch:
    name = r.req_str("name")
    if name and not _HEADER_NAME.match(name):
        r.sink.error(r.sub("name"), f"{name!r} is not a valid header name")
    kind, value = _parse_value_match(r)
    return m.HeaderMatch(kind=kind, name=name, value=value)


def _parse_query_match(r: Reader) -> m.QueryMatch:
    kind, value = _parse_value_match(r)
    return m.QueryMatch(kind=kind, name=r.req_str("name"), value=value)


def _parse_value_match(r: Reader) -> tuple[m.MatchKind, str]:
    raw_kind = r.string("type", "Exact") or "Exact"
    value = r.string("value", required=True) or ""
    try:
        kind = m.MatchKind(raw_kind)
    except ValueError:
        r.sink.error(r.sub("type"), f"must be Exact or RegularExpression, not {raw_kind!r}")
        kind = m.MatchKind.EXACT
    if kind is m.MatchKind.REGEX:
        _check_regex(r, "value", value)
    return kind, value


def _check_regex(r: Reader, key: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        r.sink.error(r.sub(key), f"invalid regular expression: {exc}")


def _parse_filter(r: Reader) -> m.RouteFilter:
    kind = r.req_str("type")
    field_name = _FILTER_FIELDS.get(kind)
    if field_name is None:
        r.sink.error(r.sub("type"), f"unsupported filter type {kind!r}")
        return m.RouteFilter(type=kind)
    for other in _FILTER_FIELDS.values():
        if other != field_name and r.has(other):
            r.sink.error(r.sub(other), f"not allowed with type {kind}")
    if not r.has(field_name):
        r.sink.error(r.sub(field_name), f"required for a {kind} filter")
    body = r.mapping(field_name)
    out = _FILTER_BUILDERS[kind](body, kind)
    body.finish()
    return out


def _build_headers(r: Reader, kind: str) -> m.RouteFilter:
    def pair(e: Reader) -> tuple[str, str]:
        name = e.req_str("name")
        if name and not _HEADER_NAME.match(name):
            e.sink.error(e.sub("name"), f"{name!r} is not a valid header name")
        return (name, e.string("value", required=True) or "")

    mod = m.HeaderModifier(
        set=r.list_of("set", pair), add=r.list_of("add", pair), remove=r.str_list("remove")
    )
    names = [n.lower() for n, _ in mod.set] + [n.lower() for n, _ in mod.add]
    names += [n.lower() for n in mod.remove]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        r.sink.error(r.path, f"header {dup!r} is named by more than one action")
    if kind == "RequestHeaderModifier":
        return m.RouteFilter(type=kind, request_headers=mod)
    return m.RouteFilter(type=kind, response_headers=mod)


def _parse_path_modifier(r: Reader | None) -> m.PathModifier | None:
    if r is None:
        return None
    raw_kind = r.req_str("type")
    try:
        kind = m.PathModifierKind(raw_kind)
    except ValueError:
        r.sink.error(r.sub("type"), "must be ReplaceFullPath or ReplacePrefixMatch")
        r.ignore("replaceFullPath", "replacePrefixMatch")
        r.finish()
        return None
    key = "replaceFullPath" if kind is m.PathModifierKind.FULL else "replacePrefixMatch"
    value = r.string(key, required=True) or "/"
    r.finish()
    return m.PathModifier(kind=kind, value=value)


def _build_redirect(r: Reader, kind: str) -> m.RouteFilter:
    scheme = r.string("scheme")
    if scheme is not None and scheme not in ("http", "https"):
        r.sink.error(r.sub("scheme"), "must be http or https")
    status = r.number("statusCode", 302) or 302
    if status not in REDIRECT_CODES:
        r.sink.error(r.sub("statusCode"), f"must be one of {sorted(REDIRECT_CODES)}")
    redirect = m.RequestRedirect(
        scheme=scheme,
        hostname=r.string("hostname"),
        path=_parse_path_modifier(r.opt_mapping("path")),
        port=r.number("port", None, lo=1, hi=65535),
        status_code=status,
    )
    return m.RouteFilter(type=kind, redirect=redirect)


def _build_rewrite(r: Reader, kind: str) -> m.RouteFilter:
    rewrite = m.URLRewrite(
        hostname=r.string("hostname"), path=_parse_path_modifier(r.opt_mapping("path"))
    )
    return m.RouteFilter(type=kind, rewrite=rewrite)


def _build_mirror(r: Reader, kind: str) -> m.RouteFilter:
    backend = parse_object_ref(r.mapping("backendRef"))
    num, den = 100, 100
    if r.has("percent") and r.has("fraction"):
        r.sink.error(r.path, "only one of percent or fraction may be specified")
    if r.has("percent"):
        num = r.number("percent", 100, lo=0, hi=100) or 0
    elif r.has("fraction"):
        fr = r.mapping("fraction")
        num = fr.number("numerator", 0, lo=0) or 0
        den = fr.number("denominator", 100, lo=1) or 100
        if num > den:
            fr.sink.error(fr.sub("numerator"), "must not exceed the denominator")
        fr.finish()
    r.raw("percent")
    r.raw("fraction")
    return m.RouteFilter(
        type=kind, mirror=m.RequestMirror(backend=backend, numerator=num, denominator=den)
    )


def _build_cors(r: Reader, kind: str) -> m.RouteFilter:
    cors = m.CorsPolicy(
        allow_origins=r.str_list("allowOrigins"),
        allow_methods=r.str_list("allowMethods"),
        allow_headers=r.str_list("allowHeaders"),
        expose_headers=r.str_list("exposeHeaders"),
        allow_credentials=r.flag("allowCredentials", False),
        max_age_s=r.number("maxAge", 5, lo=1) or 5,
    )
    if "*" in cors.allow_origins and len(cors.allow_origins) > 1:
        r.sink.error(r.sub("allowOrigins"), "'*' cannot be listed alongside other origins")
    return m.RouteFilter(type=kind, cors=cors)


def _build_extension(r: Reader, kind: str) -> m.RouteFilter:
    ref = m.ObjectRef(
        group=r.string("group", "") or "", kind=r.req_str("kind"), name=r.req_str("name")
    )
    return m.RouteFilter(type=kind, extension=ref)


_FILTER_BUILDERS = {
    "RequestHeaderModifier": _build_headers,
    "ResponseHeaderModifier": _build_headers,
    "RequestRedirect": _build_redirect,
    "URLRewrite": _build_rewrite,
    "RequestMirror": _build_mirror,
    "CORS": _build_cors,
    "ExtensionRef": _build_extension,
}


def parse_object_ref(r: Reader) -> m.ObjectRef:
    ref = m.ObjectRef(
        group=r.string("group", "") or "",
        kind=r.string("kind", "Service") or "Service",
        name=r.req_str("name"),
        namespace=r.string("namespace"),
        port=r.number("port", None, lo=1, hi=65535),
    )
    r.finish()
    return ref


def _parse_backend_ref(r: Reader) -> m.BackendRef:
    ref = m.ObjectRef(
        group=r.string("group", "") or "",
        kind=r.string("kind", "Service") or "Service",
        name=r.req_str("name"),
        namespace=r.string("namespace"),
        port=r.number("port", None, lo=1, hi=65535),
    )
    weight = r.number("weight", 1, lo=0, hi=MAX_WEIGHT)
    filters = r.list_of("filters", _parse_filter)
    _check_filter_combination(r, r.sub("filters"), filters)
    return m.BackendRef(ref=ref, weight=1 if weight is None else weight, filters=filters)


def _parse_timeouts(r: Reader | None) -> m.Timeouts:
    if r is None:
        return m.Timeouts()
    out = m.Timeouts(
        request_s=r.duration("request", None), backend_request_s=r.duration("backendRequest", None)
    )
    if out.request_s and out.backend_request_s and out.backend_request_s > out.request_s:
        r.sink.error(r.sub("backendRequest"), "must not be longer than the request timeout")
    r.finish()
    return out


def _parse_retry(r: Reader | None) -> m.RetryPolicy | None:
    if r is None:
        return None
    codes: list[int] = []
    for path, item in r.items("codes"):
        if isinstance(item, int) and 400 <= item <= 599:
            codes.append(item)
        else:
            r.sink.error(path, "a retry code must be an integer in 400-599")
    policy = m.RetryPolicy(
        attempts=r.number("attempts", 1, lo=0) or 0,
        codes=tuple(codes),
        backoff_s=r.duration("backoff", None),
    )
    r.finish()
    return policy
