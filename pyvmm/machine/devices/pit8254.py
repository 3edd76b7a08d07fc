"""The 8254 programmable interval timer: channel 0, wired to IRQ 0.

Time is the machine's clock (`pyvmm.machine.clock`) in ticks of 1/GUEST_HZ seconds — by
default one tick per guest instruction, so the PIT's 1.193182 MHz input advances by
PIT_HZ / GUEST_HZ per instruction, the same in every run. Modes 2 (rate generator) and 3 (square wave) fire IRQ 0
every `reload` ticks; mode 0 (interrupt on terminal count) fires once. Channels 1 and 2
accept programming and read back their reload value, but drive nothing.
"""
from ..clock import GUEST_HZ

PIT_HZ = 1_193_182


class PIT8254:
    name = "pit8254"
    io_size = 1

    def __init__(self, clock, fire_irq0, rescheduled=lambda: None):
        self.clock = clock              # callable() -> guest time now, in clock ticks
        self.fire_irq0 = fire_irq0
        self.rescheduled = rescheduled  # called when next_event() changes under a running CPU
        self.reload = [0x10000, 0x10000, 0x10000]
        self.mode = [0, 0, 0]
        self.access = [3, 3, 3]         # 1: LSB, 2: MSB, 3: LSB then MSB
        self.write_low = [True, True, True]
        self.read_low = [True, True, True]
        self.latched = [None, None, None]
        self.partial = [0, 0, 0]
        self.start = 0                  # tick at which channel 0 was (re)loaded
        self.next_fire = None           # tick of channel 0's next IRQ 0, or None

    # -- time --------------------------------------------------------------------------------
    def ticks(self, now):
        return now * PIT_HZ // GUEST_HZ

    def next_event(self):
        """The guest time (clock ticks) at which IRQ 0 fires next, or None."""
        if self.next_fire is None:
            return None
        return -(-self.next_fire * GUEST_HZ // PIT_HZ)     # ceil: first icount at that tick

    def advance(self, now):
        """Fire every IRQ 0 due by guest time `now`."""
        now = self.ticks(now)
        while self.next_fire is not None and self.next_fire <= now:
            self.fire_irq0()
            if self.mode[0] in (2, 3):
                self.next_fire += self.reload[0]
            else:
                self.next_fire = None

    def _count(self, channel):
        if channel != 0 or self.mode[0] not in (0, 2, 3):
            return self.reload[channel] & 0xFFFF
        elapsed = self.ticks(self.clock()) - self.start
        if self.mode[0] == 0:
            return max(self.reload[0] - elapsed, 0) & 0xFFFF
        return (self.reload[0] - elapsed % self.reload[0]) & 0xFFFF

    # -- ports 0x40-0x43 ----------------------------------------------------------------------
    def io_read(self, port, size):
        channel = port - 0x40
        if channel == 3:
            return 0xFF
        value = self.latched[channel] if self.latched[channel] is not None else self._count(channel)
        access = self.access[channel]
        if access == 1:
            out = value & 0xFF
        elif access == 2:
            out = value >> 8
        else:
            out = value & 0xFF if self.read_low[channel] else value >> 8
            self.read_low[channel] = not self.read_low[channel]
            if self.read_low[channel]:
                self.latched[channel] = None
            return out
        self.latched[channel] = None
        return out

    def io_write(self, port, size, value):
        value &= 0xFF
        channel = port - 0x40
        if channel == 3:                            # control word
            sc, rw, mode = value >> 6, (value >> 4) & 3, (value >> 1) & 7
            if sc == 3:                             # read-back: latch the counts asked for
                for c in range(3):
                    if value & (2 << c) and not value & 0x20:
                        self.latched[c] = self._count(c)
                return
            if rw == 0:                             # counter latch command
                self.latched[sc] = self._count(sc)
                return
            self.access[sc] = rw
            self.mode[sc] = mode if mode < 6 else mode - 4      # 6, 7 are 2, 3
            self.write_low[sc] = self.read_low[sc] = True
            if sc == 0:
                self.next_fire = None               # stopped until a count is written
            return
        access = self.access[channel]
        if access == 3 and self.write_low[channel]:
            self.partial[channel] = value
            self.write_low[channel] = False
            return
        if access == 1:
            count = value
        elif access == 2:
            count = value << 8
        else:
            count = self.partial[channel] | (value << 8)
            self.write_low[channel] = True
        self.reload[channel] = count or 0x10000
        if channel == 0:
            self.start = self.ticks(self.clock())
            self.next_fire = self.start + self.reload[0]
            self.rescheduled()
