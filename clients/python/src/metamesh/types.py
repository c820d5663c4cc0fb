"""Typed results of the metamesh API (see docs/api.md for every field).

Each class has ``from_json(dict)``; fields the node adds in later versions are
kept in ``extra`` (never dropped), so an older client keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple

DEPTHS: Tuple[str, ...] = ("minimal", "light", "standard", "deep", "thorough")
"""Verification depths, shallowest first."""


def _known(cls) -> set:
    return {f.name for f in fields(cls)} - {"extra"}


def _extra(cls, d: Mapping[str, Any]) -> Dict[str, Any]:
    known = _known(cls)
    return {k: v for k, v in d.items() if k not in known}


def _req(d: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return d[key]
    except (KeyError, TypeError):
        raise ValueError(f"{what}: the node's answer has no {key!r}") from None


@dataclass
class Pattern:
    """A pattern in the unified schema (seed 004), as the node stores it."""

    pattern_id: str
    node_id: str
    timestamp: float
    platform: str
    depth_used: str
    mode: str
    quality_achieved: float
    success: bool
    atp_before: float
    atp_after: float
    reputation_before: Optional[float] = None
    reputation_after: Optional[float] = None
    context: Optional[Dict[str, Any]] = None
    pattern_type: Optional[str] = None
    cogitation_mode: Optional[str] = None
    outcome_confidence: Optional[float] = None
    verification_quality_score: Optional[float] = None
    cognitive_depth: Optional[str] = None
    network_health: Optional[float] = None
    federation_context: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Pattern":
        kw = {k: d[k] for k in _known(cls) if k in d}
        for k in ("pattern_id", "node_id", "timestamp", "depth_used", "quality_achieved"):
            _req(d, k, "pattern")
        kw.setdefault("platform", "unknown")
        kw.setdefault("mode", "general")
        kw.setdefault("success", False)
        kw.setdefault("atp_before", 0.0)
        kw.setdefault("atp_after", 0.0)
        return cls(**kw, extra=_extra(cls, d))

    def to_json(self) -> Dict[str, Any]:
        """The pattern as the API accepts it (None fields left out)."""
        out: Dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = v
        out.update(self.extra)
        return out


@dataclass
class Submitted:
    """A pattern stored by ``POST /v1/patterns`` (durable when returned)."""

    origin: str
    seq: int
    hash: str
    pattern_id: str
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Submitted":
        return cls(
            origin=_req(d, "origin", "submitted"),
            seq=int(_req(d, "seq", "submitted")),
            hash=_req(d, "hash", "submitted"),
            pattern_id=_req(d, "pattern_id", "submitted"),
            extra=_extra(cls, d),
        )


@dataclass
class StoredPattern:
    """A stored pattern with its signed record's origin, seq and hash."""

    origin: str
    seq: int
    hash: str
    pattern: Pattern
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "StoredPattern":
        return cls(
            origin=_req(d, "origin", "pattern"),
            seq=int(_req(d, "seq", "pattern")),
            hash=_req(d, "hash", "pattern"),
            pattern=Pattern.from_json(_req(d, "pattern", "pattern")),
            extra=_extra(cls, d),
        )


@dataclass
class PatternPage:
    """One page of ``GET /v1/patterns``; ``next_cursor`` is None on the last."""

    patterns: List[StoredPattern]
    next_cursor: Optional[str] = None

    @classmethod
    def from_json(cls, body: Any, header_cursor: Optional[str] = None) -> "PatternPage":
        # An array (the cursor, if any, came in the X-Next-Cursor header; a
        # node without cursor paging sends none: one page), or, paged, an
        # object {"patterns": [...], "next_cursor": ...}.
        if isinstance(body, list):
            cur = None if header_cursor in (None, "") else str(header_cursor)
            return cls([StoredPattern.from_json(p) for p in body], cur)
        if not isinstance(body, Mapping):
            raise ValueError("patterns: the node's answer is neither an array nor an object")
        items = body.get("patterns")
        if items is None:
            items = body.get("items", [])
        cursor = body.get("next_cursor")
        return cls(
            [StoredPattern.from_json(p) for p in items],
            None if cursor in (None, "") else str(cursor),
        )


@dataclass
class DepthPerformance:
    avg_quality: float
    success_rate: float
    sample_count: int
    avg_atp_cost: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "DepthPerformance":
        return cls(
            avg_quality=float(d.get("avg_quality", 0.0)),
            success_rate=float(d.get("success_rate", 0.0)),
            sample_count=int(d.get("sample_count", 0)),
            avg_atp_cost=d.get("avg_atp_cost"),
            extra=_extra(cls, d),
        )


@dataclass
class Insight:
    insight_type: str
    description: str
    evidence_count: int
    confidence: float
    recommendation: str
    learned_at: float
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Insight":
        return cls(
            insight_type=_req(d, "insight_type", "insight"),
            description=d.get("description", ""),
            evidence_count=int(d.get("evidence_count", 0)),
            confidence=float(d.get("confidence", 0.0)),
            recommendation=d.get("recommendation", ""),
            learned_at=float(d.get("learned_at", 0.0)),
            extra=_extra(cls, d),
        )


@dataclass
class LearnedPreferences:
    optimal_quality_depth: Optional[str] = None
    optimal_success_depth: Optional[str] = None
    optimal_atp_depth: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "LearnedPreferences":
        return cls(
            optimal_quality_depth=d.get("optimal_quality_depth"),
            optimal_success_depth=d.get("optimal_success_depth"),
            optimal_atp_depth=d.get("optimal_atp_depth"),
            extra=_extra(cls, d),
        )


@dataclass
class Insights:
    """The insights document (seed 004 schema) of ``GET /v1/insights``."""

    version: str
    node_id: str
    platform: str
    last_updated: float
    pattern_count: int
    insights: List[Insight]
    depth_performance: Dict[str, DepthPerformance]
    learned_preferences: LearnedPreferences
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Insights":
        return cls(
            version=str(d.get("version", "")),
            node_id=d.get("node_id", ""),
            platform=d.get("platform", ""),
            last_updated=float(d.get("last_updated", 0.0)),
            pattern_count=int(_req(d, "pattern_count", "insights")),
            insights=[Insight.from_json(i) for i in d.get("insights", [])],
            depth_performance={
                k: DepthPerformance.from_json(v)
                for k, v in (d.get("depth_performance") or {}).items()
            },
            learned_preferences=LearnedPreferences.from_json(d.get("learned_preferences") or {}),
            extra=_extra(cls, d),
        )

    def confidence(self, insight_type: str = "optimal_quality_depth") -> Optional[float]:
        """Confidence of the first insight of this type (P(best) for the depth ones)."""
        for i in self.insights:
            if i.insight_type == insight_type:
                return i.confidence
        return None


@dataclass
class Recommendation:
    depth: str
    strategy: str
    confidence: float
    atp: float
    reason: str
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Recommendation":
        return cls(
            depth=_req(d, "depth", "recommendation"),
            strategy=d.get("strategy", ""),
            confidence=float(d.get("confidence", 0.0)),
            atp=float(d.get("atp", 0.0)),
            reason=d.get("reason", ""),
            extra=_extra(cls, d),
        )


@dataclass
class Peer:
    peer_id: str
    addrs: List[str]
    connected: bool
    reputation: float
    reputation_class: str
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Peer":
        return cls(
            peer_id=_req(d, "peer_id", "peer"),
            addrs=list(d.get("addrs", [])),
            connected=bool(d.get("connected", False)),
            reputation=float(d.get("reputation", 0.0)),
            reputation_class=d.get("class", ""),
            extra={k: v for k, v in d.items() if k not in _known(cls) | {"class"}},
        )


@dataclass
class Reputation:
    peer_id: str
    score: float
    reputation_class: str
    weight: float
    counters: Dict[str, int]
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Reputation":
        return cls(
            peer_id=_req(d, "peer_id", "reputation"),
            score=float(d.get("score", 0.0)),
            reputation_class=d.get("class", ""),
            weight=float(d.get("weight", 0.0)),
            counters={k: int(v) for k, v in (d.get("counters") or {}).items()},
            extra={k: v for k, v in d.items() if k not in _known(cls) | {"class"}},
        )


@dataclass
class Metrics:
    """The counters of ``/v1/stats`` (the same numbers as ``/metrics``)."""

    patterns_recorded: int = 0
    patterns_shared: int = 0
    patterns_received: int = 0
    patterns_accepted: int = 0
    patterns_rejected: int = 0
    rejected_by_reason: Dict[str, int] = field(default_factory=dict)
    requests_served: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    peers: int = 0
    reputation_classes: Dict[str, int] = field(default_factory=dict)
    adoption_rate: Optional[float] = None
    effectiveness_followed: Optional[float] = None
    effectiveness_explored: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Metrics":
        kw = {k: d[k] for k in _known(cls) if k in d}
        return cls(**kw, extra=_extra(cls, d))


@dataclass
class Stats:
    peer_id: str
    pattern_count: int
    own_seq: int
    origins: int
    depth_distribution: Dict[str, int]
    connected_peers: int
    known_peers: int
    uptime_secs: float
    metrics: Metrics
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Stats":
        return cls(
            peer_id=_req(d, "peer_id", "stats"),
            pattern_count=int(_req(d, "pattern_count", "stats")),
            own_seq=int(d.get("own_seq", 0)),
            origins=int(d.get("origins", 0)),
            depth_distribution={k: int(v) for k, v in (d.get("depth_distribution") or {}).items()},
            connected_peers=int(d.get("connected_peers", 0)),
            known_peers=int(d.get("known_peers", 0)),
            uptime_secs=float(d.get("uptime_secs", 0.0)),
            metrics=Metrics.from_json(d.get("metrics") or {}),
            extra=_extra(cls, d),
        )


@dataclass
class NodeInfo:
    peer_id: str
    listen_addrs: List[str]
    mesh: str
    api_addr: Optional[str]
    version: str
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "NodeInfo":
        return cls(
            peer_id=_req(d, "peer_id", "node"),
            listen_addrs=list(d.get("listen_addrs", [])),
            mesh=d.get("mesh", ""),
            api_addr=d.get("api_addr"),
            version=d.get("version", ""),
            extra=_extra(cls, d),
        )


@dataclass
class Contributor:
    peer_id: str
    weight: float
    patterns: int
    anchor: bool
    share: float

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Contributor":
        return cls(
            peer_id=_req(d, "peer_id", "contributor"),
            weight=float(d.get("weight", 0.0)),
            patterns=int(d.get("patterns", 0)),
            anchor=bool(d.get("anchor", False)),
            share=float(d.get("share", 0.0)),
        )


@dataclass
class ExcludedOrigin:
    peer_id: str
    depth: str
    z: float
    reason: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ExcludedOrigin":
        return cls(
            peer_id=_req(d, "peer_id", "excluded"),
            depth=d.get("depth", ""),
            z=float(d.get("z", 0.0)),
            reason=d.get("reason", ""),
        )


@dataclass
class HeldInsight:
    peer_id: str
    seq: int
    patterns: int
    optimal_quality_depth: Optional[str]
    confidence: float

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "HeldInsight":
        return cls(
            peer_id=_req(d, "peer_id", "held insight"),
            seq=int(d.get("seq", 0)),
            patterns=int(d.get("patterns", 0)),
            optimal_quality_depth=d.get("optimal_quality_depth"),
            confidence=float(d.get("confidence", 0.0)),
        )


@dataclass
class Knowledge:
    """The knowledge-transfer report of ``GET /v1/knowledge``."""

    pattern_count: int
    contributors: List[Contributor]
    excluded: List[ExcludedOrigin]
    parent: Optional[HeldInsight] = None
    promoted_children: List[HeldInsight] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Knowledge":
        parent = d.get("parent")
        return cls(
            pattern_count=int(d.get("pattern_count", 0)),
            contributors=[Contributor.from_json(c) for c in d.get("contributors", [])],
            excluded=[ExcludedOrigin.from_json(e) for e in d.get("excluded", [])],
            parent=HeldInsight.from_json(parent) if parent else None,
            promoted_children=[HeldInsight.from_json(c) for c in d.get("promoted_children", [])],
            extra=_extra(cls, d),
        )


@dataclass
class Event:
    """One server-sent event of ``GET /v1/events``.

    ``type`` is the event name (``pattern_accepted``, ``pattern_rejected``,
    ``insight_changed``, ``peer_joined``, ``peer_left``), ``data`` its JSON
    object, ``id`` the event id to resume from (None if the node sends none).
    """

    type: str
    data: Dict[str, Any]
    id: Optional[str] = None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


@dataclass
class Health:
    """``GET /healthz``: ``ok`` when the node answered 2xx."""

    ok: bool
    status: int
    body: Any = None
