"""WebSocket close codes the server sends or records (RFC 6455, section 7.4.1)."""

from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL_CLOSURE = 1000
    # The server is shutting down.
    GOING_AWAY = 1001
    # The client broke a rule of the stream, such as the message rate.
    POLICY_VIOLATION = 1008
    # The client reads too slowly: its backlog of unsent frames is full.
    TRY_AGAIN_LATER = 1013
    # Recorded, never sent: the connection ended without a close frame.
    ABNORMAL_CLOSURE = 1006
