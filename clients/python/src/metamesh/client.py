"""`Client`: every route of the metamesh node's local HTTP API (docs/api.md).

Standard library only. Every method raises :class:`~metamesh.errors.ApiError`
(a subclass per status, carrying the API's ``field``) when the node answers
with an error, and :class:`~metamesh.errors.NodeUnreachable` when it cannot
be reached.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import ApiError, InvalidPattern, MetameshError, NodeUnreachable, error_for
from .events import EventStream
from .types import (
    Health,
    Insights,
    Knowledge,
    NodeInfo,
    Pattern,
    PatternPage,
    Peer,
    Recommendation,
    Reputation,
    Stats,
    StoredPattern,
    Submitted,
)

#: Most patterns the node takes in one ``POST /v1/patterns``.
MAX_PATTERNS_PER_POST = 1000
#: Largest request body the node takes, in bytes.
MAX_BODY_BYTES = 1024 * 1024

PatternLike = Union[Mapping[str, Any], Pattern]


def default_data_dir() -> Path:
    """The node's default data directory (``METAMESH_DATA_DIR`` or the per-user one)."""
    env = os.environ.get("METAMESH_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "metamesh"


def _non_finite_field(value: Any, path: str = "") -> Optional[str]:
    """The path of the first NaN/inf number inside ``value``, if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "pattern"
    if isinstance(value, Mapping):
        for k, v in value.items():
            found = _non_finite_field(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _non_finite_field(v, f"{path}[{i}]")
            if found:
                return found
    return None


def _pattern_json(p: PatternLike, index: Optional[int] = None) -> Dict[str, Any]:
    if isinstance(p, Pattern):
        d = p.to_json()
    elif isinstance(p, Mapping):
        d = dict(p)
    elif is_dataclass(p) and not isinstance(p, type):
        raise InvalidPattern(
            "a prototype's dataclass: convert it with metamesh.adapters.from_legion/from_thor",
            "pattern",
        )
    else:
        raise InvalidPattern(f"a pattern must be a mapping, got {type(p).__name__}", "pattern")
    bad = _non_finite_field(d)
    if bad:
        field = bad if index is None else f"[{index}].{bad}"
        raise InvalidPattern(f"{field}: must be a finite number (NaN and infinity are not JSON)", field)
    return d


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()


class Client:
    """A client of one running node.

    ``Client("http://127.0.0.1:38211")``, or ``Client()`` to find the node
    through the default data directory's ``api.addr`` file (the node writes
    it; ``METAMESH_DATA_DIR`` moves the data directory, as for the node), or
    ``Client.from_data_dir(path)`` for another data directory.
    """

    def __init__(self, base_url: Optional[str] = None, *, timeout: float = 30.0):
        if base_url is None:
            base_url = self._url_from_data_dir(default_data_dir())
        if "://" not in base_url:
            base_url = "http://" + base_url
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"base_url must be http://HOST:PORT, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # Never send the node's loopback traffic through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @classmethod
    def from_data_dir(cls, data_dir: Union[str, os.PathLike], **kw: Any) -> "Client":
        """The node running on ``data_dir`` (reads its ``api.addr``)."""
        return cls(cls._url_from_data_dir(Path(data_dir)), **kw)

    @staticmethod
    def _url_from_data_dir(data_dir: Path) -> str:
        addr_file = data_dir / "api.addr"
        try:
            addr = addr_file.read_text().strip()
        except OSError as e:
            raise NodeUnreachable(str(addr_file), f"no running node found ({e.strerror})") from None
        if not addr:
            raise NodeUnreachable(str(addr_file), "the API address file is empty")
        return "http://" + addr

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    # ---- transport -------------------------------------------------------

    def _url(self, path: str, params: Optional[Sequence[Tuple[str, Any]]] = None) -> str:
        url = self.base_url + path
        if params:
            q = [(k, v) for k, v in params if v is not None]
            if q:
                url += "?" + urllib.parse.urlencode(q)
        return url

    def _request(
        self,
        method: str,
        path: str,
        params: Optional[Sequence[Tuple[str, Any]]] = None,
        body: Optional[bytes] = None,
        accept: str = "application/json",
        content_type: str = "application/json",
    ) -> Tuple[int, bytes, str]:
        status, raw, headers = self._request_h(method, path, params, body, accept, content_type)
        return status, raw, headers.get("Content-Type", "")

    def _request_h(
        self,
        method: str,
        path: str,
        params: Optional[Sequence[Tuple[str, Any]]] = None,
        body: Optional[bytes] = None,
        accept: str = "application/json",
        content_type: str = "application/json",
    ) -> Tuple[int, bytes, Any]:
        url = self._url(path, params)
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            raw = e.read()
            raise self._error(e.code, raw) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            raise NodeUnreachable(url, str(reason)) from None

    @staticmethod
    def _error(status: int, raw: bytes) -> ApiError:
        message, field = raw.decode("utf-8", "replace").strip() or f"status {status}", None
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, Mapping):
            message = str(doc.get("error", message))
            f = doc.get("field")
            field = None if f is None else str(f)
        return error_for(status, message, field)

    def _get_json(self, path: str, params: Optional[Sequence[Tuple[str, Any]]] = None) -> Any:
        _, raw, _ = self._request("GET", path, params)
        try:
            return json.loads(raw)
        except ValueError as e:
            raise MetameshError(f"GET {path}: the node answered invalid JSON: {e}") from None

    # ---- writes ------------------------------------------------------------

    def record(self, pattern: Optional[PatternLike] = None, **fields: Any) -> Submitted:
        """Record one pattern as this node (``POST /v1/patterns``).

        Give a mapping (or :class:`Pattern`) and/or keyword fields, e.g.
        ``record(depth_used="deep", quality_achieved=0.9, success=True,
        atp_before=120, atp_after=100)``. ``pattern_id``, ``timestamp`` and
        ``node_id`` default on the node. Returns once the pattern is durable.
        """
        d = _pattern_json(pattern) if pattern is not None else {}
        d.update(fields)
        d = _pattern_json(d)
        _, raw, _ = self._request("POST", "/v1/patterns", body=_encode(d))
        stored = json.loads(raw)
        if not isinstance(stored, list) or len(stored) != 1:
            raise MetameshError("POST /v1/patterns: expected one stored pattern in the answer")
        return Submitted.from_json(stored[0])

    def record_many(
        self, patterns: Iterable[PatternLike], *, batch_size: int = MAX_PATTERNS_PER_POST
    ) -> List[Submitted]:
        """Record many patterns, in requests of at most ``batch_size`` patterns
        and 1 MiB each. Each request is all-or-nothing; an error names the
        field with the pattern's index in the whole input (``[1234].quality_achieved``),
        and the requests before it stay stored (their results are in the
        exception's ``stored`` attribute).
        """
        if not 1 <= batch_size <= MAX_PATTERNS_PER_POST:
            raise ValueError(f"batch_size must be between 1 and {MAX_PATTERNS_PER_POST}")
        out: List[Submitted] = []
        batch: List[bytes] = []
        start = 0  # index of batch[0] in the whole input
        size = 2

        def flush() -> None:
            nonlocal batch, start, size
            if not batch:
                return
            body = b"[" + b",".join(batch) + b"]"
            try:
                _, raw, _ = self._request("POST", "/v1/patterns", body=body)
            except ApiError as e:
                err = e
                if e.field and e.field.startswith("["):
                    i, _, rest = e.field[1:].partition("]")
                    if i.isdigit():
                        whole = f"[{int(i) + start}]"
                        message = e.message.replace(f"[{i}]", whole, 1)
                        err = error_for(e.status, message, whole + rest)
                err.stored = list(out)  # type: ignore[attr-defined]
                raise err from None
            out.extend(Submitted.from_json(s) for s in json.loads(raw))
            start += len(batch)
            batch, size = [], 2

        for i, p in enumerate(patterns):
            item = _encode(_pattern_json(p, i))
            if len(item) + 2 > MAX_BODY_BYTES:
                raise InvalidPattern(f"[{i}]: one pattern larger than {MAX_BODY_BYTES} bytes", f"[{i}]")
            if batch and (len(batch) >= batch_size or size + len(item) + 1 > MAX_BODY_BYTES):
                flush()
            batch.append(item)
            size += len(item) + 1
        flush()
        return out

    # ---- reads -------------------------------------------------------------

    @staticmethod
    def _filters(
        depths: Optional[Union[str, Sequence[str]]],
        min_quality: Optional[float],
        min_timestamp: Optional[float],
    ) -> List[Tuple[str, Any]]:
        if depths is not None and not isinstance(depths, str):
            depths = ",".join(depths)
        return [("depths", depths), ("min_quality", min_quality), ("min_timestamp", min_timestamp)]

    def patterns_page(
        self,
        *,
        depths: Optional[Union[str, Sequence[str]]] = None,
        min_quality: Optional[float] = None,
        min_timestamp: Optional[float] = None,
        max_count: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> PatternPage:
        """One page of ``GET /v1/patterns`` with the seed's filters.

        ``max_count`` is the page size (1-1000, node default 100) and
        ``cursor`` the previous page's ``next_cursor``. The node sends the
        next page's cursor in the ``X-Next-Cursor`` header (or, paged, in
        the body); ``next_cursor`` is None on the last page.
        """
        params = self._filters(depths, min_quality, min_timestamp)
        params += [("max_count", max_count), ("cursor", cursor)]
        _, raw, headers = self._request_h("GET", "/v1/patterns", params)
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise MetameshError(f"GET /v1/patterns: the node answered invalid JSON: {e}") from None
        return PatternPage.from_json(body, headers.get("X-Next-Cursor"))

    def iter_patterns(
        self,
        *,
        depths: Optional[Union[str, Sequence[str]]] = None,
        min_quality: Optional[float] = None,
        min_timestamp: Optional[float] = None,
        page_size: Optional[int] = None,
    ) -> Iterator[StoredPattern]:
        """Every stored pattern matching the filters, page by page (cursor
        iteration until the node gives no ``next_cursor``)."""
        cursor: Optional[str] = None
        seen = set()
        while True:
            page = self.patterns_page(
                depths=depths,
                min_quality=min_quality,
                min_timestamp=min_timestamp,
                max_count=page_size,
                cursor=cursor,
            )
            yield from page.patterns
            if page.next_cursor is None:
                return
            if page.next_cursor in seen:
                raise MetameshError(f"GET /v1/patterns: the node repeated cursor {page.next_cursor!r}")
            seen.add(page.next_cursor)
            cursor = page.next_cursor

    def patterns(self, **filters: Any) -> List[StoredPattern]:
        """All stored patterns matching the filters (see :meth:`iter_patterns`)."""
        return list(self.iter_patterns(**filters))

    def import_jsonl(
        self,
        lines: Union[str, bytes, Iterable[Union[str, bytes, Mapping[str, Any]]]],
        *,
        format: Optional[str] = None,
        default_node: Optional[str] = None,
        line_offset: Optional[int] = None,
    ) -> Dict[str, Any]:
        """``POST /v1/import``: JSON Lines (a string, bytes, or an iterable of
        lines or pattern dicts) imported as ``metamesh import`` does — same
        parser, validation and re-import dedup. Returns the node's report
        (``accepted``, ``duplicates``, ``skipped``, ``invalid``, ...)."""
        if isinstance(lines, str):
            body = lines.encode()
        elif isinstance(lines, bytes):
            body = lines
        else:
            parts = []
            for item in lines:
                if isinstance(item, Mapping):
                    item = _encode(_pattern_json(item))
                elif isinstance(item, str):
                    item = item.encode()
                parts.append(item.rstrip(b"\n"))
            body = b"\n".join(parts) + b"\n"
        params = [("format", format), ("default_node", default_node), ("line_offset", line_offset)]
        _, raw, _ = self._request(
            "POST", "/v1/import", params, body=body, content_type="application/x-ndjson"
        )
        return json.loads(raw)

    def export_patterns(self) -> Iterator[Dict[str, Any]]:
        """``GET /v1/export``: every stored pattern as a unified dict, streamed
        (what ``metamesh export --patterns`` writes)."""
        url = self._url("/v1/export")
        req = urllib.request.Request(url, headers={"Accept": "application/x-ndjson"})
        try:
            resp = self._opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            raise self._error(e.code, e.read()) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise NodeUnreachable(url, str(getattr(e, "reason", e))) from None
        with resp:
            try:
                for line in resp:
                    line = line.strip()
                    if line:
                        yield json.loads(line)
            except (OSError, http.client.HTTPException) as e:
                # The node aborts the stream on failure: never a silently short export.
                raise MetameshError(f"GET /v1/export: the stream broke off: {e}") from None

    def insights(self, scope: str = "collective") -> Insights:
        """``GET /v1/insights``: ``scope`` is ``local`` or ``collective``."""
        return Insights.from_json(self._get_json("/v1/insights", [("scope", scope)]))

    def recommend(self, atp: float, strategy: Optional[str] = None) -> Recommendation:
        """``GET /v1/recommendation``: the depth to use now with ``atp`` ATP."""
        if isinstance(atp, float) and not math.isfinite(atp):
            raise InvalidPattern("atp must be a finite number", "atp")
        params = [("atp", repr(float(atp))), ("strategy", strategy)]
        return Recommendation.from_json(self._get_json("/v1/recommendation", params))

    def peers(self) -> List[Peer]:
        return [Peer.from_json(p) for p in self._get_json("/v1/peers")]

    def reputation(self) -> List[Reputation]:
        return [Reputation.from_json(r) for r in self._get_json("/v1/reputation")]

    def stats(self) -> Stats:
        return Stats.from_json(self._get_json("/v1/stats"))

    def node(self) -> NodeInfo:
        return NodeInfo.from_json(self._get_json("/v1/node"))

    def knowledge(self) -> Knowledge:
        """The knowledge-transfer report (``GET /v1/knowledge``)."""
        return Knowledge.from_json(self._get_json("/v1/knowledge"))

    def openapi(self) -> Dict[str, Any]:
        """The node's OpenAPI 3 document (``GET /v1/openapi.json``)."""
        return self._get_json("/v1/openapi.json")

    def healthz(self) -> Health:
        """``GET /healthz``: ``ok`` False (status 503) when the node says it
        cannot serve; other errors raise."""
        try:
            status, raw, ctype = self._request("GET", "/healthz", accept="*/*")
        except ApiError as e:
            if e.status != 503:
                raise
            return Health(ok=False, status=e.status, body=e.message)
        body: Any = raw.decode("utf-8", "replace")
        if "json" in ctype:
            try:
                body = json.loads(raw)
            except ValueError:
                pass
        return Health(ok=200 <= status < 300, status=status, body=body)

    def metrics(self) -> str:
        """``GET /metrics``: Prometheus text (see :func:`parse_metrics`)."""
        _, raw, _ = self._request("GET", "/metrics", accept="text/plain")
        return raw.decode("utf-8", "replace")

    def events(
        self, *, last_event_id: Optional[str] = None, timeout: Optional[float] = None
    ) -> EventStream:
        """``GET /v1/events`` as an iterator of :class:`~metamesh.types.Event`.

        Use as ``with client.events() as stream: for ev in stream: ...``.
        ``timeout`` bounds the wait for each line (the node sends a keep-alive
        every 15 s); ``last_event_id`` resumes after that event (``stream.last_id``).
        """
        parsed = urllib.parse.urlsplit(self.base_url)
        host = parsed.hostname or "127.0.0.1"
        port = parsed.port or 80
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        conn = http.client.HTTPConnection(host, port, timeout=timeout if timeout else self.timeout)
        path = (parsed.path or "") + "/v1/events"
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise NodeUnreachable(self.base_url + "/v1/events", str(e)) from None
        if resp.status != 200:
            raw = resp.read()
            conn.close()
            raise self._error(resp.status, raw)
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return EventStream(conn, resp)


def parse_metrics(text: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """Prometheus text → ``{(name, ((label, value), ...)): value}`` (labels sorted)."""
    out: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            head, value = line.rsplit(" ", 1)
            labels: Tuple[Tuple[str, str], ...] = ()
            if "{" in head:
                name, rest = head.split("{", 1)
                pairs = []
                for part in _split_labels(rest.rstrip("}")):
                    k, _, v = part.partition("=")
                    pairs.append((k.strip(), json.loads(v) if v.startswith('"') else v))
                labels = tuple(sorted(pairs))
            else:
                name = head
            out[(name.strip(), labels)] = float(value)
        except ValueError:
            continue
    return out


def _split_labels(s: str) -> List[str]:
    parts, cur, quoted, esc = [], [], False, False
    for ch in s:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            cur.append(ch)
            esc = True
        elif ch == '"':
            cur.append(ch)
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if cur:
        parts.append("".join(cur))
    return [p for p in parts if p.strip()]


__all__ = ["Client", "parse_metrics", "default_data_dir", "MAX_PATTERNS_PER_POST", "MAX_BODY_BYTES"]
