"""Every Client method against a real node."""

from __future__ import annotations

import math
import socket

import pytest

from metamesh import (
    BadRequest,
    Client,
    Event,
    InvalidPattern,
    NodeUnreachable,
    NotFound,
    Pattern,
    Unprocessable,
    parse_metrics,
)

from conftest import wait_for


def pattern(depth="standard", quality=0.7, success=True, **extra):
    p = dict(depth_used=depth, quality_achieved=quality, success=success, atp_before=120.0, atp_after=100.0)
    p.update(extra)
    return p


def route(fn, *args, **kw):
    """Call a client method whose route a node may not serve yet: skip then."""
    try:
        return fn(*args, **kw)
    except NotFound as e:
        pytest.skip(f"this node does not serve the route yet: {e}")


def test_node_info(node, client):
    info = client.node()
    assert info.peer_id.startswith("12D3")
    assert info.api_addr and client.base_url.endswith(info.api_addr)
    assert any(info.peer_id in a for a in info.listen_addrs)
    assert info.mesh == "default"
    assert info.version


def test_healthz(client):
    h = route(client.healthz)
    assert h.ok and h.status == 200
    assert h.body == {"status": "ok"}


def test_record_one_with_keywords_and_with_a_dict(client):
    before = client.stats().pattern_count
    s1 = client.record(depth_used="deep", quality_achieved=0.9, success=True, atp_before=100, atp_after=80)
    s2 = client.record(pattern("light", 0.4, False, pattern_id="py-dict-1", mode="checking"))
    assert s1.origin == client.node().peer_id and s2.origin == s1.origin
    assert s2.seq > s1.seq
    assert s2.pattern_id == "py-dict-1" and len(s1.hash) == 64
    assert client.stats().pattern_count == before + 2
    stored = {p.hash: p for p in client.iter_patterns(depths=["light"])}
    assert stored[s2.hash].pattern.mode == "checking"
    assert stored[s2.hash].pattern.quality_achieved == pytest.approx(0.4)


def test_record_a_pattern_object_round_trips(client):
    p = Pattern(pattern_id="py-obj-1", node_id="somewhere", timestamp=1767225600.0, platform="py",
                depth_used="thorough", mode="general", quality_achieved=0.66, success=True,
                atp_before=150.0, atp_after=120.0, context={"k": "v"})
    s = client.record(p)
    got = [x for x in client.iter_patterns(depths="thorough") if x.hash == s.hash]
    assert len(got) == 1
    assert got[0].pattern.node_id == "somewhere" and got[0].pattern.platform == "py"
    assert got[0].pattern.context == {"k": "v"}


def test_invalid_pattern_raises_with_the_apis_field(client):
    with pytest.raises(Unprocessable) as e:
        client.record(pattern(quality=1.5))
    assert e.value.status == 422 and e.value.field == "quality_achieved"
    assert "quality_achieved" in e.value.message
    with pytest.raises(Unprocessable) as e:
        client.record(pattern(depth="bottomless"))
    assert e.value.field == "depth_used"
    with pytest.raises(Unprocessable) as e:
        client.record({"depth_used": "deep", "quality_achieved": 0.5, "success": True, "atp_before": 1})
    assert e.value.field == "atp_after"


def test_non_finite_numbers_are_refused_before_sending(client):
    before = client.stats().pattern_count
    with pytest.raises(InvalidPattern) as e:
        client.record(pattern(quality=float("nan")))
    assert e.value.field == "quality_achieved"
    with pytest.raises(InvalidPattern) as e:
        client.record_many([pattern(), pattern(atp_before=math.inf)])
    assert e.value.field == "[1].atp_before"
    assert client.stats().pattern_count == before


def test_record_many_batches_and_names_the_whole_inputs_index(client):
    before = client.stats().pattern_count
    many = [pattern("minimal", 0.2 + (i % 10) / 100, False) for i in range(345)]
    stored = client.record_many(many, batch_size=100)  # 4 requests
    assert len(stored) == 345
    assert len({s.hash for s in stored}) == 345
    seqs = [s.seq for s in stored]
    assert seqs == sorted(seqs)
    assert client.stats().pattern_count == before + 345

    bad = [pattern() for _ in range(150)]
    bad[120]["quality_achieved"] = 7.0
    with pytest.raises(Unprocessable) as e:
        client.record_many(bad, batch_size=100)
    assert e.value.field == "[120].quality_achieved"
    assert e.value.message.startswith("[120].quality_achieved")
    assert len(e.value.stored) == 100  # the first request stays stored
    assert client.stats().pattern_count == before + 345 + 100


def test_record_many_splits_by_body_size(client):
    # ~2.6 KiB a pattern: 1000 of them exceed the node's 1 MiB body limit.
    big = [pattern("light", 0.5, context={"note": "x" * 2600}) for _ in range(450)]
    stored = client.record_many(big)
    assert len(stored) == 450


def test_patterns_filters(client):
    client.record_many([pattern("standard", 0.95), pattern("standard", 0.1), pattern("deep", 0.97)])
    hi = client.patterns(depths=["standard", "deep"], min_quality=0.9)
    assert hi and all(p.pattern.depth_used in ("standard", "deep") for p in hi)
    assert all(p.pattern.quality_achieved >= 0.9 for p in hi)
    page = client.patterns_page(max_count=2)
    assert len(page.patterns) <= 2
    with pytest.raises(BadRequest) as e:
        client.patterns_page(min_quality=3)
    assert e.value.field == "min_quality"


def test_cursor_iteration_returns_every_pattern_once(client):
    total = client.stats().pattern_count
    assert total > 400  # recorded by the tests above (module-scoped node)
    page = client.patterns_page()
    if page.next_cursor is None:
        pytest.skip("this node does not page GET /v1/patterns with a cursor yet")
    hashes = [p.hash for p in client.iter_patterns(page_size=333)]
    assert len(hashes) == total
    assert len(set(hashes)) == total


def test_import_jsonl_and_export(client):
    lines = [
        '{"pattern_id":"imp-1","node_id":"legacy","timestamp":1704902400.0,"depth_used":"standard",'
        '"quality_achieved":0.45,"success":true,"atp_before":100.0,"atp_after":95.0}',
        "not json",
        pattern("deep", 1.7, pattern_id="imp-bad", node_id="legacy", timestamp=1704902401.0),
        pattern("deep", 0.8, pattern_id="imp-2", node_id="legacy", timestamp=1704902402.0),
    ]
    report = route(client.import_jsonl, lines)
    assert report["accepted"] == 2 and report["duplicates"] == 0
    assert report["skipped_total"] == 1 and report["skipped"][0]["line"] == 2
    assert report["invalid_total"] == 1 and report["invalid"][0]["field"] == "quality_achieved"
    again = client.import_jsonl("\n".join(lines[:1]) + "\n")
    assert again["accepted"] == 0 and again["duplicates"] == 1  # re-import dedup
    exported = route(lambda: list(client.export_patterns()))
    assert len(exported) == client.stats().pattern_count
    ids = {p["pattern_id"] for p in exported}
    assert {"imp-1", "imp-2"} <= ids and "imp-bad" not in ids


def test_insights_local_and_collective(client):
    local = client.insights("local")
    coll = client.insights()
    assert local.pattern_count > 0 and coll.pattern_count >= local.pattern_count
    best = coll.learned_preferences.optimal_quality_depth
    assert best in coll.depth_performance
    assert 0.0 <= coll.confidence("optimal_quality_depth") <= 1.0
    assert sum(d.sample_count for d in local.depth_performance.values()) == local.pattern_count
    with pytest.raises(BadRequest) as e:
        client.insights("galactic")
    assert e.value.field == "scope"


def test_recommend(client):
    r = client.recommend(120)
    assert r.depth in ("minimal", "light", "standard", "deep", "thorough")
    assert r.strategy == "posterior" and 0.0 <= r.confidence <= 1.0 and r.atp == 120.0
    for s in ("legion", "thor"):
        assert client.recommend(50.5, strategy=s).strategy == s
    with pytest.raises(BadRequest) as e:
        client.recommend(-5)
    assert e.value.field == "atp"
    with pytest.raises(InvalidPattern) as e:
        client.recommend(float("inf"))
    assert e.value.field == "atp"
    with pytest.raises(BadRequest) as e:
        client.recommend(10, strategy="no such strategy!")
    assert e.value.field == "strategy"


def test_stats_and_metrics_agree(client):
    st = client.stats()
    assert st.peer_id == client.node().peer_id
    assert st.pattern_count == sum(st.depth_distribution.values())
    assert st.metrics.patterns_recorded == st.own_seq or st.metrics.patterns_recorded <= st.pattern_count
    text = client.metrics()
    m = parse_metrics(text)
    assert m[("metamesh_patterns_recorded_total", ())] == st.metrics.patterns_recorded


def test_knowledge_names_this_node(client):
    k = client.knowledge()
    me = client.node().peer_id
    assert k.pattern_count == client.insights().pattern_count
    mine = [c for c in k.contributors if c.peer_id == me]
    assert len(mine) == 1 and mine[0].anchor and mine[0].patterns > 0
    assert sum(c.share for c in k.contributors) == pytest.approx(1.0)


def test_events_iterator_sees_a_recorded_pattern(client):
    with client.events(timeout=60) as stream:
        # The stream is subscribed once its headers are in: record, then read.
        stored = client.record(pattern("deep", 0.88))
        seen = None
        for ev in stream:
            assert isinstance(ev, Event)
            if ev.type == "pattern_accepted" and ev["hash"] == stored.hash:
                seen = ev
                break
    assert seen is not None
    assert seen["local"] is True and seen["depth"] == "deep" and seen["seq"] == stored.seq
    assert seen["origin"] == stored.origin
    assert stream.closed


def test_events_resume_after_the_last_id(client):
    with client.events(timeout=60) as stream:
        first = client.record(pattern("light", 0.41))
        ev = next(e for e in stream if e.type == "pattern_accepted" and e["hash"] == first.hash)
    if ev.id is None:
        pytest.skip("this node sends no SSE ids yet")
    assert stream.last_id == ev.id
    # Missed while disconnected: replayed after the id on reconnect.
    missed = [client.record(pattern("light", 0.42)), client.record(pattern("light", 0.43))]
    with client.events(last_event_id=ev.id, timeout=60) as again:
        got = []
        for e in again:
            assert e.type != "reset", e.data
            if e.type == "pattern_accepted":
                got.append(e["hash"])
                if len(got) == 2:
                    break
    assert got == [m.hash for m in missed]


def test_unknown_route_and_unreachable_node(node):
    with pytest.raises(NotFound):
        node.client._get_json("/v1/nothing-here")
    # A port nothing listens on: bind one, close it, use it.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(NodeUnreachable):
        Client(f"http://127.0.0.1:{port}", timeout=5).stats()
    with pytest.raises(NodeUnreachable):
        Client.from_data_dir(node.dir / "no-such-dir")


def test_peers_and_reputation_of_two_nodes(pair):
    a, b = pair
    bid, aid = b.info.peer_id, a.info.peer_id
    peers = wait_for("b among a's connected peers",
                     lambda: [p for p in a.client.peers() if p.peer_id == bid and p.connected])
    assert peers[0].reputation_class in ("excellent", "good", "neutral", "poor", "untrusted")
    assert isinstance(peers[0].reputation, float)
    # b's patterns reach a; a then holds a reputation record for b.
    stored = b.client.record_many([pattern("thorough", 0.8) for _ in range(5)])
    wait_for("a to hold b's patterns",
             lambda: sum(1 for p in a.client.iter_patterns(depths="thorough") if p.origin == bid) == 5)
    rep = wait_for("a's reputation record of b", lambda: [r for r in a.client.reputation() if r.peer_id == bid])
    assert rep[0].reputation_class and rep[0].weight >= 0.0
    assert all(isinstance(v, int) for v in rep[0].counters.values())
    k = wait_for("b among a's contributors",
                 lambda: [c for c in a.client.knowledge().contributors if c.peer_id == bid])
    assert k[0].patterns == len(stored)
    assert a.client.stats().metrics.patterns_received >= 5
    assert any(p.peer_id == aid for p in b.client.peers())
