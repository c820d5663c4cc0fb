"""Adapters for the Legion and Thor prototypes' patterns, sent as they are.

Legion (Sessions 160-162) keeps ``VerificationPattern`` records with
``outcome_quality``, ``cogitation_mode`` (often an upper-case enum such as
``VERIFYING``), ``outcome_confidence`` and no ``node_id``; Thor (Session 181)
keeps ``DepthVerificationPattern`` records with ``depth_used`` as an enum
name (``DEEP``), ``quality_achieved``, ``reputation_before/after`` and a
``context``. Both may hand over a dict, a dataclass instance, an object with
``to_dict()``, an ``Enum`` member for the depth or mode, or a ``datetime``
timestamp. :func:`from_legion` / :func:`from_thor` turn any of these into a
unified pattern dict (the same rules as ``metamesh import --format
legion|thor``: ``platform`` defaults to ``legion``/``thor``, ``node_id`` to
the node name, unknown fields go under ``context`` on the node).

:class:`PrototypeSink` is the drop-in: give it to a prototype where it
stored patterns, and call ``sink.save(pattern)`` / ``sink.save_many(patterns)``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
from typing import Any, Dict, Iterable, List, Mapping, Optional

from .errors import InvalidPattern
from .types import DEPTHS, Submitted


def _plain(value: Any) -> Any:
    """JSON-ready form of a prototype value (enums, datetimes, dataclasses, tuples)."""
    if isinstance(value, enum.Enum):
        v = value.value
        # Enums whose values are numbers (auto()) are named by their names.
        return value.name if not isinstance(v, str) else v
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.timestamp()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return value


def _as_dict(pattern: Any) -> Dict[str, Any]:
    if isinstance(pattern, Mapping):
        d = pattern
    elif dataclasses.is_dataclass(pattern) and not isinstance(pattern, type):
        d = {f.name: getattr(pattern, f.name) for f in dataclasses.fields(pattern)}
    elif callable(getattr(pattern, "to_dict", None)):
        d = pattern.to_dict()
    elif hasattr(pattern, "__dict__"):
        d = {k: v for k, v in vars(pattern).items() if not k.startswith("_")}
    else:
        raise InvalidPattern(
            f"a prototype pattern must be a dict, a dataclass or have to_dict(), got {type(pattern).__name__}",
            "pattern",
        )
    out = _plain(d)
    if not isinstance(out, dict):
        raise InvalidPattern("a prototype pattern must convert to a JSON object", "pattern")
    # An unset optional field (None) is left out, so defaults apply.
    return {k: v for k, v in out.items() if v is not None}


def _depth(d: Dict[str, Any]) -> None:
    raw = d.get("depth_used")
    if isinstance(raw, str):
        name = raw.strip().rsplit(".", 1)[-1].lower()  # "VerificationDepth.DEEP" -> "deep"
        if name not in DEPTHS:
            raise InvalidPattern(
                f"depth_used: unknown depth {raw!r} (one of {', '.join(DEPTHS)})", "depth_used"
            )
        d["depth_used"] = name


def from_legion(pattern: Any, node_id: str = "legion") -> Dict[str, Any]:
    """A Legion ``VerificationPattern`` (dict, dataclass, object) as a unified pattern dict."""
    d = _as_dict(pattern)
    if "quality_achieved" not in d and "outcome_quality" in d:
        d["quality_achieved"] = d.pop("outcome_quality")
    mode = d.get("cogitation_mode")
    if isinstance(mode, str):
        d["cogitation_mode"] = mode.rsplit(".", 1)[-1]
    d.setdefault("node_id", node_id)
    d.setdefault("platform", "legion")
    _depth(d)
    return d


def from_thor(pattern: Any, node_id: str = "thor") -> Dict[str, Any]:
    """A Thor ``DepthVerificationPattern`` (dict, dataclass, object) as a unified pattern dict."""
    d = _as_dict(pattern)
    if "quality_achieved" not in d and "quality" in d:
        d["quality_achieved"] = d.pop("quality")
    d.setdefault("node_id", node_id)
    d.setdefault("platform", "thor")
    _depth(d)
    return d


def from_prototype(pattern: Any, node_id: Optional[str] = None) -> Dict[str, Any]:
    """Either prototype's pattern, told apart by its fields (Legion has
    ``outcome_quality``/``cogitation_mode``, Thor ``quality_achieved`` with an
    upper-case depth or ``reputation_before``)."""
    d = _as_dict(pattern)
    legion = "outcome_quality" in d or ("cogitation_mode" in d and "quality_achieved" not in d)
    if legion:
        return from_legion(d, node_id or "legion")
    return from_thor(d, node_id or "thor")


class PrototypeSink:
    """Where a Legion- or Thor-style prototype sends its patterns.

    ``PrototypeSink(client, "legion")`` (or ``"thor"``, or ``"auto"`` to tell
    each pattern apart); ``node_id`` is the node name kept in the patterns
    (the prototype's LCT id, say), defaulting to the platform name.
    """

    def __init__(self, client: Any, platform: str = "auto", node_id: Optional[str] = None):
        if platform not in ("legion", "thor", "auto"):
            raise ValueError("platform must be legion, thor or auto")
        self.client = client
        self.platform = platform
        self.node_id = node_id

    def convert(self, pattern: Any) -> Dict[str, Any]:
        if self.platform == "legion":
            return from_legion(pattern, self.node_id or "legion")
        if self.platform == "thor":
            return from_thor(pattern, self.node_id or "thor")
        return from_prototype(pattern, self.node_id)

    def save(self, pattern: Any) -> Submitted:
        """Record one prototype pattern on the node."""
        return self.client.record(self.convert(pattern))

    def save_many(self, patterns: Iterable[Any]) -> List[Submitted]:
        """Record many (batched; see ``Client.record_many``)."""
        return self.client.record_many(self.convert(p) for p in patterns)

    # The prototypes' own method names.
    add_pattern = save
    record_pattern = save
    save_patterns = save_many
