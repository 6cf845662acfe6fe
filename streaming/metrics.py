"""Prometheus metrics of this server process, served at /metrics."""

from prometheus_client import Counter, Gauge, Histogram

ACTIVE_CONNECTIONS = Gauge(
    "wordstream_active_connections", "WebSocket clients connected to this process"
)
DEPLOYMENT_CONNECTIONS = Gauge(
    "wordstream_deployment_connections",
    "WebSocket clients of the whole deployment, as this process's presence sees it",
)
WORDS_BROADCAST = Counter(
    "wordstream_words_broadcast", "Words fanned out to this process's clients"
)
FRAMES_SENT = Counter("wordstream_frames_sent", "Word frames sent to clients")
FRAMES_DROPPED = Counter(
    "wordstream_frames_dropped", "Word frames that could not be sent to a client"
)
FANOUT_SUBSCRIBERS = Gauge(
    "wordstream_fanout_subscribers", "Consumers in this process's word fan-out"
)
SSE_CLIENTS = Gauge("wordstream_sse_clients", "Open connection count event streams")
BROADCAST_DURATION = Histogram(
    "wordstream_broadcast_duration_seconds",
    "Time to send one word to every client of this process",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
)
