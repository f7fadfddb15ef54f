"""Bounded quoting of untrusted values in reasons: a reason never grows with its input.

A rejection's reason goes to a log line, a metric-free header of the dead letter and the
operator's eyes; the value it quotes comes from a producer and can be megabytes long.

>>> quote("teleport")
"'teleport'"
>>> quote("x" * 1000, limit=10)
"'xxxxxxxxx...' (1000 chars)"
>>> len(quote("x" * 10**6)) < 230, len(clip("y" * 5000)), clip("short")
(True, 1021, 'short')
"""

from __future__ import annotations

from typing import Final

# Characters of an offending value a reason quotes, and the longest reason text.
QUOTE_CHARS: Final = 200
REASON_CHARS: Final = 1000


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` when short; else its first characters and the full length."""
    # Only the head of a long string is rendered: repr of megabytes costs megabytes.
    sliced = value[: limit + 1] if isinstance(value, str | bytes) else value
    text = repr(sliced)
    if len(text) <= limit:
        return text
    length = len(value) if isinstance(value, str | bytes) else len(text)
    return f"{text[:limit]}...{text[0]} ({length} chars)"


def clip(reason: str, limit: int = REASON_CHARS) -> str:
    """``reason`` cut to ``limit`` characters, saying how much was cut."""
    if len(reason) <= limit:
        return reason
    return f"{reason[:limit]} ...({len(reason) - limit} more chars)"
