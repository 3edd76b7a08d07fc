"""The CMOS RTC (MC146818) at ports 0x70 (index) and 0x71 (data): a read-only clock and the
memory-size bytes a PC BIOS leaves there.

The clock starts at the machine clock's epoch and advances with guest time: by default a
fixed date and the instruction count at the nominal rate, so a run reads the same times
every time; under `--realtime`, the host's UTC time and clock. Values are BCD unless the
guest sets status register B's binary bit; 24-hour mode. Writes to the clock are ignored.
"""
import datetime

from ..clock import EPOCH


class CMOS:
    name = "cmos"
    io_size = 1

    def __init__(self, clock_seconds, memory_size, epoch=EPOCH):
        self.clock_seconds = clock_seconds      # callable() -> guest seconds since power-on
        self.epoch = epoch
        self.index = 0
        self.status_b = 0x02                    # 24-hour, BCD
        self.ram = bytearray(128)
        base_kib = 640
        ext_kib = min((memory_size - (1 << 20)) >> 10, 0xFFFF)
        above_16m = max(memory_size - (16 << 20), 0) >> 16
        self.ram[0x15:0x17] = base_kib.to_bytes(2, "little")
        self.ram[0x17:0x19] = ext_kib.to_bytes(2, "little")
        self.ram[0x30:0x32] = ext_kib.to_bytes(2, "little")
        self.ram[0x34:0x36] = min(above_16m, 0xFFFF).to_bytes(2, "little")

    def now(self):
        return self.epoch + datetime.timedelta(seconds=int(self.clock_seconds()))

    def _value(self, v):
        return v if self.status_b & 0x04 else ((v // 10) << 4) | (v % 10)

    def io_read(self, port, size):
        if port == 0x70:
            return 0xFF
        i = self.index
        t = self.now()
        fields = {0x00: t.second, 0x02: t.minute, 0x04: t.hour, 0x06: t.isoweekday() % 7 + 1,
                  0x07: t.day, 0x08: t.month, 0x09: t.year % 100, 0x32: t.year // 100}
        if i in fields:
            return self._value(fields[i])
        if i in (0x01, 0x03, 0x05):
            return 0                            # alarms
        if i == 0x0A:
            return 0x26                         # 32.768 kHz time base, 1 kHz rate; no update in progress
        if i == 0x0B:
            return self.status_b
        if i == 0x0C:
            return 0
        if i == 0x0D:
            return 0x80                         # RAM and time valid
        return self.ram[i]

    def io_write(self, port, size, value):
        if port == 0x70:
            self.index = value & 0x7F           # bit 7 is the NMI mask
        elif self.index == 0x0B:
            self.status_b = (value & 0x06) | 0x02 if value & 0x02 else value & 0x06
        elif self.index >= 0x0E:
            self.ram[self.index] = value & 0xFF     # general-purpose CMOS RAM
