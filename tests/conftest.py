"""Settings for every test. Hypothesis' per-example deadline (200 ms) is a timing assertion,
and this project measures speed in benchmarks, not in tests: on a busy 2-core machine an
example that happens to be slow (a first import, a GC pause) would fail a correct property.
The properties run with no deadline; their example counts still bound their time."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("sluice", deadline=None)
settings.load_profile("sluice")
