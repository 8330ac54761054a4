"""The stand-in's provider limits: requests and tokens per rolling window, calls in flight, and the 429s they give."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from eco2_tools.standin.shapes import ApiError

TOKEN_WINDOW_SECONDS = 60.0


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: "1s", "250ms", "6m0s"."""
    if seconds < 1.0:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


@dataclass(frozen=True, slots=True)
class Window:
    """At most `limit` units within any `seconds` long stretch (a rolling window, not fixed buckets)."""

    limit: int
    seconds: float


def request_window(per_second: float, per_minute: int) -> Window | None:
    """The tighter of the two request limits as one rolling window; 0 means off.

    A fractional rate becomes one call per longer window (0.5/s = 1 per 2 s), so a rolling window still
    spreads calls evenly instead of rounding the limit down to zero.
    """
    windows: list[Window] = []
    if per_second > 0:
        seconds = max(1.0, 1.0 / per_second)
        windows.append(Window(max(1, math.floor(per_second * seconds)), seconds))
    if per_minute > 0:
        windows.append(Window(per_minute, 60.0))
    # Tightest = fewest calls per second it allows.
    return min(windows, key=lambda w: w.limit / w.seconds, default=None)


class _Rolling:
    """Admitted amounts with their times; what is older than the window no longer counts."""

    def __init__(self, window: Window, clock: Callable[[], float]) -> None:
        self.window = window
        self._clock = clock
        self._entries: deque[tuple[float, int]] = deque()
        self._used = 0

    def _expire(self, now: float) -> None:
        while self._entries and self._entries[0][0] <= now - self.window.seconds:
            self._used -= self._entries.popleft()[1]

    def clear(self) -> None:
        self._entries.clear()
        self._used = 0

    def remaining(self) -> int:
        self._expire(self._clock())
        return max(0, self.window.limit - self._used)

    def fits(self, amount: int) -> bool:
        # A single call larger than the whole limit is let through on an empty window, as a provider would.
        return self.remaining() >= amount or (self._used == 0 and amount > self.window.limit)

    def take(self, amount: int) -> None:
        now = self._clock()
        self._expire(now)
        self._entries.append((now, amount))
        self._used += amount

    def wait_seconds(self, amount: int) -> float:
        """How long until `amount` fits again (0 if it fits now)."""
        now = self._clock()
        self._expire(now)
        freed = self.window.limit - self._used
        for when, taken in self._entries:
            if freed >= amount:
                break
            freed += taken
            until = when + self.window.seconds - now
            if freed >= amount:
                return max(0.0, until)
        return 0.0 if freed >= amount else self.window.seconds

    def reset_seconds(self) -> float:
        """Until the window is whole again, as x-ratelimit-reset-* reports it."""
        now = self._clock()
        self._expire(now)
        return 0.0 if not self._entries else max(0.0, self._entries[-1][0] + self.window.seconds - now)


class ProviderLimits:
    """Admits or refuses each call before it is answered; refusals are the provider's 429 with its headers."""

    def __init__(
        self,
        *,
        requests_per_second: float = 0.0,
        requests_per_minute: int = 0,
        tokens_per_minute: int = 0,
        max_concurrent: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.in_flight = 0
        self._requests: _Rolling | None = None
        self._tokens: _Rolling | None = None
        self.max_concurrent = 0
        self.configure(requests_per_second, requests_per_minute, tokens_per_minute, max_concurrent)

    def configure(
        self, requests_per_second: float, requests_per_minute: int, tokens_per_minute: int, max_concurrent: int
    ) -> None:
        """New limits at run time; the calls already admitted keep counting against them."""
        window = request_window(requests_per_second, requests_per_minute)
        self._requests = self._carried(self._requests, window)
        tokens = Window(tokens_per_minute, TOKEN_WINDOW_SECONDS) if tokens_per_minute > 0 else None
        self._tokens = self._carried(self._tokens, tokens)
        self.max_concurrent = max_concurrent

    def _carried(self, old: _Rolling | None, window: Window | None) -> _Rolling | None:
        if window is None:
            return None
        new = _Rolling(window, self._clock)
        if old is not None:
            for when, amount in old._entries:
                new._entries.append((when, amount))
                new._used += amount
        return new

    def clear(self) -> None:
        """Forgets the calls counted so far (the calls in flight stay), so a run after a reset starts full."""
        for rolling in (self._requests, self._tokens):
            if rolling is not None:
                rolling.clear()

    def admit(self, tokens: int) -> None:
        """Counts the call in, or raises the 429 a provider would send."""
        if self._requests is not None and not self._requests.fits(1):
            raise self._refusal("requests", self._requests.wait_seconds(1))
        if self._tokens is not None and not self._tokens.fits(tokens):
            raise self._refusal("tokens", self._tokens.wait_seconds(tokens))
        if self.max_concurrent > 0 and self.in_flight >= self.max_concurrent:
            raise self._refusal("requests", 1.0, concurrent=True)
        if self._requests is not None:
            self._requests.take(1)
        if self._tokens is not None:
            self._tokens.take(tokens)
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    def headers(self) -> dict[str, str]:
        """The x-ratelimit-* headers of every reply, for the limits that are on."""
        headers: dict[str, str] = {}
        for name, rolling in (("requests", self._requests), ("tokens", self._tokens)):
            if rolling is None:
                continue
            headers[f"x-ratelimit-limit-{name}"] = str(rolling.window.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(rolling.remaining())
            headers[f"x-ratelimit-reset-{name}"] = duration(rolling.reset_seconds())
        return headers

    def _refusal(self, limit_type: str, wait: float, *, concurrent: bool = False) -> ApiError:
        # A floor of 1 ms so a client never reads "retry now" while the window is still full.
        wait = max(wait, 0.001)
        if concurrent:
            message = f"Rate limit reached for concurrent requests: limit {self.max_concurrent} (stand-in)."
        else:
            message = f"Rate limit reached for {limit_type} (stand-in). Please try again in {duration(wait)}."
        headers = {
            **self.headers(),
            "retry-after": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(math.ceil(wait * 1000)),
        }
        return ApiError(429, message, error_type=limit_type, code="rate_limit_exceeded", headers=headers)
