"""Client pieces that need no node: the SSE parser, metrics parser, errors, typed results."""

from __future__ import annotations

import io

import pytest

from metamesh import (
    ApiError,
    BadRequest,
    PatternPage,
    ServerError,
    Stats,
    Unavailable,
    parse_metrics,
)
from metamesh.errors import error_for
from metamesh.events import EventStream


class FakeResp:
    def __init__(self, text: str):
        self._b = io.BytesIO(text.encode())

    def readline(self):
        return self._b.readline()

    def close(self):
        pass


class FakeConn:
    def close(self):
        pass


def stream(text: str) -> EventStream:
    return EventStream(FakeConn(), FakeResp(text))  # type: ignore[arg-type]


def test_sse_parser_reads_events_ids_comments_and_lag():
    s = stream(
        ": keep-alive\n\n"
        "event: pattern_accepted\nid: 41\ndata: {\"type\":\"pattern_accepted\",\"seq\":3}\n\n"
        ": lagged: 7 events skipped\n"
        "event: peer_left\r\ndata: {\"type\":\"peer_left\",\r\ndata: \"peer\":\"p\"}\r\n\r\n"
        "data: {\"type\":\"insight_changed\"}\n\n"
        "event: partial\ndata: {\"never\":"  # cut off: not dispatched
    )
    evs = list(s)
    assert [e.type for e in evs] == ["pattern_accepted", "peer_left", "insight_changed"]
    assert evs[0].id == "41" and evs[0]["seq"] == 3
    assert evs[1]["peer"] == "p" and evs[1].id is None
    assert s.last_id == "41" and s.skipped == 7 and s.closed


def test_metrics_parser():
    m = parse_metrics(
        "# HELP x y\n# TYPE metamesh_peers gauge\nmetamesh_peers 3\n"
        'metamesh_patterns_rejected_total{reason="bad_signature"} 5\n'
        'metamesh_x{a="1,2",b="q\\"x"} 1.5e3\n'
        "garbage line\n"
    )
    assert m[("metamesh_peers", ())] == 3
    assert m[("metamesh_patterns_rejected_total", (("reason", "bad_signature"),))] == 5
    assert m[("metamesh_x", (("a", "1,2"), ("b", 'q"x')))] == 1500


def test_errors_by_status_carry_field():
    e = error_for(400, "atp is required", "atp")
    assert isinstance(e, BadRequest) and isinstance(e, ApiError) and e.field == "atp"
    assert "HTTP 400" in str(e) and "atp is required" in str(e)
    assert isinstance(error_for(503, "busy", None), Unavailable)
    assert isinstance(error_for(599, "?", None), ServerError)
    assert type(error_for(418, "teapot", None)) is ApiError


def test_pattern_page_accepts_both_shapes():
    row = {"origin": "o", "seq": 1, "hash": "h", "pattern": {
        "pattern_id": "p", "node_id": "n", "timestamp": 1.0, "platform": "x", "depth_used": "deep",
        "mode": "m", "quality_achieved": 0.5, "success": True, "atp_before": 1.0, "atp_after": 0.5,
        "future_field": 1}}
    old = PatternPage.from_json([row])
    assert old.next_cursor is None and old.patterns[0].pattern.extra == {"future_field": 1}
    new = PatternPage.from_json({"patterns": [row, row], "next_cursor": "abc"})
    assert len(new.patterns) == 2 and new.next_cursor == "abc"
    assert PatternPage.from_json({"patterns": [], "next_cursor": None}).next_cursor is None
    with pytest.raises(ValueError):
        PatternPage.from_json("nope")


def test_typed_results_keep_unknown_fields():
    st = Stats.from_json({"peer_id": "p", "pattern_count": 2, "new_thing": [1],
                          "metrics": {"patterns_recorded": 2, "brand_new_counter": 9}})
    assert st.extra == {"new_thing": [1]}
    assert st.metrics.patterns_recorded == 2 and st.metrics.extra == {"brand_new_counter": 9}
