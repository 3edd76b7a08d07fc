"""The hypervisor: one module a virtualization technique, all on the same hardware (the
core) and the same machine (`pyvmm.machine.PC`).

    emulate   no VMM: the guest owns the machine at ring 0 (the baseline)
    trap      trap-and-emulate: the guest kernel deprivileged to ring 1 (trap.py)
    bt        binary translation in the style of VMware (binary_translation.py, binary_translator.py)
    pv        paravirtualization in the style of Xen: hypercalls (paravirt.py, docs/hypercall-abi.md)
    hw        hardware assist in the style of VT-x: guest mode and VM exits (hardware_assist.py)
"""
from .base import VMM, Emulate
from .faults import VMMUnsupported
from .binary_translation import BinaryTranslation
from .hardware_assist import HardwareAssist
from .paravirt import Paravirtual
from .trap import TrapAndEmulate

MODES = {"emulate": Emulate, "trap": TrapAndEmulate, "bt": BinaryTranslation, "pv": Paravirtual,
         "hw": HardwareAssist}


def hypervisor_memory(mode):
    """The (base, size) of memory the machine should give the VMM of `mode`, or None."""
    from .trap import VMM_BASE, VMM_SIZE
    return (VMM_BASE, VMM_SIZE) if mode in ("trap", "bt", "pv", "hw") else None


def create(mode, pc, paging=None):
    """The VMM for `mode` on machine `pc`, attached to the guest the loader has set up.
    `paging` picks hw mode's memory virtualization (None: the mode's default)."""
    try:
        cls = MODES[mode]
    except KeyError:
        raise ValueError(f"unknown mode {mode!r} (modes: {', '.join(MODES)})") from None
    if paging is not None and paging not in getattr(cls, "PAGING", ()):
        raise VMMUnsupported(f"--paging {paging} is not a choice in {mode} mode "
                             f"(it has: {', '.join(getattr(cls, 'PAGING', ())) or 'none'})")
    vmm = cls(pc) if paging is None else cls(pc, paging=paging)
    vmm.attach()
    pc.vmm = vmm
    return vmm


__all__ = ["MODES", "VMM", "VMMUnsupported", "create", "hypervisor_memory"]
