"""Counting VMM entries by reason, with the host time the VMM spent on each."""
import time
from collections import Counter


class ExitStats:
    def __init__(self):
        self.count = Counter()
        self.seconds = Counter()
        self.current = None             # the Timer of the entry being handled, if any

    def add(self, reason, seconds):
        self.count[reason] += 1
        self.seconds[reason] += seconds

    def add_nested(self, reason, seconds):
        """A second VMM entry met while handling one (a hidden fault while injecting an
        event): counted with its own time, which the entry around it then does not count."""
        self.add(reason, seconds)
        if self.current is not None:
            self.current.t0 += seconds

    @property
    def total(self):
        return sum(self.count.values())

    @property
    def total_seconds(self):
        return sum(self.seconds.values())

    def snapshot(self):
        return Counter(self.count)

    def table(self):
        """(reason, count, seconds) rows, most frequent first."""
        return [(r, n, self.seconds[r]) for r, n in self.count.most_common()]


class Timer:
    """`with stats.timed(reason):` counts one VMM entry and the host time spent in it."""
    __slots__ = ("stats", "reason", "t0", "outer")      # `reason` may be changed inside the block

    def __init__(self, stats, reason):
        self.stats, self.reason = stats, reason

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.outer, self.stats.current = self.stats.current, self
        return self

    def __exit__(self, *exc):
        self.stats.current = self.outer
        self.stats.add(self.reason, time.perf_counter() - self.t0)
        return False
