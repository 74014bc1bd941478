"""`python -m order_api`: serve the API with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys
import tempfile
from collections.abc import Iterator

import pydantic
import uvicorn

from order_api import settings as settings_module
from order_common import exposition


@contextlib.contextmanager
def shared_metrics() -> Iterator[str]:
    """Multiprocess mode for the workers uvicorn starts (they inherit the environment): each
    writes its values to files that every worker's `/metrics` sums, so a scrape sees the whole
    server, not the one worker that answered. The directory must start empty: values left by
    an earlier server would add to this one's. One of our own is removed afterwards."""
    directory = os.environ.get(exposition.MULTIPROCESS_DIR_VARIABLE)
    if directory:
        for stale in pathlib.Path(directory).glob("*.db"):
            stale.unlink()
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="order-api-metrics-") as own:
        os.environ[exposition.MULTIPROCESS_DIR_VARIABLE] = own
        try:
            yield own
        finally:
            del os.environ[exposition.MULTIPROCESS_DIR_VARIABLE]


def main() -> None:
    try:
        settings_module.get_settings()  # fail fast, before binding, on bad configuration
    except pydantic.ValidationError as exc:
        sys.exit(
            f"order-api: refusing to start, the configuration is invalid:\n"
            f"{settings_module.describe(exc)}"
        )
    workers = int(os.environ.get("API_WORKERS", "1"))
    with shared_metrics() if workers > 1 else contextlib.nullcontext():
        uvicorn.run(
            # One process per container is the norm; API_WORKERS > 1 shares the port on one
            # host.
            "order_api.app:create_served_app",
            factory=True,
            workers=workers,
            host=os.environ.get("API_HOST", "127.0.0.1"),
            port=int(os.environ.get("API_PORT", "8000")),
            loop="uvloop",
            http="httptools",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
        )


if __name__ == "__main__":
    main()
