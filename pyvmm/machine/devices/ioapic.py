"""The I/O APIC at 0xFEC00000: 24 redirection entries that route interrupt pins to vectors
of the local APIC (fixed delivery, edge-triggered; one CPU). Registers are reached through
IOREGSEL (offset 0x00) and IOWIN (offset 0x10). ISA IRQ 0 arrives on pin 2 and the other
ISA IRQs on the pin of the same number, as the MP table says (see firmware.py)."""
BASE = 0xFEC00000
PINS = 24
VERSION = 0x00170011            # 24 entries (max index 23), version 0x11


class IOAPIC:
    name = "ioapic"

    def __init__(self, deliver):
        self.deliver = deliver          # callable(vector): to the local APIC
        self.select = 0
        self.id = 1 << 24
        self.redirection = [0x10000] * PINS     # masked

    def raise_pin(self, pin):
        entry = self.redirection[pin]
        if not entry & 0x10000 and (entry >> 8) & 7 == 0:      # unmasked, fixed delivery
            self.deliver(entry & 0xFF)

    def mmio_read(self, address, size):
        offset = (address - BASE) & 0xFF
        if offset == 0x00:
            return self.select
        if offset == 0x10:
            return self._read(self.select)
        return 0

    def _read(self, index):
        if index == 0x00:
            return self.id
        if index in (0x01, 0x02):
            return VERSION if index == 0x01 else self.id
        if 0x10 <= index < 0x10 + 2 * PINS:
            entry = self.redirection[(index - 0x10) >> 1]
            return entry & 0xFFFFFFFF if index % 2 == 0 else entry >> 32
        return 0

    def mmio_write(self, address, size, value):
        offset = (address - BASE) & 0xFF
        if offset == 0x00:
            self.select = value & 0xFF
        elif offset == 0x10:
            index = self.select
            if index == 0x00:
                self.id = value & 0x0F000000
            elif 0x10 <= index < 0x10 + 2 * PINS:
                pin = (index - 0x10) >> 1
                entry = self.redirection[pin]
                if index % 2 == 0:      # low half: delivery status and remote IRR read-only
                    entry = (entry & ~0xFFFFFFFF) | (value & 0x1AFFF) | (entry & 0x5000)
                else:
                    entry = (entry & 0xFFFFFFFF) | ((value & 0xFF000000) << 32)
                self.redirection[pin] = entry
