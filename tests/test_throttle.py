"""lab.throttle: the one password throttle of the MDM's sign-in, the IdP and Apple's sign-in."""
from __future__ import annotations

from lab.throttle import Throttle


class Clock:
    now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_throttled_try_is_not_even_checked_and_the_wait_runs_out():
    clock, checked = Clock(), []
    throttle = Throttle(clock, after=2, seconds=30)
    assert [throttle.attempt("A@x.test", lambda: False).ok for _ in range(2)] == [False, False]
    attempt = throttle.attempt("a@x.test", lambda: checked.append(1) or True)  # names are case-insensitive
    assert (attempt.ok, attempt.wait, checked) == (False, 30, [])
    clock.now += 30
    assert throttle.attempt("a@x.test", lambda: True).ok and throttle.wait("a@x.test") == 0


def test_it_remembers_a_bounded_number_of_accounts():
    throttle = Throttle(Clock(), after=1, seconds=30, accounts=3)
    for n in range(5):
        throttle.failed(f"u{n}@x.test")
    assert throttle.wait("u0@x.test") == 0 and throttle.wait("u4@x.test") == 30
