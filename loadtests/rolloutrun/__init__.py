"""The rollout scenario: a Sluice Rollout under steady sticky load, end to end.

`python -m loadtests.rollout_scenario loadtests/scenarios/rollout.yaml [--quick]` runs each of
the scenario's runs on fresh simulated fleets and a fresh `sluice serve`, and writes a report
folder. Modules, in the order a run uses them:

- `spec`: the scenario's YAML form, parsed strictly;
- `config`: the gateway config (two InferencePools behind one HTTPRoute rule, a Rollout);
- `traffic`: the load generator process (open-loop Poisson, a sticky key per simulated user);
- `run`: one run (fleets, faults, gateway, load, GET /rollouts polls);
- `analysis`: the numbers of a run (timeline, observed share per window);
- `odds`: a Monte Carlo of the gateway's Rollout state machine on the same traffic;
- `report` and `plot`: report.md, results.json and the PNG.
"""
