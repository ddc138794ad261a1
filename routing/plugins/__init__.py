"""Filters, scorers and pickers of the picker pipeline; ``registry`` names them for config."""
