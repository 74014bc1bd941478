"""`python -m order_processor`: consume the orders queue until SIGTERM, then exit 0."""

from __future__ import annotations

import os

import uvloop

from order_common import logs
from order_processor import service
from order_processor import settings as settings_module


def main() -> None:
    logs.configure_logging(component="order-processor", level=os.environ.get("LOG_LEVEL", "INFO"))
    uvloop.run(service.run(settings_module.get_settings()))


if __name__ == "__main__":
    main()
