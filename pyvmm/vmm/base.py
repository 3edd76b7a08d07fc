"""What every virtualization mode shares: the machine (PC) it virtualizes, the vCPU run
loop in KVM's shape, and the count of VMM entries by reason.

    while True:
        exit = vcpu.run()               # the hardware runs the guest until something traps
        handle(exit)                    # the VMM emulates, reflects or injects, and goes on

`PC.run` drives a VMM exactly as it drives a bare CPU: `vmm.run(stop)` returns only for
what the *machine* must decide (the budget, a device event, a guest that halts, exits or
crashes); everything the VMM can handle itself it handles inside."""
from .. import ExitReason
from .stats import ExitStats


class VMM:
    mode = "?"

    def __init__(self, pc):
        self.pc = pc
        self.cpu = pc.cpu
        self.stats = ExitStats()
        self.stop_message = None

    # -- set up --------------------------------------------------------------------------
    def attach(self):
        """Take over a machine whose CPU the loader has put at the guest's entry point."""

    # -- what PC.run asks ------------------------------------------------------------------
    def run(self, stop):
        return ExitReason(self.cpu.run(stop))

    def interrupts_enabled(self):
        """The guest's IF: may an interrupt wake it from HLT?"""
        return bool(self.cpu.reg_read("eflags") & 0x200)

    def guest_eip(self):
        return self.cpu.eip


class Emulate(VMM):
    """No VMM at all: the guest owns the machine at ring 0 (the baseline)."""
    mode = "emulate"
