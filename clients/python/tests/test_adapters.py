"""The Legion/Thor adapter: prototype patterns sent as they are."""

from __future__ import annotations

import dataclasses
import enum
import json
from datetime import datetime, timezone
from typing import Optional

import pytest

from metamesh import InvalidPattern, PrototypeSink, Unprocessable, from_legion, from_prototype, from_thor

from conftest import fixtures_dir


# ---- the prototypes' own shapes (as their Python code would hold them) ----

class CogitationMode(enum.Enum):
    VERIFYING = "verifying"
    EXPLORING = "exploring"


class VerificationDepth(enum.Enum):  # Thor-style enum with auto() values
    LIGHT = 1
    STANDARD = 2
    DEEP = 3


@dataclasses.dataclass
class VerificationPattern:  # Legion, Session 160
    pattern_id: str
    cogitation_mode: CogitationMode
    depth_used: str
    outcome_quality: float
    outcome_confidence: float
    atp_before: float
    atp_after: float
    success: bool
    timestamp: float


@dataclasses.dataclass
class DepthVerificationPattern:  # Thor, Session 181
    pattern_id: str
    depth_used: VerificationDepth
    quality_achieved: float
    success: bool
    atp_before: float
    atp_after: float
    reputation_before: float
    reputation_after: float
    timestamp: datetime
    context: dict
    node_id: Optional[str] = None


LEGION = VerificationPattern("lg-1", CogitationMode.VERIFYING, "deep", 0.81, 0.7, 120.0, 101.5, True, 1767225600.0)
THOR = DepthVerificationPattern("th-1", VerificationDepth.DEEP, 0.77, True, 90.0, 70.0, 12.5, 13.0,
                                datetime(2026, 1, 1, tzinfo=timezone.utc), {"network": {"peers": 2}})


def test_from_legion_converts_a_dataclass_with_enums():
    d = from_legion(LEGION)
    assert d["quality_achieved"] == 0.81 and "outcome_quality" not in d
    assert d["cogitation_mode"] == "verifying"
    assert d["node_id"] == "legion" and d["platform"] == "legion"
    assert d["depth_used"] == "deep"
    json.dumps(d)  # JSON-ready


def test_from_thor_converts_enum_depths_and_datetimes():
    d = from_thor(THOR, node_id="thor-7")
    assert d["depth_used"] == "deep"
    assert d["timestamp"] == datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    assert d["node_id"] == "thor-7" and d["platform"] == "thor"
    assert d["context"] == {"network": {"peers": 2}}
    assert from_thor({"depth_used": "STANDARD", "quality_achieved": 0.5})["depth_used"] == "standard"
    assert from_thor({"depth_used": "VerificationDepth.LIGHT"})["depth_used"] == "light"


def test_from_prototype_tells_them_apart():
    assert from_prototype(LEGION)["platform"] == "legion"
    assert from_prototype(THOR)["platform"] == "thor"


def test_bad_prototype_values_name_the_field():
    with pytest.raises(InvalidPattern) as e:
        from_thor({"depth_used": "BOTTOMLESS"})
    assert e.value.field == "depth_used"
    with pytest.raises(InvalidPattern):
        from_legion(42)


def test_sink_stores_prototype_patterns(client):
    legion = PrototypeSink(client, "legion", node_id="lct:web4:legion")
    thor = PrototypeSink(client, "thor")
    s1 = legion.save(LEGION)
    s2 = thor.record_pattern(THOR)
    s3 = PrototypeSink(client).add_pattern({"outcome_quality": 0.3, "cogitation_mode": "EXPLORING",
                                            "depth_used": "light", "success": False,
                                            "atp_before": 10, "atp_after": 9})
    by_hash = {p.hash: p.pattern for p in client.iter_patterns(depths=["deep", "light"])}
    lp, tp, ap = by_hash[s1.hash], by_hash[s2.hash], by_hash[s3.hash]
    assert (lp.node_id, lp.platform, lp.mode, lp.outcome_confidence) == ("lct:web4:legion", "legion", "verifying", 0.7)
    assert (tp.node_id, tp.platform, tp.reputation_after) == ("thor", "thor", 13.0)
    assert tp.context == {"network": {"peers": 2}}
    assert (ap.platform, ap.mode, ap.quality_achieved) == ("legion", "EXPLORING", 0.3)
    with pytest.raises(Unprocessable) as e:
        legion.save(dataclasses.replace(LEGION, outcome_quality=1.7))
    assert e.value.field == "quality_achieved"


def test_shared_fixtures_through_the_sink_match_expected(tmp_path):
    """The prototypes' files sent pattern by pattern give what `metamesh
    import` gives (fixtures/expected.json), on a fresh node."""
    fx = fixtures_dir()
    if fx is None:
        pytest.skip("shared/fixtures not found beside the checkout")
    from conftest import RunningNode

    n = RunningNode("fixtures")
    try:
        c = n.client
        legion = json.loads((fx / "legion_patterns.json").read_text())
        PrototypeSink(c, "legion").save_many(legion)
        thor_sink, invalid = PrototypeSink(c, "thor"), 0
        for name, sink in (("thor_depth_patterns.jsonl", thor_sink), ("mixed_unified.jsonl", None)):
            for line in (fx / name).read_text().splitlines():
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue  # blank or truncated line: skipped as import does
                try:
                    if sink is not None:
                        sink.save(obj)
                    else:
                        c.record(obj)
                except (Unprocessable, InvalidPattern):
                    invalid += 1
        expected = json.loads((fx / "expected.json").read_text())
        ins = c.insights("local")
        assert ins.pattern_count == expected["pattern_count"]
        assert invalid == expected["invalid_records"]
        for depth, want in expected["depth_performance"].items():
            got = ins.depth_performance[depth]
            assert got.sample_count == want["sample_count"]
            assert got.avg_quality == pytest.approx(want["avg_quality"], abs=1e-9)
            assert got.success_rate == pytest.approx(want["success_rate"], abs=1e-9)
        assert ins.learned_preferences.optimal_quality_depth == expected["optimal_quality_depth"]
    finally:
        n.stop()
