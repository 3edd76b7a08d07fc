"""The privileged state a software VMM keeps for its guest: what the guest believes the
processor holds, where the real processor holds the VMM's values instead."""
from dataclasses import dataclass, field


@dataclass
class VirtualCPU:
    cpl: int = 0                    # the guest's ring (the hardware runs ring 0 at ring 1)
    vif: bool = False               # the guest's EFLAGS.IF
    iopl: int = 0                   # the guest's EFLAGS.IOPL (the hardware's stays 0)
    cr0: int = 0x11
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    gdtr: tuple = (0, 0)            # (base, limit)
    idtr: tuple = (0, 0x3FF)
    ldtr: tuple = (0, 0, 0)         # (selector, base, limit)
    tr: tuple = (0, 0, 0)           # (selector, base, limit)
    dr: list = field(default_factory=lambda: [0, 0, 0, 0, 0, 0, 0xFFFF0FF0, 0x400])
    halted: bool = False
