"""JSON logs to stdout, with the request and order being handled attached to every line, and
the trace and span (`trace_id`, `span_id`) of a line logged inside a recorded span."""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import TextIO

from pythonjsonlogger import json as jsonlogger

from order_common import tracing

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
order_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("order_id", default=None)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # An explicit `extra={"order_id": ...}` wins over the context (batch-wide steps).
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        if not hasattr(record, "order_id"):
            record.order_id = order_id_var.get()
        if tracing.enabled:
            ids = tracing.current_ids()
            if ids is not None:  # absent, not null, outside a recorded span
                record.trace_id, record.span_id = ids
        return True


def json_handler(stream: TextIO, *, component: str) -> logging.Handler:
    """One JSON object per line on `stream`, with the context above attached."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(
        jsonlogger.JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(order_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"component": component},
        )
    )
    return handler


def configure_logging(*, component: str, level: str = "INFO") -> None:
    """Route all logging (ours, uvicorn's, botocore's) through one JSON handler on stdout."""
    root = logging.getLogger()
    root.handlers[:] = [json_handler(sys.stdout, component=component)]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Access lines duplicate the request metrics and cost CPU on the hot path.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("aiobotocore").setLevel(logging.WARNING)
