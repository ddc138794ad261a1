"""The Gateway API status Sluice reports (routing/status.py): the spec's reasons for routes
that do not attach or resolve, listeners that conflict, are invalid or wait for a port,
and nothing for other controllers' objects."""

from __future__ import annotations

from typing import Any

from routing.status import ObjectStatus, desired_statuses
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
    assert "elsewhere" not in routes  # a Gateway Sluice does not serve: not its to report
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


def test_listeners_report_conflicts_bad_certificates_and_unbound_ports() -> None:
    table = table_of(
        _gateway(
            WEB,
            "{name: same-port-tls, port: 80, protocol: HTTPS, hostname: b.example.com, "
            "tls: {certificateRefs: [{name: missing}]}}",
            "{name: udp, port: 53, protocol: UDP}",
        )
    )
    gw = _by_name(desired_statuses(table, unbound_ports={80}), "Gateway")["gw"]
    listeners = {x["name"]: _reasons(x) for x in gw["listeners"]}
    assert listeners["web"]["Programmed"] == ("False", "Pending")  # port 80 unbound here
    assert listeners["same-port-tls"]["ResolvedRefs"] == ("False", "InvalidCertificateRef")
    assert listeners["udp"]["Accepted"] == ("False", "UnsupportedProtocol")
    assert _reasons(gw)["Programmed"] == ("False", "Invalid")
    assert _reasons(gw)["Accepted"] == ("True", "Accepted")


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
    assert desired_statuses(table_of(theirs)) == []
    ours = desired_statuses(table_of(_gateway(WEB)))
    assert [(s.kind, s.name) for s in ours] == [("GatewayClass", "sluice"), ("Gateway", "gw")]
