"""`make run`: the whole pipeline on this machine, in the foreground.

Starts the local engines, creates the queue + DLQ and the tables, seeds a demo catalog, starts
the API and the processor, prints where to find them, and on Ctrl-C or SIGTERM stops everything
it started. State lives in `.run/` so a re-run finds its queue, tables and stock again.

With TRACING=1 it also starts Jaeger (traces in memory, gone when it stops) and points both
services' OpenTelemetry exporters at it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from order_devtools import engines, jaeger, local, provision

STATE_DIR = Path(".run").resolve()


def tracing_requested() -> bool:
    return os.environ.get("TRACING", "").strip().lower() in {"1", "true", "yes", "on"}


def main() -> int:
    api_port = int(os.environ.get("API_PORT", "8000"))
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    engines.ensure_installed()
    tracing = tracing_requested()
    if tracing:
        jaeger.ensure_jaeger()
    with contextlib.ExitStack() as stack:
        running = stack.enter_context(
            engines.running_engines(
                STATE_DIR / "engines",
                sqs_port=int(os.environ.get("SQS_PORT", "0")),
                dynamodb_port=int(os.environ.get("DYNAMODB_PORT", "0")),
                persistent=True,
            )
        )
        traces = (
            stack.enter_context(jaeger.running_jaeger(STATE_DIR / "jaeger")) if tracing else None
        )
        pipeline = local.LocalPipeline(
            sqs_endpoint=running.sqs_endpoint, dynamodb_endpoint=running.dynamodb_endpoint
        )
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        provision.provision(pipeline.aws_settings())
        logs = STATE_DIR / "logs"
        api_tracing = traces.otlp_env(jaeger.API_SERVICE_NAME) if traces else {}
        processor_tracing = traces.otlp_env(jaeger.PROCESSOR_SERVICE_NAME) if traces else {}
        api = local.api_process(pipeline, api_port, logs, API_HOST="127.0.0.1", **api_tracing)
        processor = local.processor_process(pipeline, local.free_port(), logs, **processor_tracing)
        try:
            api.start()
            processor.start()
            _announce(api_port, running, logs, traces)
            while not stop.is_set():
                for service in (api, processor):
                    if service.process is not None and service.process.poll() is not None:
                        print(f"{service.module} exited:\n{service.log_tail()}", file=sys.stderr)
                        return 1
                stop.wait(1.0)
        finally:
            print("stopping...", file=sys.stderr)
            processor.stop()
            api.stop()
    print("stopped: nothing left running", file=sys.stderr)
    return 0


def _announce(
    api_port: int, running: engines.Engines, logs: Path, traces: jaeger.RunningJaeger | None
) -> None:
    base = f"http://127.0.0.1:{api_port}"
    tracing = (
        f"""
  Jaeger query   {traces.query_url}/api/traces?service={jaeger.API_SERVICE_NAME}
  OTLP/HTTP      {traces.otlp_endpoint}  (traces in memory; Jaeger log {traces.log_path})"""
        if traces
        else ""
    )
    print(
        f"""
order-pipeline is running (Ctrl-C stops everything)

  API            {base}
  API docs       {base}/docs
  metrics        {base}/metrics
  demo client    client_id=demo  client_secret=demo-secret
  SQS (ElasticMQ)       {running.sqs_endpoint}
  DynamoDB (Dynoxide)   {running.dynamodb_endpoint}{tracing}
  logs           {logs}/

Try it:
  TOKEN=$(curl -s {base}/v1/auth/token -H 'Content-Type: application/json' \\
      -d '{{"client_id":"demo","client_secret":"demo-secret"}}' \\
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -si {base}/v1/orders -H "Authorization: Bearer $TOKEN" \\
      -H 'Content-Type: application/json' -d '{{"customer_id":"c-1","currency":"USD",
      "items":[{{"sku":"SKU-MUG","quantity":2}}],"payment_token":"tok_visa"}}'
  curl -s "<status_url from the answer>"
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
