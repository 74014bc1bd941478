"""The local Jaeger takes spans over OTLP/HTTP, returns them from its query API and listens on
loopback only.

Real Jaeger process started by the session's `jaeger` fixture; the span is an OTLP/JSON export
request, as any OpenTelemetry SDK's HTTP exporter sends it (JSON instead of protobuf).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from order_devtools import jaeger as local_jaeger
from tests.integration import helpers

pytestmark = pytest.mark.integration

SPAN_KIND_SERVER = 2


def otlp_json_export(
    *, service_name: str, trace_id: str, span_id: str, name: str, attribute: str
) -> dict[str, Any]:
    """One span in an ExportTraceServiceRequest (OTLP/JSON: ids hex, times in ns as strings)."""
    end = time.time_ns()
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service_name}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "tests.integration.test_jaeger"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": name,
                                "kind": SPAN_KIND_SERVER,
                                "startTimeUnixNano": str(end - 25_000_000),
                                "endTimeUnixNano": str(end),
                                "attributes": [
                                    {"key": "probe.marker", "value": {"stringValue": attribute}}
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }


def query(jaeger: local_jaeger.RunningJaeger, path: str, **params: str) -> httpx.Response:
    return httpx.get(f"{jaeger.query_url}{path}", params=params, timeout=5)


def test_a_span_sent_over_otlp_http_is_returned_by_the_query_api(
    jaeger: local_jaeger.RunningJaeger,
) -> None:
    service_name = f"probe-{uuid.uuid4().hex[:8]}"
    trace_id, span_id, marker = secrets.token_hex(16), secrets.token_hex(8), uuid.uuid4().hex
    export = otlp_json_export(
        service_name=service_name,
        trace_id=trace_id,
        span_id=span_id,
        name="GET /probe",
        attribute=marker,
    )

    sent = httpx.post(f"{jaeger.otlp_endpoint}/v1/traces", json=export, timeout=5)
    assert sent.status_code == 200, sent.text

    found = helpers.eventually(
        lambda: query(jaeger, f"/api/traces/{trace_id}"),
        until=lambda response: response.status_code == 200,
        timeout=15,
    )
    (trace,) = found.json()["data"]
    (span,) = trace["spans"]
    assert (span["traceID"], span["spanID"], span["operationName"]) == (
        trace_id,
        span_id,
        "GET /probe",
    )
    assert trace["processes"][span["processID"]]["serviceName"] == service_name
    tags = {tag["key"]: tag["value"] for tag in span["tags"]}
    assert tags["probe.marker"] == marker
    assert tags["span.kind"] == "server"

    # The search the traces of a run are found with: by service, newest first.
    searched = query(jaeger, "/api/traces", service=service_name, lookback="1h").json()["data"]
    assert [t["traceID"] for t in searched] == [trace_id]
    assert service_name in query(jaeger, "/api/services").json()["data"]


# /proc/net/{tcp,udp}* columns: local address (hex ip:port), state, ..., inode.
_TCP_LISTEN = "0A"


def _decode_address(hex_address: str) -> tuple[str, int]:
    hex_ip, hex_port = hex_address.split(":")
    raw = bytes.fromhex(hex_ip)
    if len(raw) == 4:
        ip = ".".join(str(b) for b in reversed(raw))
    else:  # IPv6: four 32-bit words, each in host (little-endian) order
        words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
        ip = ":".join(b"".join(words)[i : i + 2].hex() for i in range(0, 16, 2))
    return ip, int(hex_port, 16)


def bound_sockets(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, ip, port) of every TCP listener and every bound UDP socket `pid` holds."""
    inodes = set()
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(descriptor)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        for row in Path(f"/proc/{pid}/net/{protocol}").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[9] not in inodes:
                continue
            if protocol.startswith("tcp") and fields[3] != _TCP_LISTEN:
                continue
            ip, port = _decode_address(fields[1])
            found.append((protocol, ip, port))
    return found


def test_every_listener_is_on_loopback_at_its_picked_ports(
    jaeger: local_jaeger.RunningJaeger,
) -> None:
    listeners = bound_sockets(jaeger.pid)
    assert listeners, "no listening socket found for the Jaeger process"
    assert all(ip == "127.0.0.1" for _, ip, _ in listeners), listeners
    # The OTLP/HTTP receiver, the query HTTP API and the query gRPC API; nothing else.
    assert len(listeners) == 3, listeners
    ports = {port for _, _, port in listeners}
    assert {httpx.URL(jaeger.otlp_endpoint).port, httpx.URL(jaeger.query_url).port} <= ports


def test_a_port_taken_before_jaeger_binds_it_is_picked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    picks: list[local_jaeger.JaegerPorts] = []
    pick = local_jaeger.JaegerPorts.pick

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]

        def first_pick_taken() -> local_jaeger.JaegerPorts:
            ports = pick()
            if not picks:  # what another process grabbing the port meanwhile looks like
                ports = dataclasses.replace(ports, otlp_http=taken)
            picks.append(ports)
            return ports

        monkeypatch.setattr(local_jaeger.JaegerPorts, "pick", first_pick_taken)
        with local_jaeger.running_jaeger(tmp_path) as running:
            assert len(picks) == 2
            assert httpx.URL(running.otlp_endpoint).port == picks[1].otlp_http != taken
            sent = httpx.post(f"{running.otlp_endpoint}/v1/traces", json={}, timeout=5)
            assert sent.status_code == 200
