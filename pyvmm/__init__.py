"""pyvmm: an educational IA-32 machine and hypervisor.

The harness API (`CPU`) follows Unicorn's names where they overlap, so one test drives both:

    from pyvmm import CPU
    cpu = CPU()
    cpu.mem_map(0x1000, 0x1000)
    cpu.mem_write(0x1000, b"\\x40\\xf4")        # inc eax; hlt
    cpu.emu_start(0x1000, 0)
    assert cpu.reg_read("eax") == 1
"""
from ._core import COMPILED, load_pure
from ._core.cpu import CPU
from ._core.faults import GuestFault, TripleFault, Unsupported
from ._core.exits import ExitReason
from ._core.faults import UnmappedMemory

__all__ = ["CPU", "COMPILED", "ExitReason", "GuestFault", "TripleFault", "UnmappedMemory", "Unsupported", "load_pure"]
