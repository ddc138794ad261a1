"""Hypothesis settings for the property suite: no example database (nothing written into the
checkout) and no per-example deadline (a slow CI box must not turn into a failure)."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("sluice", database=None, deadline=None)
settings.load_profile("sluice")
