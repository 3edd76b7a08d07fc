"""Guest time. Every device clock (the PIT, the local APIC timer, the CMOS clock) reads the
machine's clock in *ticks* of 1/GUEST_HZ seconds, GUEST_HZ being the nominal rate at which
the guest runs instructions.

By default a tick is one guest instruction (`InstructionClock`): a run sees its timer
interrupts at the same instructions every time, whatever the host's speed, so traces and
counts are reproducible. `--realtime` swaps in `HostClock`, which ties the ticks to the
host's clock instead (a guest's 10 ms tick then takes 10 ms of wall time, however fast or
slow the core runs); runs are then no longer deterministic.
"""
import datetime
import time

GUEST_HZ = 100_000_000          # nominal guest instructions per second
EPOCH = datetime.datetime(2026, 1, 1, 0, 0, 0)     # the CMOS date at power-on (deterministic)


class InstructionClock:
    """Guest time is the instruction count: deterministic."""
    realtime = False

    def __init__(self, cpu):
        self.cpu = cpu
        self.epoch = EPOCH

    def now(self):
        return self.cpu.icount

    def seconds(self):
        return self.cpu.icount / GUEST_HZ

    def slice_end(self, deadline, budget):
        """How far (in instructions) the CPU may run before the next device event."""
        return budget if deadline is None else min(budget, deadline)

    def wait(self, deadline):
        """A halted CPU lets time pass: jump straight to the next event."""
        self.cpu.icount = max(self.cpu.icount, deadline)


class HostClock:
    """Guest time follows the host's monotonic clock (`--realtime`)."""
    realtime = True
    SLICE = 20_000              # instructions between looks at the host clock (~0.2 ms)

    def __init__(self, cpu):
        self.cpu = cpu
        self.t0 = time.perf_counter()
        self.base = cpu.icount
        self.epoch = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)

    def now(self):
        return self.base + int((time.perf_counter() - self.t0) * GUEST_HZ)

    def seconds(self):
        return time.perf_counter() - self.t0

    def slice_end(self, deadline, budget):
        return min(budget, self.cpu.icount + self.SLICE)

    def wait(self, deadline):
        """A halted CPU sleeps until the host clock reaches the next event."""
        delay = (deadline - self.now()) / GUEST_HZ
        if delay > 0:
            time.sleep(delay)
