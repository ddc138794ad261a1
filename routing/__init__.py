"""Pure routing decisions for Sluice: config model and parsing, matching, splits.

No I/O, no asyncio, no clock, no aiohttp: ``gateway/`` feeds values in and performs the
decisions that come out (see STYLE.md §A).
"""

from routing.backends import Endpoint, InvalidTarget, PoolTarget, ServiceTarget, Target
from routing.config import RawDocument, parse_config
from routing.errors import (
    AdmissionRejectedError,
    ConfigError,
    ConfigIssue,
    InvalidBackendError,
    ModelNotFoundError,
    NoEligibleEndpointError,
    NoRouteMatchedError,
    SluiceError,
)
from routing.matching import RequestFacts, match_request
from routing.table import CompiledRule, MatchEntry, RoutingTable, build_table

__all__ = [
    "AdmissionRejectedError",
    "CompiledRule",
    "ConfigError",
    "ConfigIssue",
    "Endpoint",
    "InvalidBackendError",
    "InvalidTarget",
    "MatchEntry",
    "ModelNotFoundError",
    "NoEligibleEndpointError",
    "NoRouteMatchedError",
    "PoolTarget",
    "RawDocument",
    "RequestFacts",
    "RoutingTable",
    "ServiceTarget",
    "SluiceError",
    "Target",
    "build_table",
    "match_request",
    "parse_config",
]
