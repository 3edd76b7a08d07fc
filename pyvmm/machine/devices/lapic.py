"""The local APIC at 0xFEE00000 (memory-mapped): ID, version, TPR/PPR, EOI, the spurious-
vector register, IRR/ISR, the LVT timer (one-shot and periodic, with its divider) and the
ICR for self-IPIs. Interrupts it accepts are presented to the CPU ahead of the 8259A's.

Its timer counts guest time like every device here (the machine's clock: by default one tick
per instruction at the nominal GUEST_HZ), divided by the divide-configuration register.
"""
BASE = 0xFEE00000
VERSION = 0x00050014            # version 0x14 (integrated APIC), 6 LVT entries
DIVIDERS = {0b0000: 2, 0b0001: 4, 0b0010: 8, 0b0011: 16, 0b1000: 32, 0b1001: 64,
            0b1010: 128, 0b1011: 1}


class LocalAPIC:
    name = "lapic"

    def __init__(self, clock, on_change, rescheduled=lambda: None):
        self.clock = clock              # callable() -> guest time in clock ticks
        self.on_change = on_change      # the CPU's INTR may have changed
        self.rescheduled = rescheduled  # the timer's next event changed under a running CPU
        self.tpr = 0
        self.svr = 0xFF                 # software-disabled until bit 8 is set
        self.irr = 0                    # 256-bit request and in-service sets, as ints
        self.isr = 0
        self.lvt = {0x320: 0x10000, 0x330: 0x10000, 0x340: 0x10000, 0x350: 0x10000,
                    0x360: 0x10000, 0x370: 0x10000}     # all masked
        self.icr = 0
        self.icr_high = 0
        self.ldr = 0
        self.dfr = 0xFFFFFFFF
        self.divide = 0
        self.initial = 0
        self.start = 0                  # guest time when the count was loaded
        self.deadline = None            # guest time of the next timer interrupt

    # -- interrupts ---------------------------------------------------------------------
    def enabled(self):
        return bool(self.svr & 0x100)

    def accept(self, vector):
        if vector >= 16:
            self.irr |= 1 << vector
            self.on_change()

    def _highest(self, bits):
        return bits.bit_length() - 1 if bits else -1

    def ppr(self):
        isr_class = max(self._highest(self.isr), 0) & 0xF0
        return self.tpr if (self.tpr & 0xF0) >= isr_class else isr_class

    def pending(self):
        """The vector the APIC would present now, or -1."""
        if not self.enabled():
            return -1
        vector = self._highest(self.irr)
        if vector >= 0 and (vector & 0xF0) > (self.ppr() & 0xF0):
            return vector
        return -1

    def acknowledge(self):
        vector = self.pending()
        if vector < 0:
            return self.svr & 0xFF                      # spurious
        self.irr &= ~(1 << vector)
        self.isr |= 1 << vector
        self.on_change()
        return vector

    # -- the timer ----------------------------------------------------------------------
    def _period(self):
        return self.initial * DIVIDERS[self.divide & 0b1011]

    def next_event(self):
        return self.deadline

    def advance(self, now):
        while self.deadline is not None and self.deadline <= now:
            lvt = self.lvt[0x320]
            if not lvt & 0x10000:
                self.accept(lvt & 0xFF)
            if lvt & 0x20000 and self._period():        # periodic
                self.start = self.deadline
                self.deadline += self._period()
            else:
                self.deadline = None

    def current_count(self):
        if self.deadline is None or not self._period():
            return 0
        elapsed = self.clock() - self.start
        return max(self.initial - elapsed // DIVIDERS[self.divide & 0b1011], 0)

    # -- registers ------------------------------------------------------------------------
    def mmio_read(self, address, size):
        reg = (address - BASE) & 0xFF0
        shift = 8 * (address & 3)
        return (self._read(reg) >> shift) & ((1 << (8 * size)) - 1)

    def _read(self, reg):
        if reg == 0x20:
            return 0                                    # APIC ID 0
        if reg == 0x30:
            return VERSION
        if reg == 0x80:
            return self.tpr
        if reg == 0xA0:
            return self.ppr()
        if reg == 0xD0:
            return self.ldr
        if reg == 0xE0:
            return self.dfr
        if reg == 0xF0:
            return self.svr
        if 0x100 <= reg < 0x180:
            return (self.isr >> (32 * ((reg - 0x100) >> 4))) & 0xFFFFFFFF
        if 0x200 <= reg < 0x280:
            return (self.irr >> (32 * ((reg - 0x200) >> 4))) & 0xFFFFFFFF
        if reg == 0x300:
            return self.icr
        if reg == 0x310:
            return self.icr_high
        if reg in self.lvt:
            return self.lvt[reg]
        if reg == 0x380:
            return self.initial
        if reg == 0x390:
            return self.current_count()
        if reg == 0x3E0:
            return self.divide
        return 0

    def mmio_write(self, address, size, value):
        reg = (address - BASE) & 0xFF0
        if reg == 0x80:
            self.tpr = value & 0xFF
            self.on_change()
        elif reg == 0xB0:                               # EOI: the highest in service is done
            top = self._highest(self.isr)
            if top >= 0:
                self.isr &= ~(1 << top)
                self.on_change()
        elif reg == 0xD0:
            self.ldr = value & 0xFF000000
        elif reg == 0xE0:
            self.dfr = value | 0x0FFFFFFF
        elif reg == 0xF0:
            self.svr = value & 0x1FF
            self.on_change()
        elif reg == 0x300:
            self.icr = value & ~0x1000                  # delivery is instantaneous: not busy
            shorthand = (value >> 18) & 3
            if (value >> 8) & 7 == 0 and (shorthand == 1 or (shorthand == 0 and self.icr_high >> 24 == 0)):
                self.accept(value & 0xFF)               # a fixed IPI to ourselves
        elif reg == 0x310:
            self.icr_high = value & 0xFF000000
        elif reg in self.lvt:
            self.lvt[reg] = value & 0x3FFFF
        elif reg == 0x380:                              # initial count: (re)start the timer
            self.initial = value
            self.start = self.clock()
            self.deadline = self.start + self._period() if self._period() else None
            self.rescheduled()
        elif reg == 0x3E0:
            self.divide = value & 0b1011
