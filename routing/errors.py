"""Errors raised by routing decisions.

Each class carries a stable ``code`` string; ``gateway/errors.py`` maps classes to statuses.

    SluiceError
    ├── ConfigError                 config invalid (carries every ConfigIssue)
    ├── NoRouteMatchedError         no listener/route/rule matched the request  → 404
    ├── InvalidBackendError         the chosen backendRef does not resolve      → 500
    ├── NoEligibleEndpointError     the backend has no ready endpoint           → 503
    ├── ModelNotFoundError          the OpenAI ``model`` is not served here      → 404
    └── AdmissionRejectedError      admission control said no                   → 429/503
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AdmissionRejectedError",
    "ConfigError",
    "ConfigIssue",
    "InvalidBackendError",
    "ModelNotFoundError",
    "NoEligibleEndpointError",
    "NoRouteMatchedError",
    "SluiceError",
]


class SluiceError(Exception):
    """Base of every error Sluice raises on purpose."""

    code = "sluice_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigIssue:
    """One problem in a config: where (file, document, field path) and what."""

    file: str
    document: int
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}: document {self.document}"
        if self.path:
            where += f": {self.path}"
        return f"{where}: {self.severity}: {self.message}"


class ConfigError(SluiceError):
    """The config has at least one error; ``issues`` lists all of them (warnings too)."""

    code = "invalid_config"

    def __init__(self, issues: tuple[ConfigIssue, ...]) -> None:
        errors = [i for i in issues if i.severity == "error"]
        super().__init__(f"{len(errors)} config error(s)")
        self.issues = issues


class NoRouteMatchedError(SluiceError):
    code = "route_not_found"


class InvalidBackendError(SluiceError):
    code = "invalid_backend"


class NoEligibleEndpointError(SluiceError):
    code = "no_healthy_upstream"


class ModelNotFoundError(SluiceError):
    code = "model_not_found"


class AdmissionRejectedError(SluiceError):
    code = "admission_rejected"

    def __init__(self, message: str, *, reason: str, status: int, retry_after_s: float) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.retry_after_s = retry_after_s
