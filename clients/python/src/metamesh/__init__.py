"""Python client for the metamesh node's local HTTP API.

    from metamesh import Client
    c = Client.from_data_dir("~/.local/share/metamesh")   # or Client("http://127.0.0.1:PORT")
    c.record(depth_used="deep", quality_achieved=0.9, success=True, atp_before=120, atp_after=100)
    print(c.insights().learned_preferences.optimal_quality_depth)

See docs/python-client.md in the repository.
"""

from .adapters import PrototypeSink, from_legion, from_prototype, from_thor
from .client import MAX_BODY_BYTES, MAX_PATTERNS_PER_POST, Client, default_data_dir, parse_metrics
from .errors import (
    ApiError,
    BadRequest,
    Forbidden,
    InvalidPattern,
    MetameshError,
    MethodNotAllowed,
    MisdirectedRequest,
    NodeUnreachable,
    NotFound,
    NotImplementedByNode,
    PayloadTooLarge,
    RequestTimeout,
    ServerError,
    Unavailable,
    UnsupportedMediaType,
    Unprocessable,
)
from .events import EventStream, EventTimeout
from .types import (
    DEPTHS,
    Contributor,
    DepthPerformance,
    Event,
    ExcludedOrigin,
    Health,
    HeldInsight,
    Insight,
    Insights,
    Knowledge,
    LearnedPreferences,
    Metrics,
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

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "BadRequest",
    "Client",
    "Contributor",
    "DEPTHS",
    "DepthPerformance",
    "Event",
    "EventStream",
    "EventTimeout",
    "ExcludedOrigin",
    "Forbidden",
    "Health",
    "HeldInsight",
    "Insight",
    "Insights",
    "InvalidPattern",
    "Knowledge",
    "LearnedPreferences",
    "MAX_BODY_BYTES",
    "MAX_PATTERNS_PER_POST",
    "MetameshError",
    "MethodNotAllowed",
    "Metrics",
    "MisdirectedRequest",
    "NodeInfo",
    "NodeUnreachable",
    "NotFound",
    "NotImplementedByNode",
    "Pattern",
    "PatternPage",
    "PayloadTooLarge",
    "Peer",
    "PrototypeSink",
    "Recommendation",
    "Reputation",
    "RequestTimeout",
    "ServerError",
    "Stats",
    "StoredPattern",
    "Submitted",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "default_data_dir",
    "from_legion",
    "from_prototype",
    "from_thor",
    "parse_metrics",
]
