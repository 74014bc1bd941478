"""`python -m order_devtools.engines`: both engines on their usual ports (SQS_PORT, default
9324; DYNAMODB_PORT, default 8001) with data in .run/engines, until Ctrl-C (what `make engines`
runs)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from order_devtools.engines.dynoxide import DYNOXIDE_VERSION
from order_devtools.engines.elasticmq import ELASTICMQ_VERSION
from order_devtools.engines.running import ensure_installed, running_engines

logger = logging.getLogger(__name__)


def _repo_state_dir() -> Path:
    repo_root = Path(__file__).resolve().parents[3]
    if not (repo_root / "pyproject.toml").exists():
        repo_root = Path.cwd()
    return repo_root / ".run" / "engines"


def _port_from_env(variable: str, default: int) -> int:
    raw = os.environ.get(variable, "").strip()
    return int(raw) if raw else default


class _StopRequested(Exception):
    pass


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def request_stop(signum: int, frame: object) -> None:
        # Ignore repeats so a second Ctrl-C cannot cut the engines' own shutdown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _StopRequested

    # Installed explicitly: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    ensure_installed()
    state_dir = _repo_state_dir()
    try:
        with running_engines(
            state_dir,
            sqs_port=_port_from_env("SQS_PORT", 9324),
            dynamodb_port=_port_from_env("DYNAMODB_PORT", 8001),
            persistent=True,
        ) as engines:
            print(
                f"SQS (ElasticMQ {ELASTICMQ_VERSION}):     {engines.sqs_endpoint}\n"
                f"DynamoDB (Dynoxide {DYNOXIDE_VERSION}):  {engines.dynamodb_endpoint}\n"
                f"data and logs: {state_dir}\n\n"
                f"export AWS_ENDPOINT_URL_SQS={engines.sqs_endpoint}\n"
                f"export AWS_ENDPOINT_URL_DYNAMODB={engines.dynamodb_endpoint}\n\n"
                "Ctrl-C stops both.",
                flush=True,
            )
            stop_event = threading.Event()
            while not stop_event.wait(1.0):
                for engine in engines.all():
                    if not engine.is_running():
                        logger.error("%s exited on its own; see %s", engine.name, engine.log_path)
                        return 1
    except _StopRequested:
        pass
    return 0
