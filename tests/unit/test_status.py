"""The Gateway API status Sluice reports (routing/status.py): the spec's reasons for routes
that do not attach or resolve, listeners that conflict, are invalid or wait for a port,
and nothing for other controllers' objects."""

from __future__ import annotations

from typing import Any

from routing.status import ObjectStatus, desired_statuses, left_out_statuses
from tests.unit.manifests import GATEWAY_CLASS, gateway_doc, route, table_of


def _by_name(statuses: list[ObjectStatus], kind: str) -> dict[str, dict[str, Any]]:
    return {s.name: s.status for s in statuses if s.kind == kind}


def _reasons(entry: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in entry["conditions"]}


def _gateway(*listeners: str) -> str:
    return GATEWAY_CLASS + "---" + gateway_doc(", ".join(listeners))


WEB = "{name: web, port: 80, protocol: HTTP, hostname: a.example.com}"


def test_routes_get_the_reason_they_do_not_attach_or_resolve() -> None:
    table = table_of(
        _gateway(WEB)
        + route("other-ns", "parentRefs: [{name: gw, namespace: default}]\nrules: []",
                namespace="team")
        + route("wrong-host", "parentRefs: [{name: gw}]\nhostnames: [b.example.com]\nrules: []")
        + route("far", "parentRefs: [{name: gw}]\n"
                "rules: [{backendRefs: [{name: svc, namespace: team, port: 80}]}]")
        + route("kind", "parentRefs: [{name: gw}]\n"
                "rules: [{backendRefs: [{group: example.com, kind: Thing, name: t}]}]")
        + route("elsewhere", "parentRefs: [{name: not-ours}]\nrules: []")
    )  # fmt: skip
    routes = _by_name(desired_statuses(table), "HTTPRoute")
    assert routes["elsewhere"]["parents"] == []  # a Gateway this table lacks: no entry
    assert routes["elsewhere"]["keep"][0]["name"] == "not-ours"  # nor is one withdrawn
    [other_ns] = routes["other-ns"]["parents"]
    assert _reasons(other_ns)["Accepted"] == ("False", "NotAllowedByListeners")
    [wrong] = routes["wrong-host"]["parents"]
    assert _reasons(wrong)["Accepted"] == ("False", "NoMatchingListenerHostname")
    [far] = routes["far"]["parents"]
    assert _reasons(far) == {
        "Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", "RefNotPermitted")
    }  # fmt: skip
    [kind] = routes["kind"]["parents"]
    assert _reasons(kind)["ResolvedRefs"] == ("False", "InvalidKind")
    assert far["controllerName"] == "sluice.dev/gateway-controller"
    assert far["parentRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                "name": "gw"}  # fmt: skip


def test_listeners_report_bad_certificates_kinds_and_protocols() -> None:
    table = table_of(
        _gateway(
            "{name: tls, port: 443, protocol: HTTPS, hostname: b.example.com, "
            "tls: {certificateRefs: [{name: missing}]}}",
            "{name: udp, port: 53, protocol: UDP}",
            "{name: grpc, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: GRPCRoute}]}}",
        )
        + route("r", "parentRefs: [{name: gw}]\nrules: []")
    )
    gw = _by_name(desired_statuses(table), "Gateway")["gw"]
    listeners = {x["name"]: x for x in gw["listeners"]}
    assert _reasons(listeners["tls"])["ResolvedRefs"] == ("False", "InvalidCertificateRef")
    assert _reasons(listeners["tls"])["Programmed"] == ("False", "Invalid")
    assert _reasons(listeners["udp"])["Accepted"] == ("False", "UnsupportedProtocol")
    assert listeners["udp"]["supportedKinds"] == []
    assert listeners["udp"]["attachedRoutes"] == 0  # a UDP listener takes no HTTPRoute
    assert _reasons(listeners["grpc"])["ResolvedRefs"] == ("False", "InvalidRouteKinds")
    assert listeners["grpc"]["supportedKinds"] == []
    assert listeners["tls"]["attachedRoutes"] == 1  # attached, though not served
    assert _reasons(gw)["Accepted"] == ("True", "Accepted")
    # a certificate that is there but does not load (the gateway found out)
    bad = desired_statuses(table, bad_secrets={"default/missing"})
    assert _by_name(bad, "Gateway")["gw"]["listeners"][0]["conditions"][1]["status"] == "False"


def test_a_route_with_a_hostname_no_listener_has_still_counts_as_attached() -> None:
    table = table_of(
        _gateway(WEB)
        + route("r", "parentRefs: [{name: gw}]\nhostnames: [b.example.com]\nrules: []")
    )
    statuses = desired_statuses(table)
    [parent] = _by_name(statuses, "HTTPRoute")["r"]["parents"]
    assert _reasons(parent)["Accepted"] == ("False", "NoMatchingListenerHostname")
    assert _by_name(statuses, "Gateway")["gw"]["listeners"][0]["attachedRoutes"] == 1


def test_objects_the_loader_left_out_are_reported_not_accepted() -> None:
    ours = {"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
            "controllerName": "sluice.dev/gateway-controller", "conditions": []}  # fmt: skip
    theirs = {**ours, "controllerName": "istio.io/gateway-controller"}
    left = left_out_statuses(
        {("Gateway", "default", "broken"), ("HTTPRoute", "default", "bad"),
         ("Gateway", "default", "istio"), ("HTTPRoute", "default", "not-ours")},
        gateways=[("default", "gw", "sluice.dev/gateway-controller", 1),  # not left out
                  ("default", "broken", "sluice.dev/gateway-controller", 2),
                  ("default", "istio", "istio.io/gateway-controller", 1)],
        routes=[("default", "bad", 3, {"parents": [ours, theirs]}),
                ("default", "not-ours", 1, {"parents": [theirs]})],
    )  # fmt: skip
    assert [(s.kind, s.name) for s in left] == [("Gateway", "broken"), ("HTTPRoute", "bad")]
    assert _reasons(left[0].status)["Accepted"] == ("False", "Invalid")
    assert left[0].status["conditions"][0]["observedGeneration"] == 2
    [entry] = left[1].status["parents"]  # Sluice's only: the writer keeps the others
    assert _reasons(entry)["Accepted"] == ("False", "UnsupportedValue")


def test_a_routes_entry_for_a_gateway_missing_from_the_table_is_kept() -> None:
    # the Gateway may be left out for an error, or in a namespace this replica does not
    # read: Sluice's entry for it is neither rewritten nor withdrawn
    table = table_of(
        _gateway(WEB) + route("r", "parentRefs: [{name: gw}, {name: gone}]\nrules: []")
    )
    status = _by_name(desired_statuses(table), "HTTPRoute")["r"]
    assert [p["parentRef"]["name"] for p in status["parents"]] == ["gw"]
    assert status["keep"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                               "name": "gone"}]  # fmt: skip


def test_a_listener_that_loses_its_port_to_another_protocol_is_conflicted() -> None:
    secret = """
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: default}
type: kubernetes.io/tls
stringData: {tls.crt: "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n",
             tls.key: "-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n"}
"""
    table = table_of(
        _gateway(
            WEB,
            "{name: tls, port: 80, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}",
            "{name: twin, port: 80, protocol: HTTP, hostname: a.example.com}",
        )
        + secret
    )
    gw = _by_name(desired_statuses(table), "Gateway")["gw"]
    listeners = {x["name"]: _reasons(x) for x in gw["listeners"]}
    assert listeners["tls"]["Conflicted"] == ("True", "ProtocolConflict")
    assert listeners["web"]["Conflicted"] == ("False", "NoConflicts")
    assert listeners["web"]["Programmed"] == ("True", "Programmed")
    assert _reasons(gw)["Programmed"] == ("True", "Programmed")


def test_only_sluices_classes_and_gateways_get_a_status() -> None:
    theirs = _gateway(WEB).replace("sluice.dev/gateway-controller", "istio.io/gateway-controller")
    not_ours = route("r", "parentRefs: [{name: gw}]\nrules: []")
    statuses = desired_statuses(table_of(theirs + not_ours))
    # the route gets no entry of Sluice's (an empty list withdraws any it had)
    assert [(s.kind, s.name, s.status) for s in statuses] == [("HTTPRoute", "r", {"parents": []})]
    ours = desired_statuses(table_of(_gateway(WEB)))
    assert [(s.kind, s.name) for s in ours] == [("GatewayClass", "sluice"), ("Gateway", "gw")]
