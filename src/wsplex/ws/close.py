"""WebSocket close codes (RFC 6455 §7.4) and the rules for using them."""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Close codes this server sends or recognises (RFC 6455 §7.4.1, IANA registry)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never on the wire: "the peer sent no code"
    ABNORMAL = 1006  # never on the wire: "the connection dropped"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


#: Codes a peer may put in a close frame (RFC 6455 §7.4.1, §7.4.2): the registered
#: 1000-1014 except the three reserved for local use, plus 3000-4999 for libraries
#: and applications. Anything else is a protocol error.
_SENDABLE_RESERVED = frozenset(
    code for code in range(1000, 1015) if code not in (1004, 1005, 1006)
)

#: RFC 6455 §5.5: a control frame payload is at most 125 bytes, two of them the code.
MAX_REASON_BYTES = 123


def is_valid_close_code(code: int) -> bool:
    """True when ``code`` may appear in a close frame (RFC 6455 §7.4)."""
    return code in _SENDABLE_RESERVED or 3000 <= code <= 4999


def truncate_reason(reason: str) -> str:
    """Cut ``reason`` to fit a close frame without splitting a UTF-8 sequence."""
    encoded = reason.encode()
    if len(encoded) <= MAX_REASON_BYTES:
        return reason
    return encoded[:MAX_REASON_BYTES].decode(errors="ignore")
