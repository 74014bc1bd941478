"""ElasticMQ, the local SQS: resolved from Maven Central with a generated pom (it is published
as a library, not a runnable bundle), given a class-data archive for faster start-up, configured
with HOCON and run on the JVM."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from order_devtools.engines.engine_process import LOOPBACK_HOST, EngineProcess, answers_http
from order_devtools.engines.install import (
    install_lock,
    is_installed,
    progress,
    require_tool,
    run_checked,
    staging_dir_for,
    versioned_install_dir,
)

logger = logging.getLogger(__name__)

ELASTICMQ_VERSION = "1.7.1"
ELASTICMQ_MAIN_CLASS = "org.elasticmq.server.Main"
# ElasticMQ builds queue ARNs from these; any region works for clients on a custom endpoint.
SQS_REGION = "us-east-1"
SQS_ACCOUNT_ID = "000000000000"

# On the 2-core box G1 and SerialGC measured the same within noise (start-up and throughput);
# SerialGC runs no concurrent GC threads beside the clients. C1-only compilation
# (-XX:TieredStopAtLevel=1) is left out: benchmarks need the C2 peak. The class-data archive is
# what shortens start-up.
COMMON_JVM_OPTIONS: tuple[str, ...] = ("-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError")
# ElasticMQ keeps every message live until it is deleted, and under an accept burst nobody
# deletes for a while. A heap committed up front with a fixed young generation, survivors
# promoted at once, avoids full collections that stop the queue (docs/performance.md).
ELASTICMQ_JVM_OPTIONS: tuple[str, ...] = (
    "-Xms2g",
    "-Xmx2g",
    "-Xmn128m",
    "-XX:MaxTenuringThreshold=0",
)

CLASS_ARCHIVE_NAME = "app-cds.jsa"


@dataclasses.dataclass(frozen=True)
class MavenArtifact:
    group_id: str
    artifact_id: str
    version: str


@dataclasses.dataclass(frozen=True)
class EngineDistribution:
    """ElasticMQ as Maven coordinates plus where its resolved jars live in the cache."""

    name: str
    artifact: MavenArtifact

    @property
    def install_dir(self) -> Path:
        return versioned_install_dir(self.name, self.artifact.version)

    @property
    def lib_dir(self) -> Path:
        return self.install_dir / "lib"


ELASTICMQ = EngineDistribution(
    name="elasticmq",
    artifact=MavenArtifact("org.elasticmq", "elasticmq-server_2.13", ELASTICMQ_VERSION),
)


def _pom_for(artifact: MavenArtifact) -> str:
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>order-pipeline.local</groupId>
  <artifactId>resolve-{artifact.artifact_id.lower()}</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>{artifact.group_id}</groupId>
      <artifactId>{artifact.artifact_id}</artifactId>
      <version>{artifact.version}</version>
    </dependency>
  </dependencies>
</project>
"""


def _install_maven(distribution: EngineDistribution) -> None:
    """Resolve the engine's jars into its cache dir unless a complete earlier resolve is there."""
    install_dir, artifact = distribution.install_dir, distribution.artifact
    if is_installed(install_dir, artifact):
        return
    with install_lock(distribution.name):
        if is_installed(install_dir, artifact):  # another process finished while we waited
            return
        progress(
            f"resolving {artifact.group_id}:{artifact.artifact_id}:{artifact.version} into "
            f"{install_dir} (first run only)"
        )
        started = time.monotonic()
        with staging_dir_for(install_dir, artifact) as staging_dir:
            (staging_dir / "pom.xml").write_text(_pom_for(artifact))
            resolve_command = [
                require_tool("mvn"),
                "-q",
                "-B",
                "-f",
                str(staging_dir / "pom.xml"),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging_dir / 'lib'}",
            ]
            run_checked(resolve_command, cwd=staging_dir, what=f"resolving {distribution.name}")
            if not any((staging_dir / "lib").glob("*.jar")):
                raise RuntimeError(f"resolving {distribution.name} produced no jars")
        progress(f"{distribution.name} ready in {time.monotonic() - started:.1f}s")


def _class_archive(distribution: EngineDistribution) -> Path:
    return distribution.install_dir / CLASS_ARCHIVE_NAME


def _class_archive_options(distribution: EngineDistribution) -> list[str]:
    archive = _class_archive(distribution)
    return [f"-XX:SharedArchiveFile={archive}"] if archive.exists() else []


def install() -> None:
    """Resolve ElasticMQ's jars into the cache; cheap when they are already there."""
    _install_maven(ELASTICMQ)


def ensure_class_archive() -> None:
    """Record the class-data archive unless an earlier run did."""
    if not _class_archive(ELASTICMQ).exists():
        _record_class_archive()


def _record_class_archive() -> None:
    """Boot ElasticMQ once with -XX:ArchiveClassesAtExit to record an AppCDS archive.

    Loading the engine classes from that archive instead of ~100 jars cuts JVM start-up by
    roughly 40% on the 2-core box. The archive embeds the classpath, so it is recorded from the
    final install dir; a JVM that finds it stale ignores it with a warning and starts normally.
    """
    progress("recording a class-data archive for faster ElasticMQ start-up (first run only)")
    started = time.monotonic()
    archive = _class_archive(ELASTICMQ)
    partial = archive.with_name(f"{CLASS_ARCHIVE_NAME}.{os.getpid()}.partial")
    recording = [f"-XX:ArchiveClassesAtExit={partial}", "-Xlog:cds=off"]
    with tempfile.TemporaryDirectory(prefix="engines-cds-") as scratch:
        sqs = elasticmq_process(Path(scratch), port=0, persistent=True, extra_jvm_options=recording)
        try:
            sqs.start()
        except RuntimeError as error:
            logger.warning("recording the class-data archive failed; starting without: %s", error)
        finally:
            sqs.stop()
    if partial.exists():
        partial.replace(archive)
    progress(f"class-data archive recorded in {time.monotonic() - started:.1f}s")


def _sqs_answers(host: str, port: int) -> bool:
    return answers_http(host, port, "GET", "/?Action=ListQueues")


def _hocon_string(value: str) -> str:
    return json.dumps(value)


def elasticmq_config(*, port: int, data_dir: Path | None, host: str = LOOPBACK_HOST) -> str:
    """HOCON for ElasticMQ; queues come from CreateQueue calls, not from this file."""
    if data_dir is None:
        storage = "messages-storage { enabled = false }"
    else:
        database = f"jdbc:h2:file:{data_dir.resolve() / 'elasticmq'};WRITE_DELAY=0"
        # The SQL store keeps queue metadata (attributes, redrive policy) as well as messages;
        # ElasticMQ uses the file-based queues-storage only when the SQL store is off.
        storage = (
            "messages-storage {\n"
            "  enabled = true\n"
            '  driver-class = "org.h2.Driver"\n'
            f"  uri = {_hocon_string(database)}\n"
            "  prune-data-on-init = false\n"
            "}"
        )
    return f"""include classpath("application.conf")

node-address {{
  protocol = "http"
  host = {_hocon_string(host)}
  port = {port}
  context-path = ""
}}
rest-sqs {{
  enabled = true
  bind-port = {port}
  bind-hostname = {_hocon_string(host)}
  sqs-limits = strict
}}
generate-node-address = false
queues-storage {{ enabled = false }}
{storage}
aws {{
  region = {_hocon_string(SQS_REGION)}
  accountId = {_hocon_string(SQS_ACCOUNT_ID)}
}}
# Pekko sizes this pool for at least 8 threads; on a small machine shared with the services each
# request then wakes several of them. One thread per two cores cut ElasticMQ's CPU per call by
# about 30% at 300-2,000 SendMessageBatch calls/s on 2 cores, p99 unchanged.
pekko.actor.default-dispatcher.fork-join-executor {{
  parallelism-min = 1
  parallelism-factor = 0.5
}}
"""


def elasticmq_process(
    state_dir: Path,
    *,
    port: int,
    persistent: bool,
    extra_jvm_options: Sequence[str] = (),
    host: str = LOOPBACK_HOST,
) -> EngineProcess:
    work_dir = state_dir / "elasticmq"
    config_path = work_dir / "elasticmq.conf"

    def build_command(host: str, bound_port: int) -> list[str]:
        data_dir = work_dir if persistent else None
        config_path.write_text(elasticmq_config(port=bound_port, data_dir=data_dir, host=host))
        return [
            require_tool("java"),
            *COMMON_JVM_OPTIONS,
            *ELASTICMQ_JVM_OPTIONS,
            *(extra_jvm_options or _class_archive_options(ELASTICMQ)),
            f"-Dconfig.file={config_path}",
            "-cp",
            f"{ELASTICMQ.lib_dir}/*",
            ELASTICMQ_MAIN_CLASS,
        ]

    return EngineProcess(
        name="elasticmq",
        port=port,
        build_command=build_command,
        answers=_sqs_answers,
        log_path=state_dir / "elasticmq.log",
        work_dir=work_dir,
        host=host,
    )
