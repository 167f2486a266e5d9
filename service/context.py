"""The request id of the request being served, shared by the middleware, the logs and error handlers.

The middleware sets it at the start of a request; code below it reads it without passing it through every
call. (Queue and inference timings travel the same way, in engine/timings.py.)
"""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
