"""uvicorn's HTTP protocol with a deadline on every request's head (request line and headers).

uvicorn closes a keep-alive connection that stays idle, but not one that sends its head slowly or not at
all: any byte cancels its idle timer, and a new connection has none. Each such client holds one of
`max_connections` for as long as it likes, and a few hundred of them make uvicorn answer everyone else
503. Here a request's head must be complete within `header_timeout_s` of the connection opening or of
the previous response, however it trickles in; otherwise the connection is closed, as nginx's
`client_header_timeout` does. The body has its own deadline (`body_timeout_s`, service/middleware.py).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def head_deadline_protocol(timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol (what `http="auto"` picks) closing connections whose head is late."""

    class HeadDeadlineProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        # uvicorn narrows the transport type the same way (and ignores the override there too)
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_head()

        def on_headers_complete(self) -> None:
            self._stop_waiting()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.cycle.response_complete:  # nothing pipelined
                self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def _await_head(self) -> None:
            self._stop_waiting()
            self._head_timer = self.loop.call_later(timeout_s, self.transport.close)

        def _stop_waiting(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

    return HeadDeadlineProtocol
