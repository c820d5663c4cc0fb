"""Server-sent events of ``GET /v1/events`` as a Python iterator."""

from __future__ import annotations

import http.client
import json
import re
import socket
from typing import Iterator, List, Optional

from .errors import MetameshError
from .types import Event

_LAGGED = re.compile(r"lagged:\s*(\d+)")


class EventTimeout(MetameshError, TimeoutError):
    """No line arrived from the event stream within the stream's timeout."""


class EventStream:
    """An open ``/v1/events`` stream. Iterate it for :class:`Event` objects;
    close it (or use ``with``) when done. The iteration ends when the node
    closes the stream (it does at shutdown).

    ``last_id`` is the id of the last event read (pass it as
    ``Client.events(last_event_id=...)`` to resume); ``skipped`` counts the
    events the node reported as skipped because this reader was too slow.
    """

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse):
        self._conn = conn
        self._resp = resp
        self.last_id: Optional[str] = None
        self.skipped = 0
        self.closed = False

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._resp.close()
            finally:
                self._conn.close()

    def __iter__(self) -> Iterator[Event]:
        return self

    def _readline(self) -> Optional[str]:
        try:
            raw = self._resp.readline()
        except socket.timeout:
            raise EventTimeout("no event or keep-alive from the node within the timeout") from None
        except (OSError, http.client.HTTPException, ValueError):
            return None  # connection closed
        if not raw:
            return None
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    def __next__(self) -> Event:
        if self.closed:
            raise StopIteration
        name = "message"
        data: List[str] = []
        event_id: Optional[str] = None
        while True:
            line = self._readline()
            if line is None:
                self.close()
                raise StopIteration
            if line == "":
                if not data:
                    name, event_id = "message", None
                    continue
                if event_id is not None:
                    self.last_id = event_id
                text = "\n".join(data)
                try:
                    payload = json.loads(text)
                except ValueError:
                    payload = {"raw": text}
                if not isinstance(payload, dict):
                    payload = {"value": payload}
                kind = payload.get("type", name) if name == "message" else name
                return Event(type=str(kind), data=payload, id=event_id)
            if line.startswith(":"):
                m = _LAGGED.search(line)
                if m:
                    self.skipped += int(m.group(1))
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = value
            # "retry" and unknown fields are ignored, as the SSE spec says.
