"""Local SQS (ElasticMQ) and DynamoDB (Dynoxide) engines, run as child processes without Docker.

Maven Central carries ElasticMQ as a library, not a runnable bundle, so `ensure_installed`
resolves it with a generated pom into a versioned cache directory outside the repo. Dynoxide is a
native binary built once from crates.io with `cargo install --locked` into the same cache.
`running_engines` starts both bound to 127.0.0.1 only.

Modules: `install` (the cache, locks and staging shared by both installs), `engine_process` (one
engine as a child process), `elasticmq`, `dynoxide`, `running` (both together) and `cli`.
"""

from order_devtools.engines.elasticmq import elasticmq_process
from order_devtools.engines.engine_process import PortTakenError
from order_devtools.engines.running import Engines, ensure_installed, running_engines

__all__ = [
    "Engines",
    "PortTakenError",
    "elasticmq_process",
    "ensure_installed",
    "running_engines",
]
