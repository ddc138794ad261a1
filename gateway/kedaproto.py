"""The protobuf messages of KEDA's external scaler contract (``externalscaler.proto``),
encoded and decoded by hand: five small messages do not justify a protoc build step.

    message ScaledObjectRef { string name = 1; string namespace = 2;
                              map<string, string> scalerMetadata = 3; }
    message IsActiveResponse { bool result = 1; }
    message GetMetricSpecResponse { repeated MetricSpec metricSpecs = 1; }
    message MetricSpec { string metricName = 1; int64 targetSize = 2; double targetSizeFloat = 3; }
    message GetMetricsRequest { ScaledObjectRef scaledObjectRef = 1; string metricName = 2; }
    message GetMetricsResponse { repeated MetricValue metricValues = 1; }
    message MetricValue { string metricName = 1; int64 metricValue = 2;
                          double metricValueFloat = 3; }
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "MetricSpec",
    "MetricValue",
    "ScaledObjectRef",
    "decode_bool_response",
    "decode_metric_specs",
    "decode_metric_values",
    "decode_metrics_request",
    "decode_ref",
    "encode_bool_response",
    "encode_metric_specs",
    "encode_metric_values",
    "encode_metrics_request",
    "encode_ref",
]

_VARINT, _FIXED64, _BYTES = 0, 1, 2


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaledObjectRef:
    name: str = ""
    namespace: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricSpec:
    name: str
    target: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricValue:
    name: str
    value: float


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: two's complement, ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _key(number, _BYTES) + _varint(len(data)) + data


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field of a message."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(data, pos)
            yield number, wire, value
        elif wire == _FIXED64:
            yield number, wire, data[pos : pos + 8]
            pos += 8
        elif wire == _BYTES:
            size, pos = _read_varint(data, pos)
            yield number, wire, data[pos : pos + size]
            pos += size
        elif wire == 5:  # fixed32
            yield number, wire, data[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def encode_ref(ref: ScaledObjectRef) -> bytes:
    out = _bytes_field(1, ref.name.encode()) + _bytes_field(2, ref.namespace.encode())
    for key, value in ref.metadata.items():
        out += _bytes_field(3, _bytes_field(1, key.encode()) + _bytes_field(2, value.encode()))
    return out


def decode_ref(data: bytes) -> ScaledObjectRef:
    name = namespace = ""
    metadata: dict[str, str] = {}
    for number, _, value in _fields(data):
        if not isinstance(value, bytes):
            continue
        if number == 1:
            name = value.decode()
        elif number == 2:
            namespace = value.decode()
        elif number == 3:
            entry = {n: v for n, _, v in _fields(value) if isinstance(v, bytes)}
            metadata[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
    return ScaledObjectRef(name=name, namespace=namespace, metadata=metadata)


def encode_metrics_request(ref: ScaledObjectRef, metric: str) -> bytes:
    return _bytes_field(1, encode_ref(ref)) + _bytes_field(2, metric.encode())


def decode_metrics_request(data: bytes) -> tuple[ScaledObjectRef, str]:
    ref, metric = ScaledObjectRef(), ""
    for number, _, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            ref = decode_ref(value)
        elif number == 2 and isinstance(value, bytes):
            metric = value.decode()
    return ref, metric


def encode_bool_response(result: bool) -> bytes:
    return _key(1, _VARINT) + _varint(int(result)) if result else b""


def decode_bool_response(data: bytes) -> bool:
    return any(n == 1 and v == 1 for n, _, v in _fields(data))


def _metric(name: str, value: float) -> bytes:
    return (
        _bytes_field(1, name.encode())
        + _key(2, _VARINT)
        + _varint(round(value))
        + _key(3, _FIXED64)
        + struct.pack("<d", value)
    )


def _decode_metric(data: bytes) -> tuple[str, float]:
    name, value = "", 0.0
    for number, wire, raw in _fields(data):
        if number == 1 and isinstance(raw, bytes):
            name = raw.decode()
        elif number == 2 and wire == _VARINT and isinstance(raw, int):
            value = float(raw)
        elif number == 3 and isinstance(raw, bytes):
            value = struct.unpack("<d", raw)[0]
    return name, value


def encode_metric_specs(specs: list[MetricSpec]) -> bytes:
    return b"".join(_bytes_field(1, _metric(s.name, s.target)) for s in specs)


def decode_metric_specs(data: bytes) -> list[MetricSpec]:
    return [
        MetricSpec(name=n, target=v)
        for n, v in (_decode_metric(raw) for _, _, raw in _fields(data) if isinstance(raw, bytes))
    ]


def encode_metric_values(values: list[MetricValue]) -> bytes:
    return b"".join(_bytes_field(1, _metric(v.name, v.value)) for v in values)


def decode_metric_values(data: bytes) -> list[MetricValue]:
    return [
        MetricValue(name=n, value=v)
        for n, v in (_decode_metric(raw) for _, _, raw in _fields(data) if isinstance(raw, bytes))
    ]
