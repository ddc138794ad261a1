"""A GPU-free simulated fleet of OpenAI-compatible model servers (placeholder docstring)."""

from .faults import Fault, FaultError, FaultMode
from .fleet import ENGINE_TYPE_LABEL, Fleet
from .replica import Replica, ReplicaStats, RequestRecord
from .spec import (
    ACCELERATOR_SPEED,
    DEFAULT_MODEL,
    Engine,
    EngineProfile,
    FleetSpec,
    ReplicaSpec,
    SpecError,
)
from .tokens import embedding_vector, tokenize

__all__ = [
    "ACCELERATOR_SPEED",
    "DEFAULT_MODEL",
    "ENGINE_TYPE_LABEL",
    "Engine",
    "EngineProfile",
    "Fault",
    "FaultError",
    "FaultMode",
    "Fleet",
    "FleetSpec",
    "Replica",
    "ReplicaSpec",
    "ReplicaStats",
    "RequestRecord",
    "SpecError",
    "embedding_vector",
    "tokenize",
]
