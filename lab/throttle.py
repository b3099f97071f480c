"""Password guessing, slowed (ROBUSTNESS.md F21): one throttle for every password form of the lab (the MDM's
sign-in, the organization's IdP, Apple's Managed Apple Account sign-in).

After ``after`` wrong passwords in a row for one account, each further try waits ``seconds`` (the form answers 429
with Retry-After), the right password included; a right password clears the count. Kept in memory, bounded: a
restart forgets, and the oldest accounts are forgotten first.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

AFTER = 5
SECONDS = 60
ACCOUNTS = 10_000


@dataclass(frozen=True)
class Attempt:
    ok: bool  # the password was right
    wait: int = 0  # > 0: throttled, the password was not even checked; seconds until the next try


class Throttle:
    def __init__(self, clock: Callable[[], float] = time.time, *, after: int = AFTER, seconds: int = SECONDS,
                 accounts: int = ACCOUNTS):
        self.clock, self.after, self.seconds, self.accounts = clock, after, seconds, accounts
        self._state: OrderedDict[str, tuple[int, float]] = OrderedDict()  # account → (failures, locked until)
        self._lock = threading.Lock()

    def wait(self, identifier: str) -> int:
        """Seconds the account must wait before its next try (0: go ahead)."""
        with self._lock:
            _, until = self._state.get(identifier.lower(), (0, 0.0))
        return max(0, int(until - self.clock() + 0.999))

    def failed(self, identifier: str) -> None:
        key = identifier.lower()
        with self._lock:
            failures, _ = self._state.pop(key, (0, 0.0))
            failures += 1
            self._state[key] = (failures, self.clock() + self.seconds if failures >= self.after else 0.0)
            while len(self._state) > self.accounts:
                self._state.popitem(last=False)

    def succeeded(self, identifier: str) -> None:
        with self._lock:
            self._state.pop(identifier.lower(), None)

    def attempt(self, identifier: str, verify: Callable[[], bool]) -> Attempt:
        """One try at a password form: throttled (``verify`` not called), right, or wrong (counted)."""
        wait = self.wait(identifier)
        if wait:
            return Attempt(False, wait)
        if verify():
            self.succeeded(identifier)
            return Attempt(True)
        self.failed(identifier)
        return Attempt(False)

    def summary(self, identifier: str, wait: int) -> str:
        """The timeline's words for a throttled try."""
        return (f"sign-in throttled for {identifier}: {self.after} wrong passwords in a row; 429, retry after "
                f"{wait} s")


def too_many(wait: int) -> str:
    """What a password form shows a throttled person."""
    return f"Too many attempts. Try again in {wait} seconds."
