"""What every virtualization mode shares: the machine (PC) it virtualizes, the vCPU run
loop in KVM's shape, and the count of VMM entries by reason.

    while True:
        exit = vcpu.run()               # the hardware runs the guest until something traps
        handle(exit)                    # the VMM emulates, reflects or injects, and goes on

`PC.run` drives a VMM exactly as it drives a bare CPU: `vmm.run(stop)` returns only for
what the *machine* must decide (the budget, a device event, a guest that halts, exits or
crashes); everything the VMM can handle itself it handles inside."""
import time
from collections import Counter
from dataclasses import dataclass, field

from .. import ExitReason
from .stats import ExitStats


@dataclass
class Bracket:
    """One benchmark bracket of the guest (port 0x504, guests/nanobench) as the VMM saw it:
    the VMM entries inside it by reason (the opening marker's own OUT included: it exits
    in every mode that traps I/O) and the host time it took."""
    name: str
    iterations: int
    exits: Counter = field(default_factory=Counter)
    memory: dict = field(default_factory=dict)      # memory_stats() counted inside it
    vmm_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def total_exits(self):
        return sum(self.exits.values())


class VMM:
    mode = "?"
    # A VMM that emulates a REP INS/OUTS does at most this many iterations per exit, and
    # none past the end of the machine's current slice (`run_stop`, the `stop` PC.run
    # passed: the budget or the next device event), then leaves the instruction
    # interrupted as the processor may between iterations (SDM "REP"): EIP on it, ECX and
    # ESI/EDI as far as they got. Else a guest's REP with ECX = 0xFFFFFFFF would run on in
    # the VMM, past any instruction budget.
    STRING_IO_CHUNK = 4096
    run_stop = None
    # A VMM that handles this many entries in a row without the guest completing one
    # instruction is going round in circles (a bug, or a guest state it cannot resolve):
    # it stops the VM rather than hang the host. (One instruction takes a handful at most:
    # hidden page faults for its code, its operands and its handler's stack.)
    STUCK_ENTRIES = 10_000
    _progress_at = -1
    _idle_entries = 0

    def __init__(self, pc):
        self.pc = pc
        self.cpu = pc.cpu
        self.stats = ExitStats()
        self.stop_message = None
        self.brackets = []
        self._open = None
        marker = getattr(pc, "bench_marker", None)
        if marker is not None:
            marker.listeners.append(self._bench_mark)

    def _bench_mark(self, op_id, iterations):
        """The guest opened (op_id > 0) or closed a benchmark bracket: snapshot the counts."""
        now = time.perf_counter()
        if op_id:
            from ..machine.devices.bench_marker import OPERATIONS
            self._open = (Bracket(OPERATIONS.get(op_id, f"op{op_id}"), iterations),
                          Counter(self.stats.count), self.stats.total_seconds, now,
                          self.memory_stats())
        elif self._open is not None:
            bracket, counts, seconds, t0, memory = self._open
            bracket.exits = Counter(self.stats.count) - counts
            bracket.memory = {k: (None if v is None else v - (memory[k] or 0))
                              for k, v in self.memory_stats().items()
                              if k != "shadow pages"}
            bracket.vmm_seconds = self.stats.total_seconds - seconds
            bracket.wall_seconds = now - t0
            self.brackets.append(bracket)
            self._open = None

    # -- set up --------------------------------------------------------------------------
    def attach(self):
        """Take over a machine whose CPU the loader has put at the guest's entry point."""

    # -- what PC.run asks ------------------------------------------------------------------
    def run(self, stop):
        return ExitReason(self.cpu.run(stop))

    def stuck(self):
        """Call once a VMM entry: a message if the guest has made no progress in
        STUCK_ENTRIES entries in a row, else None."""
        icount = self.cpu.icount
        if icount != self._progress_at:
            self._progress_at, self._idle_entries = icount, 0
            return None
        self._idle_entries += 1
        if self._idle_entries < self.STUCK_ENTRIES:
            return None
        return (f"{self.mode}: {self.STUCK_ENTRIES:,} VMM entries in a row without the guest "
                f"completing an instruction (EIP={self.cpu.eip:#010x}); the VM is stopped")

    def string_io_iterations(self):
        """How many iterations of a REP INS/OUTS the VMM may emulate in this exit (>= 1)."""
        left = self.STRING_IO_CHUNK if self.run_stop is None else self.run_stop - self.cpu.icount
        return max(1, min(self.STRING_IO_CHUNK, left))

    def memory_stats(self):
        """What memory virtualization cost, for `pyvmm compare`: the hardware's TLB and
        page walks (walk references: paging-structure entries read, the guest's and any
        nested or shadow tables the MMU walks), the guest's CR3 loads, and what a software
        MMU (shadow paging) adds; None where the mode has no such thing."""
        cpu = self.cpu
        return {"TLB hits": cpu.tlb_hits, "TLB misses": cpu.tlb_misses,
                "walk refs": cpu.walk_refs, "CR3 switches": self.guest_cr3_loads(),
                "hidden faults": None, "true faults": None, "PT-write traps": None,
                "shadow pages": None}

    def guest_cr3_loads(self):
        return self.cpu.cr3_loads

    def interrupts_enabled(self):
        """The guest's IF: may an interrupt wake it from HLT?"""
        return bool(self.cpu.reg_read("eflags") & 0x200)

    def guest_eip(self):
        return self.cpu.eip


class Emulate(VMM):
    """No VMM at all: the guest owns the machine at ring 0 (the baseline)."""
    mode = "emulate"
