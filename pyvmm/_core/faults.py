"""What the CPU reports when things go wrong, shared by the compiled and uncompiled core.

Kept out of the compiled modules so that `pyvmm.GuestFault` is the same class whichever core
raised it (see pyvmm._core.load_pure).
"""

EXCEPTION_NAMES = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD",
                   7: "#NM", 8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP",
                   14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC", 19: "#XM"}


class CPUFault(Exception):
    """Raised inside the core when an instruction faults; run() catches it."""

    def __init__(self, vector, error_code=-1):
        self.vector = vector
        self.error_code = error_code


class GuestFault(Exception):
    """An exception the guest did not handle (no usable IDT gate): the run stopped.

    `vector`, `error_code` (None when the exception has none) and `eip` (the EIP the
    exception saves: the faulting instruction for faults, the next one for traps) describe
    the first exception; `chain` lists every (vector, error_code) raised on the way."""

    def __init__(self, vector, error_code, eip, chain=(), instruction=b"", reason=""):
        self.vector = vector
        self.error_code = None if error_code is None or error_code < 0 else error_code
        self.eip = eip
        self.chain = list(chain) or [(vector, self.error_code)]
        self.instruction = bytes(instruction)
        self.reason = reason
        super().__init__(self.describe())

    def describe(self):
        name = EXCEPTION_NAMES.get(self.vector, f"vector {self.vector}")
        err = "" if self.error_code is None else f"({self.error_code:#x})"
        text = f"unhandled {name}{err} at EIP={self.eip:#010x}"
        if self.instruction:
            text += f": {self.instruction.hex(' ')}"
            asm = disassemble(self.instruction, self.eip)
            if asm:
                text += f"  ({asm})"
        if len(self.chain) > 1:
            steps = " -> ".join(EXCEPTION_NAMES.get(v, str(v)) for v, _ in self.chain)
            text += f"; delivery chain {steps}"
        if self.reason:
            text += f"; {self.reason}"
        return text


class TripleFault(GuestFault):
    """A fault while delivering #DF: the processor shuts down (SDM Vol. 3 6.15, vector 8)."""


def instruction_length(code, address=0):
    """capstone's length of the first instruction in `code` (0 if it decodes none)."""
    try:
        import capstone
    except ImportError:  # pragma: no cover
        return 0
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    for insn in md.disasm(bytes(code), address):
        return insn.size
    return 0


def disassemble(code, address):
    """capstone's text for the first instruction in `code`, or "" when unavailable."""
    try:
        import capstone
    except ImportError:  # pragma: no cover - capstone is a dependency
        return ""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    for insn in md.disasm(bytes(code), address):
        return f"{insn.mnemonic} {insn.op_str}".strip()
    return "(not an instruction capstone knows)"



class ExceptionExit:
    """An intercepted exception (see CPU.exception_intercept): what a VMM is told."""
    __slots__ = ("vector", "error_code", "eip", "software")

    def __init__(self, vector, error_code, eip, software):
        self.vector = vector
        self.error_code = None if error_code < 0 else error_code
        self.eip = eip
        self.software = software

    def __repr__(self):
        return (f"ExceptionExit({EXCEPTION_NAMES.get(self.vector, self.vector)}, "
                f"error_code={self.error_code}, eip={self.eip:#x})")



class UnmappedMemory(Exception):
    """A guest-physical access hit an address with no RAM behind it."""

    def __init__(self, address, size, kind):
        self.address = address
        self.size = size
        self.kind = kind
        self.eip = None     # the instruction that made the access, when a CPU reports it
        super().__init__(address, size, kind)

    def __str__(self):
        text = (f"{self.kind} of {self.size} byte(s) at unmapped guest-physical address "
                f"{self.address:#010x}")
        if self.eip is not None:
            text += f" by the instruction at EIP={self.eip:#010x}"
        return text




class VMExitSignal(Exception):
    """Raised inside the core when an instruction in guest mode causes a VM exit; run()
    rolls the instruction back and returns EXIT_VMEXIT (details in CPU.exit_reason,
    exit_qualification, exit_instruction_length)."""


class Unsupported(Exception):
    """The guest did something architectural that pyvmm does not implement (yet): the run
    stops cleanly with this message rather than pretending."""

    def __init__(self, message, eip=None):
        self.eip = eip
        super().__init__(message)

    def __str__(self):
        text = super().__str__()
        return text if self.eip is None else f"{text} (instruction at EIP={self.eip:#010x})"
