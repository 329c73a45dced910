"""Circuit breaker state machine, on a clock the test moves."""

from edgeswitch.cloud.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_opens_after_k_consecutive_failures_only():
    b = CircuitBreaker(failures=3, reset_s=10, clock=Clock())
    b.failure(), b.failure(), b.success(), b.failure(), b.failure()
    assert b.state == CLOSED  # the success reset the count
    b.failure()
    assert b.state == OPEN and not b.allow()


def test_half_open_lets_one_probe_and_closes_on_success():
    clock = Clock()
    b = CircuitBreaker(failures=1, reset_s=5, clock=clock)
    b.failure()
    clock.t = 4.9
    assert not b.allow()
    clock.t = 5.0
    assert b.state == HALF_OPEN
    assert b.allow() and not b.allow()  # one probe at a time
    b.success()
    assert b.state == CLOSED and b.allow()
    assert [s for _, s in b.transitions] == [OPEN, HALF_OPEN, CLOSED]


def test_failed_probe_reopens_and_restarts_the_timer():
    clock = Clock()
    b = CircuitBreaker(failures=1, reset_s=5, clock=clock)
    b.failure()
    clock.t = 6
    assert b.allow()
    b.failure()
    assert b.state == OPEN
    clock.t = 10  # 4 s after the failed probe: still open
    assert not b.allow()
    clock.t = 11
    assert b.allow()
