"""`python -m order_processor`: consume the orders queue until SIGTERM, then exit 0."""

from __future__ import annotations

import os

import pydantic
import uvloop

from order_common import logs, tracing
from order_processor import service
from order_processor import settings as settings_module


def main() -> None:
    logs.configure_logging(component="order-processor", level=os.environ.get("LOG_LEVEL", "INFO"))
    try:
        settings = settings_module.get_settings()
    except pydantic.ValidationError as exc:  # say what to set, not a traceback
        raise SystemExit(f"order-processor: invalid configuration: {exc}") from None
    tracing.configure(default_service_name="order-processor")
    try:
        uvloop.run(service.run(settings))
    finally:
        tracing.shutdown()  # the last spans out before the process exits (nothing when off)


if __name__ == "__main__":
    main()
