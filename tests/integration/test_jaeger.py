"""The local Jaeger takes spans over OTLP/HTTP, returns them from its query API and listens on
loopback only.

Real Jaeger process started by the session's `jaeger` fixture; the span is an OTLP/JSON export
request, as any OpenTelemetry SDK's HTTP exporter sends it (JSON instead of protobuf).
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from order_devtools import jaeger as local_jaeger
from order_devtools import processes
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


def _descendant(parent: psutil.Process, matches: str) -> psutil.Process | None:
    found = [p for p in parent.children(recursive=True) if matches in " ".join(p.cmdline())]
    assert len(found) <= 1, found
    return found[0] if found else None


@pytest.mark.parametrize("tracing", [True, False], ids=["TRACING=1", "without-TRACING"])
def test_make_run_sends_the_services_traces_to_its_jaeger_only_when_asked(
    tracing: bool, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "TRACING"}
    env["API_PORT"] = str(processes.free_port())
    if tracing:
        env["TRACING"] = "1"
    # What `make run` runs, from a scratch directory: its state goes to ./.run there.
    run = subprocess.Popen(
        [sys.executable, "-m", "order_devtools.run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert run.stdout is not None
        announcement: list[str] = []
        for line in run.stdout:
            announcement.append(line)
            if line.startswith("Try it:"):
                break
        text = "".join(announcement)
        assert "order-pipeline is running" in text, text

        parent = psutil.Process(run.pid)
        jaeger_process = _descendant(parent, "jaeger --config")
        services = {
            local_jaeger.API_SERVICE_NAME: _descendant(parent, "-m order_api"),
            local_jaeger.PROCESSOR_SERVICE_NAME: _descendant(parent, "-m order_processor"),
        }
        service_envs = {}
        for name, service in services.items():
            assert service is not None, name
            service_envs[name] = service.environ()
        otlp = re.search(r"OTLP/HTTP\s+(http://127\.0\.0\.1:\d+)", text)
        query = re.search(r"Jaeger query\s+(http://127\.0\.0\.1:\d+)/api/traces", text)
        if tracing:
            assert jaeger_process is not None
            assert otlp is not None, text
            assert query is not None, text
            assert httpx.get(f"{query[1]}/api/services", timeout=5).status_code == 200
            for name, service_env in service_envs.items():
                assert service_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == otlp[1]
                assert service_env["OTEL_SERVICE_NAME"] == name
        else:
            assert jaeger_process is None
            assert otlp is None, text
            assert query is None, text
            for service_env in service_envs.values():
                assert not [k for k in service_env if k.startswith("OTEL_")], service_env
    finally:
        run.send_signal(signal.SIGTERM)
        exit_code = run.wait(timeout=60)
    assert exit_code == 0
    assert jaeger_process is None or not jaeger_process.is_running()
