"""Failed-login throttling for the SFTP receiver.

After `max_failures` wrong logins for one username from one address, that pair is refused
without checking the password for a delay that doubles with each further failure (capped);
an address trying many usernames is throttled the same way at four times the threshold.
A success clears the pair. State lives in the receiver process: a restart forgets it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

ANY_USER = ""


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


@dataclass
class LoginThrottle:
    max_failures: int = 5
    base_delay: float = 5.0
    max_delay: float = 900.0
    forget_after: float = 3600.0
    _entries: dict[tuple[str, str], _Failures] = field(default_factory=dict)

    def blocked_for(self, username: str, address: str, now: float | None = None) -> float:
        """Seconds this login must still wait; 0 when it may be checked."""
        now = time.monotonic() if now is None else now
        keys = ((username, address), (ANY_USER, address))
        waits = [self._entries[k].blocked_until - now for k in keys if k in self._entries]
        return max([0.0, *waits])

    def failure(self, username: str, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._entries) > 10_000:
            self._forget(now)
        for key, threshold in (
            ((username, address), self.max_failures),
            ((ANY_USER, address), self.max_failures * 4),
        ):
            entry = self._entries.setdefault(key, _Failures())
            if now - entry.last > self.forget_after:
                entry.count = 0
            entry.count += 1
            entry.last = now
            if entry.count >= threshold:
                delay = self.base_delay * 2 ** min(entry.count - threshold, 16)
                entry.blocked_until = now + min(self.max_delay, delay)

    def success(self, username: str, address: str) -> None:
        self._entries.pop((username, address), None)

    def _forget(self, now: float) -> None:
        for key in [k for k, e in self._entries.items() if now - e.last > self.forget_after]:
            del self._entries[key]
