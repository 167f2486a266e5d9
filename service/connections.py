"""uvicorn's HTTP protocol with a deadline and a size bound on every request's head (request line and
headers).

uvicorn closes a keep-alive connection that stays idle, but not one that sends its head slowly or not at
all: any byte cancels its idle timer, and a new connection has none. Each such client holds one of
`max_connections` for as long as it likes, and a few hundred of them make uvicorn answer everyone else
503. Here a request's head must be complete within `header_timeout_s` of the connection opening or of
the previous response, however it trickles in; otherwise the connection is closed, as nginx's
`client_header_timeout` does. The body has its own deadline (`body_timeout_s`, service/middleware.py).

Nor does httptools bound a head's size: it keeps an unterminated header line in memory however long it
grows (six clients sending 64 MiB each cost the server 301 MiB). Here at most `max_head_bytes` of a head
are ever handed to the parser: a head not complete by then is answered 431 (the service's JSON error
shape, `head_too_large`) and the connection closed. The close lingers as nginx's does: the server stops
writing, then drops what still arrives for up to `LINGER_S` or `LINGER_BYTES`, so a client still sending
its head reads the answer instead of a reset, and one that never stops cannot hold the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.errors import HeadTooLarge, answer, count_rejected, error_body
from service.metrics import Metrics

logger = logging.getLogger("service.access")
LINGER_S = 2.0  # after a 431: how long what still arrives is read and dropped before the close ...
LINGER_BYTES = 1024 * 1024  # ... and how much of it


def head_deadline_protocol(
    timeout_s: float, max_head_bytes: int, metrics: Metrics | None = None
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol (what `http="auto"` picks) closing connections whose head is late,
    and answering 431 to heads over `max_head_bytes`."""

    class HeadDeadlineProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None
        _reading_head = True  # the bytes coming are a request's head (until its headers are complete)
        _head_bytes = 0  # of the head being read, handed to the parser so far
        _dropped: int | None = None  # after a 431: bytes read and dropped while the close lingers

        # uvicorn narrows the transport type the same way (and ignores the override there too)
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_head()

        def data_received(self, data: bytes) -> None:
            if self._dropped is not None:
                self._dropped += len(data)
                if self._dropped > LINGER_BYTES:
                    self.transport.close()
                return
            # A head's bytes go to the parser only up to the bound; the rest of the chunk after it.
            while data and not self.transport.is_closing():
                if not self._reading_head:
                    super().data_received(data)
                    return
                piece, data = (
                    data[: max_head_bytes - self._head_bytes],
                    data[max_head_bytes - self._head_bytes :],
                )
                self._head_bytes += len(piece)
                super().data_received(piece)
                if self._reading_head and self._head_bytes >= max_head_bytes:
                    self._refuse_head()
                    self.data_received(data)  # dropped
                    return

        def on_headers_complete(self) -> None:
            self._reading_head = False
            self._stop_waiting()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._reading_head, self._head_bytes = True, 0  # a pipelined request's head may follow

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

        def _refuse_head(self) -> None:
            """431 in the service's error shape, then a lingering close: the rest is read and dropped."""
            self._stop_waiting()
            rid = uuid.uuid4().hex
            verdict = answer(HeadTooLarge(max_head_bytes))
            body = json.dumps(error_body(verdict.code, verdict.message, verdict.detail, rid)).encode()
            headers = {
                **dict((k.decode(), v.decode()) for k, v in self.server_state.default_headers),
                "content-type": "application/json",
                "content-length": str(len(body)),
                **{k.lower(): v for k, v in (verdict.headers or {}).items()},  # connection: close
                "x-request-id": rid,
            }
            head = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())
            self.transport.write(STATUS_LINE[verdict.status] + head + b"\r\n" + body)
            self._dropped = 0
            if self.transport.can_write_eof():
                self.transport.write_eof()  # the answer, then end of stream; reading goes on
                self._head_timer = self.loop.call_later(LINGER_S, self.transport.close)
            else:
                self.transport.close()
            if metrics is not None:
                count_rejected(metrics, verdict.status, verdict.code)
            logger.info(
                "request head refused %d %s",
                verdict.status,
                verdict.code,
                extra={"status": verdict.status, "code": verdict.code, "request_id": rid},
            )

    return HeadDeadlineProtocol
