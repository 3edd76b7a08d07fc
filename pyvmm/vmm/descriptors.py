"""Segment and gate descriptors as the VMM reads them from the guest's tables (Intel SDM
Vol. 3, 3.4.5 and 6.11), and the ring-compressed form the VMM loads into the hardware."""
from dataclasses import dataclass
import struct

# attribute bits: descriptor bits 8-23 of the high dword, as CPU.get_segment returns them
A_ACCESSED = 0x100
A_WRITABLE = 0x200          # data: writable; code: readable
A_EXPAND_DOWN = 0x400       # data: expand-down; code: conforming
A_CODE = 0x800
A_S = 0x1000                # code or data (not a system descriptor)
A_DPL = 0x6000
A_P = 0x8000
A_DB = 0x400000
A_G = 0x800000

GATE_INTERRUPT32 = 0xE
GATE_TRAP32 = 0xF
TSS32_AVAILABLE = 0x9
TSS32_BUSY = 0xB
LDT = 0x2


@dataclass(frozen=True)
class Descriptor:
    lo: int
    hi: int

    @classmethod
    def unpack(cls, raw):
        lo, hi = struct.unpack("<II", raw)
        return cls(lo, hi)

    @property
    def base(self):
        return (self.lo >> 16) | ((self.hi & 0xFF) << 16) | (self.hi & 0xFF000000)

    @property
    def limit(self):
        raw = (self.lo & 0xFFFF) | (self.hi & 0xF0000)
        return (raw << 12) | 0xFFF if self.hi & A_G else raw

    @property
    def attr(self):
        return self.hi & 0x00F0FF00

    @property
    def type(self):
        return (self.hi >> 8) & 0xF

    @property
    def system(self):
        return not self.hi & A_S

    @property
    def code(self):
        return not self.system and bool(self.hi & A_CODE)

    @property
    def data(self):
        return not self.system and not self.hi & A_CODE

    @property
    def conforming(self):
        return self.code and bool(self.hi & A_EXPAND_DOWN)

    @property
    def readable(self):
        return self.data or bool(self.hi & A_WRITABLE)

    @property
    def writable(self):
        return self.data and bool(self.hi & A_WRITABLE)

    @property
    def dpl(self):
        return (self.hi >> 13) & 3

    @property
    def present(self):
        return bool(self.hi & A_P)

    # gates
    @property
    def gate_offset(self):
        return (self.lo & 0xFFFF) | (self.hi & 0xFFFF0000)

    @property
    def gate_selector(self):
        return self.lo >> 16

    def with_hi(self, hi):
        return Descriptor(self.lo, hi & 0xFFFFFFFF)


def compress_dpl(attr):
    """Ring compression: what the guest made DPL 0 the hardware sees as DPL 1, so the guest
    kernel, running at ring 1, can use it; rings 1-3 stay as they are."""
    return attr | 0x2000 if not attr & A_DPL else attr


def encode(base, limit, attr):
    """The 8 bytes of a segment descriptor."""
    if attr & A_G:
        raw = limit >> 12
    else:
        raw = limit & 0xFFFFF
    lo = ((base & 0xFFFF) << 16) | (raw & 0xFFFF)
    hi = (base & 0xFF000000) | ((base >> 16) & 0xFF) | (raw & 0xF0000) | (attr & 0x00F0FF00)
    return struct.pack("<II", lo, hi)
