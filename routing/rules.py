"""An HTTPRoute's rules compiled for request time: each rule's filters, its weighted
backends resolved to targets (Services, InferencePools, or why not), and the cumulative
weights the split draws from."""

from __future__ import annotations

from dataclasses import dataclass

from routing import model as m
from routing.backends import InvalidTarget, Resolver, Target

__all__ = ["CompiledRule", "FilterSet", "MirrorTarget", "WeightedBackend", "compile_route"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MirrorTarget:
    target: Target
    numerator: int
    denominator: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterSet:
    request_headers: m.HeaderModifier | None = None
    response_headers: m.HeaderModifier | None = None
    redirect: m.RequestRedirect | None = None
    rewrite: m.URLRewrite | None = None
    mirrors: tuple[MirrorTarget, ...] = ()
    cors: m.CorsPolicy | None = None
    unsupported: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedBackend:
    target: Target
    weight: int
    filters: FilterSet


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledRule:
    route: str
    index: int
    name: str | None
    filters: FilterSet
    backends: tuple[WeightedBackend, ...]
    cumulative: tuple[int, ...]
    timeouts: m.Timeouts
    retry: m.RetryPolicy | None
    backend_names: tuple[str, ...] = ()  # backendRef names, in backends order (A/B variants)

    @property
    def total_weight(self) -> int:
        return self.cumulative[-1] if self.cumulative else 0


def compile_route(route: m.HTTPRoute, resolver: Resolver) -> tuple[CompiledRule, ...]:
    return tuple(_compile_rule(route, i, rule, resolver) for i, rule in enumerate(route.rules))


def _compile_rule(
    route: m.HTTPRoute, index: int, rule: m.RouteRule, resolver: Resolver
) -> CompiledRule:
    ns = route.meta.namespace
    backends = tuple(
        WeightedBackend(
            target=resolver.resolve(b.ref, from_kind="HTTPRoute", from_ns=ns),
            weight=b.weight,
            filters=_compile_filters(b.filters, resolver, ns),
        )
        for b in rule.backend_refs
    )
    cumulative: list[int] = []
    total = 0
    for b in backends:
        total += b.weight
        cumulative.append(total)
    return CompiledRule(
        route=route.meta.key,
        index=index,
        name=rule.name,
        filters=_compile_filters(rule.filters, resolver, ns),
        backends=backends,
        cumulative=tuple(cumulative),
        timeouts=rule.timeouts,
        retry=rule.retry,
        backend_names=tuple(b.ref.name for b in rule.backend_refs),
    )


def _compile_filters(filters: tuple[m.RouteFilter, ...], resolver: Resolver, ns: str) -> FilterSet:
    mirrors = []
    unsupported = None
    for f in filters:
        if f.mirror is not None:
            target = resolver.resolve(f.mirror.backend, from_kind="HTTPRoute", from_ns=ns)
            # An unresolvable mirror is skipped: the spec never lets a mirror fail the request.
            if not isinstance(target, InvalidTarget):
                mirrors.append(
                    MirrorTarget(
                        target=target,
                        numerator=f.mirror.numerator,
                        denominator=f.mirror.denominator,
                    )
                )
        elif f.extension is not None:
            unsupported = f"ExtensionRef {f.extension.kind}/{f.extension.name} is not supported"
    by_type = {f.type: f for f in filters}
    empty = m.RouteFilter(type="")
    return FilterSet(
        request_headers=by_type.get("RequestHeaderModifier", empty).request_headers,
        response_headers=by_type.get("ResponseHeaderModifier", empty).response_headers,
        redirect=by_type.get("RequestRedirect", empty).redirect,
        rewrite=by_type.get("URLRewrite", empty).rewrite,
        cors=by_type.get("CORS", empty).cors,
        mirrors=tuple(mirrors),
        unsupported=unsupported,
    )
