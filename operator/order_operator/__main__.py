"""`python -m order_operator`: run the OrderPipeline operator against $KUBECONFIG (or in-cluster).

Watches all namespaces unless `--namespace` is given (repeatable). Serves kopf's liveness probe
and Prometheus metrics on their own ports; logs JSON to stdout.
"""

from __future__ import annotations

import argparse
import os

import prometheus_client

from order_operator import handlers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m order_operator", description=__doc__)
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--bind",
        default=os.environ.get("OPERATOR_BIND", "127.0.0.1"),
        help="address of the probe and metrics servers (0.0.0.0 in a pod)",
    )
    parser.add_argument(
        "--liveness-port", type=int, default=int(os.environ.get("OPERATOR_LIVENESS_PORT", "8080"))
    )
    parser.add_argument(
        "--metrics-port", type=int, default=int(os.environ.get("OPERATOR_METRICS_PORT", "9090"))
    )
    args = parser.parse_args(argv)
    prometheus_client.start_http_server(args.metrics_port, addr=args.bind)
    handlers.run(
        namespaces=args.namespace,
        liveness_endpoint=f"http://{args.bind}:{args.liveness_port}/healthz",
    )


if __name__ == "__main__":
    main()
