"""`python -m order_api`: serve the API with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import os
import sys

import pydantic
import uvicorn

from order_api import settings as settings_module


def main() -> None:
    try:
        settings_module.get_settings()  # fail fast, before binding, on bad configuration
    except pydantic.ValidationError as exc:
        sys.exit(
            f"order-api: refusing to start, the configuration is invalid:\n"
            f"{settings_module.describe(exc)}"
        )
    workers = int(os.environ.get("API_WORKERS", "1"))
    uvicorn.run(
        # One process per container is the norm; API_WORKERS > 1 shares the port on one host.
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
