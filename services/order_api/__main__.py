"""`python -m order_api`: serve the API with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import os

import uvicorn

from order_api import app as app_module
from order_api import settings as settings_module
from order_common import logs


def main() -> None:
    settings = settings_module.get_settings()
    logs.configure_logging(component="order-api", level=os.environ.get("LOG_LEVEL", "INFO"))
    uvicorn.run(
        app_module.create_app(settings),
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
