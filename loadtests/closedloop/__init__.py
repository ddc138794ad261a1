"""Closed-loop autoscaling: a simulated fleet scaled by an autoscaler under a changing load.

    python -m loadtests.closedloop loadtests/scenarios/closed-loop.yaml [--out DIR] [--quick]

Per compared policy: an elastic fleet (`elastic`) behind its own `sluice serve` (`target`),
replayed the same open-loop Poisson trace along a rate profile (`arrivals`, `loadgen`), and a
reconciler (`reconciler`) that, every tick, scales the fleet to what the policy asks for:

- `sluice`: the gateway's own recommendation (`GET /autoscaling/{ns}/{pool}` → desiredReplicas,
  from true demand: queue + in flight + model-server waiting, stable/panic windows, headroom);
- `utilisation`: Kubernetes' HPA algorithm on the replicas' busy fraction or KV usage (`hpa`).

New replicas serve after a start-up delay and only then join the EndpointSlices (and the gateway
reloads); removed ones drain. `analysis` turns the records into SLO misses, replica-seconds and
scale changes; `report` writes report.md, results.json and timeline.png. The scenario format is
documented in `loadtests/scenarios/closed-loop.yaml` (`scenario` parses it).
"""
