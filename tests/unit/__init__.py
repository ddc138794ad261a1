"""Unit tests of routing/: pure calls, table-driven."""
