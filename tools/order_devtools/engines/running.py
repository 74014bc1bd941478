"""Both engines together: installed into the cache (`ensure_installed`) and run for the length
of a block (`running_engines`), as `Engines`."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3

from order_devtools import processes
from order_devtools.engines import dynoxide, elasticmq
from order_devtools.engines.engine_process import EngineProcess, start_together
from order_devtools.engines.install import require_tool

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient


def _local_session() -> boto3.session.Session:
    # The engines accept any credentials and region; boto3 only needs some.
    return boto3.session.Session(
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - the engines' placeholder, not a secret
        region_name="us-east-1",
    )


def ensure_installed() -> None:
    """Resolve ElasticMQ and build Dynoxide into the cache; cheap when they are already there."""
    require_tool("java")
    elasticmq.install()
    dynoxide.install()
    elasticmq.ensure_class_archive()


@dataclasses.dataclass
class Engines:
    sqs: EngineProcess
    dynamodb: EngineProcess

    @property
    def sqs_endpoint(self) -> str:
        return self.sqs.endpoint

    @property
    def dynamodb_endpoint(self) -> str:
        return self.dynamodb.endpoint

    def sqs_client(self) -> SQSClient:
        return _local_session().client("sqs", endpoint_url=self.sqs_endpoint)

    def dynamodb_client(self) -> DynamoDBClient:
        return _local_session().client("dynamodb", endpoint_url=self.dynamodb_endpoint)

    def all(self) -> tuple[EngineProcess, EngineProcess]:
        return (self.sqs, self.dynamodb)

    def start(self) -> None:
        """Start both, booting them in parallel."""
        start_together(self.all())

    def stop(self) -> None:
        for engine in self.all():
            engine.request_stop()
        for engine in self.all():
            engine.stop()


@contextlib.contextmanager
def running_engines(
    state_dir: Path,
    *,
    sqs_port: int = 0,
    dynamodb_port: int = 0,
    persistent: bool = True,
    host: str = processes.LOOPBACK_HOST,
) -> Iterator[Engines]:
    """Both engines on `host` (loopback; the test cluster's bridge address for its real pods)
    for the duration of the block; port 0 picks a free port.

    persistent=True keeps queues, messages and tables under `state_dir` across stop()/start()
    (and across runs with the same dir); persistent=False keeps everything in memory.
    """
    ensure_installed()
    state_dir.mkdir(parents=True, exist_ok=True)
    engines = Engines(
        sqs=elasticmq.elasticmq_process(state_dir, port=sqs_port, persistent=persistent, host=host),
        dynamodb=dynoxide.dynoxide_process(
            state_dir, port=dynamodb_port, persistent=persistent, host=host
        ),
    )
    engines.start()
    try:
        yield engines
    finally:
        engines.stop()
