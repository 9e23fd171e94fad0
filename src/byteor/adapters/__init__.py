"""Transport adapters: sources and sinks for the brokers operators run, bound by URI.

One module per transport (:mod:`.kafka`, :mod:`.nats`, :mod:`.redis`, :mod:`.rabbitmq_stream`,
:mod:`.mqtt`, :mod:`.grpc`, :mod:`.postgres`, :mod:`.s3`, :mod:`.http`, :mod:`.websocket`); each imports
its client library only when a binding uses it, and without it fails naming the extra to install
(``pip install 'byteor[kafka]'``). :func:`open_source` and :func:`open_sink` turn a URI
(``scheme://...``, ``-``, ``file:PATH?format=...``) into a
:class:`~byteor.edges.Source` or :class:`~byteor.edges.Sink`; :data:`ADAPTERS` is the registry
``byteor capabilities`` reports. See docs/adapters.md.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Any

from .._errors import UsageError
from ..edges import INPUT_FORMATS, OUTPUT_FORMATS, FileSink, FileSource, Sink, Source
from ._uri import Endpoint, parse_uri, redact_uri

__all__ = ["ADAPTERS", "AdapterInfo", "Endpoint", "available_adapters", "open_sink", "open_source", "parse_uri",
           "redact_uri"]


@dataclass(frozen=True)
class AdapterInfo:
    """One transport: its URI scheme, module, the extra that installs its client, the client's
    distribution and import names, and its source and sink classes."""

    scheme: str
    module: str
    extra: str
    client: str
    import_name: str
    source: str
    sink: str


ADAPTERS: tuple[AdapterInfo, ...] = (
    AdapterInfo("kafka", "kafka", "kafka", "confluent-kafka", "confluent_kafka", "KafkaSource", "KafkaSink"),
    AdapterInfo("nats", "nats", "nats", "nats-py", "nats", "NatsSource", "NatsSink"),
    AdapterInfo("redis", "redis", "redis", "redis", "redis", "RedisSource", "RedisSink"),
    AdapterInfo("rabbitmq-stream", "rabbitmq_stream", "rabbitmq", "rstream", "rstream", "RabbitSource",
                "RabbitSink"),
    AdapterInfo("mqtt", "mqtt", "mqtt", "paho-mqtt", "paho.mqtt", "MqttSource", "MqttSink"),
    AdapterInfo("grpc", "grpc", "grpc", "grpcio", "grpc", "GrpcSource", "GrpcSink"),
    AdapterInfo("postgresql", "postgres", "postgres", "psycopg", "psycopg", "PostgresSource", "PostgresSink"),
    AdapterInfo("s3", "s3", "s3", "boto3", "boto3", "S3Source", "S3Sink"),
    AdapterInfo("http", "http", "http", "uvicorn", "uvicorn", "HttpSource", "HttpSink"),
    AdapterInfo("https", "http", "http", "httpx", "httpx", "HttpSource", "HttpSink"),
    AdapterInfo("ws", "websocket", "websocket", "websockets", "websockets", "WsSource", "WsSink"),
)
_BY_SCHEME = {a.scheme: a for a in ADAPTERS}


def available_adapters() -> list[dict[str, Any]]:
    """Every adapter with its extra and whether (and which version of) its client is installed."""
    out: list[dict[str, Any]] = []
    for a in ADAPTERS:
        try:
            installed = importlib.util.find_spec(a.import_name.split(".")[0]) is not None
        except (ImportError, ValueError):
            installed = False
        version = None
        if installed:
            try:
                version = importlib.metadata.version(a.client)
            except importlib.metadata.PackageNotFoundError:
                version = None
        out.append({"name": a.scheme, "uri": f"{a.scheme}://", "extra": a.extra, "client": a.client,
                    "installed": installed, "version": version})
    return out


def _adapter_class(ep: Endpoint, attr: str) -> Any:
    info = _BY_SCHEME[ep.scheme]
    mod = importlib.import_module(f"{__name__}.{info.module}")
    return getattr(mod, getattr(info, attr))


def open_source(uri: str | Endpoint, *, label: str = "--ingress", input_format: str = "lines") -> Source:
    """A source for an ingress binding (nothing connects until the session opens it)."""
    ep = uri if isinstance(uri, Endpoint) else parse_uri(uri, label)
    if ep.scheme == "-":
        return FileSource("-", input_format, label=label)
    if ep.scheme == "file":
        _only_format(ep)
        fmt = ep.params.get("format", input_format)
        if fmt not in INPUT_FORMATS:
            raise UsageError(f"{label} {ep.display}: format must be one of {'|'.join(INPUT_FORMATS)}, got {fmt!r}")
        return FileSource(ep.name, fmt, label=label)
    src: Source = _adapter_class(ep, "source")(ep)
    return src


def open_sink(uri: str | Endpoint, *, label: str = "--egress", output_format: str = "hex") -> Sink:
    """A sink for an egress binding."""
    ep = uri if isinstance(uri, Endpoint) else parse_uri(uri, label)
    if ep.scheme == "-":
        return FileSink("-", output_format, label=label)
    if ep.scheme == "file":
        _only_format(ep)
        fmt = ep.params.get("format", output_format)
        if fmt not in OUTPUT_FORMATS:
            raise UsageError(f"{label} {ep.display}: format must be one of {'|'.join(OUTPUT_FORMATS)}, got {fmt!r}")
        return FileSink(ep.name, fmt, label=label)
    sink: Sink = _adapter_class(ep, "sink")(ep)
    return sink


def _only_format(ep: Endpoint) -> None:
    unknown = sorted(set(ep.params) - {"format"})
    if unknown:
        raise UsageError(f"{ep.label} {ep.display}: unknown parameter {unknown[0]!r} for file: (known: format)")
