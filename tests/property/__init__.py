"""Property tests of routing/ (hypothesis), with the Gateway API text as the oracle."""
