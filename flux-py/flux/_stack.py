"""Limits nested in one call: check all, then charge.

Stacked ``@rate_limit`` decorators, and an app-wide middleware around a
decorated view, are independent limits, each charged when it admits the
call. When an inner one then refuses, the call does not happen, so the outer
ones give their charge back (the core's refund): a refusal anywhere leaves
no limit charged.

An outer limit opens a :class:`Frame` around what it wraps; an inner limit
finds it through a context variable (which follows the call into threads
and tasks the framework runs it in) and writes into it: that it refused,
and the ``remaining`` of the headers it put on the response, so that the
response reports the limit closest to refusing without reading its headers
back.
"""

from __future__ import annotations

from contextvars import ContextVar, Token


class Frame:
    """What the limits inside one outer limit said about the call."""

    __slots__ = ("refused", "remaining")

    def __init__(self) -> None:
        #: An inner limit refused the call.
        self.refused = False
        #: ``X-RateLimit-Remaining`` of the headers an inner limit set, if any.
        self.remaining: int | None = None


#: Whether any view has a limit of its own (a decorator): only then does an
#: app-wide limit open a frame around the request.
inner_limits = False

#: The frame of the innermost outer limit of the call running now.
current: ContextVar[Frame | None] = ContextVar("flux_frame", default=None)


def open_frame() -> tuple[Frame | None, Token[Frame | None] | None]:
    """A frame made current for what an app-wide limit wraps, and the token
    that closes it; none while no view has a limit of its own."""
    if not inner_limits:
        return None, None
    frame = Frame()
    return frame, current.set(frame)


def refused() -> None:
    """Tells the enclosing limit, if any, that the call was refused."""
    frame = current.get()
    if frame is not None:
        frame.refused = True


def reported(remaining: int) -> None:
    """Tells the enclosing limit, if any, that the response now carries
    headers saying ``remaining``."""
    frame = current.get()
    if frame is not None and (frame.remaining is None or remaining < frame.remaining):
        frame.remaining = remaining


def keeps_inner(frame: Frame, remaining: int) -> bool:
    """Whether the headers an inner limit set stay: they report the limit
    closest to refusing when they have no more remaining than ours."""
    return frame.remaining is not None and frame.remaining <= remaining
