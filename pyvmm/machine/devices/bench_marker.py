"""The benchmark marker at port 0x504: how a guest tells the machine where a measured loop
begins and ends (guests/nanobench, the protocol in guests/README.md).

A 32-bit OUT of `(op_id << 24) | iterations` (op_id 1-255, iterations below 2**24) opens a
bracket; an OUT of 0 closes it. Each bracket becomes a `Mark` in `marks`, with the CPU's
instruction count at both markers: the count at the opening OUT (the instructions completed
before it) and at the closing one, so `instructions` covers the opening OUT, the loop and
whatever the guest does before the closing OUT. Every callable in `listeners` is called
with `(op_id, iterations)` at an opening and `(0, 0)` at a closing, so that a hypervisor can
snapshot its own counters (exits by reason, say) at the same two points.

Writes of another width, or to ports 0x505-0x507, are ignored; reads see all ones. A real
PC (and QEMU) has nothing here, so a guest writes the markers unconditionally.
"""
from dataclasses import dataclass

PORT = 0x504

# The bundled guests' operations, by the op_id their markers carry: guests/nanobench's
# nanobenchmarks (1-7), then the memory-virtualization guests' phases: guests/ptemod (16-17),
# guests/pagefault (18-21), guests/tlbstress (22-28).
OPERATIONS = {1: "syscall", 2: "in", 3: "cli/sti", 4: "call/ret", 5: "pgfault",
              6: "divzero", 7: "ptemod",
              16: "fork/exit", 17: "fork/cow",
              18: "demand", 19: "evict", 20: "refault", 21: "wrprotect",
              22: "tlb fits", 23: "tlb seq", 24: "tlb stride", 25: "tlb random",
              26: "4m random", 27: "cr3 reload", 28: "cr3 global"}


@dataclass
class Mark:
    op_id: int
    name: str
    iterations: int
    begin: int                  # instruction count at the opening OUT
    end: int | None = None      # ... at the closing OUT (None while the bracket is open)

    @property
    def instructions(self):
        return None if self.end is None else self.end - self.begin

    @property
    def per_iteration(self):
        """Instructions per iteration, the bracket's fixed overhead included."""
        n = self.instructions
        return None if n is None or not self.iterations else n / self.iterations


class BenchMarker:
    name = "bench-marker"
    io_size = 4

    def __init__(self, instruction_count):
        self.instruction_count = instruction_count  # callable() -> the CPU's count now
        self.marks = []
        self.listeners = []
        self.open = None                            # the Mark of an open bracket

    def io_read(self, port, size):
        return (1 << (8 * size)) - 1

    def io_write(self, port, size, value):
        if port != PORT or size != 4:
            return
        now = self.instruction_count()
        if value == 0:
            if self.open is not None:
                self.open.end = now
                self.open = None
            for listener in list(self.listeners):
                listener(0, 0)
            return
        op_id, iterations = value >> 24, value & 0xFFFFFF
        self.open = Mark(op_id, OPERATIONS.get(op_id, f"op{op_id}"), iterations, now)
        self.marks.append(self.open)
        for listener in list(self.listeners):
            listener(op_id, iterations)
