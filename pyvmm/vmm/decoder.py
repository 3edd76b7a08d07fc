"""The instruction a guest trapped on, decoded with capstone: what the VMM needs to emulate
it (mnemonic, operands, length, prefixes, and the linear address of a memory operand)."""
from dataclasses import dataclass

import capstone
from capstone import x86

_CS32 = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
_CS32.detail = True
_CS16 = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_16)
_CS16.detail = True

_SEG = {x86.X86_REG_ES: "es", x86.X86_REG_CS: "cs", x86.X86_REG_SS: "ss",
        x86.X86_REG_DS: "ds", x86.X86_REG_FS: "fs", x86.X86_REG_GS: "gs"}
_REG32 = {x86.X86_REG_EAX: "eax", x86.X86_REG_ECX: "ecx", x86.X86_REG_EDX: "edx",
          x86.X86_REG_EBX: "ebx", x86.X86_REG_ESP: "esp", x86.X86_REG_EBP: "ebp",
          x86.X86_REG_ESI: "esi", x86.X86_REG_EDI: "edi"}


@dataclass
class Instruction:
    address: int
    bytes: bytes
    mnemonic: str
    op_str: str
    insn: object            # the capstone instruction (operands, prefixes)

    @property
    def length(self):
        return len(self.bytes)

    @property
    def operands(self):
        return self.insn.operands

    @property
    def rep(self):
        return x86.X86_PREFIX_REP in self.insn.prefix or x86.X86_PREFIX_REPNE in self.insn.prefix

    @property
    def opsize(self):
        """Operand size of a string or I/O instruction (1, 2 or 4), from its mnemonic."""
        m = self.mnemonic
        if m[-1] == "b" or (m.startswith(("in", "out")) and self._al()):
            return 1
        if m[-1] == "w" or (m.startswith(("in", "out")) and self._ax()):
            return 2
        return 4

    def _al(self):
        return any(o.type == x86.X86_OP_REG and o.reg == x86.X86_REG_AL for o in self.operands)

    def _ax(self):
        return any(o.type == x86.X86_OP_REG and o.reg == x86.X86_REG_AX for o in self.operands)

    def __str__(self):
        return f"{self.mnemonic} {self.op_str}".strip()


def decode(code, address, bits=32):
    """Decode one instruction from `code` (bytes read at `address`), or None."""
    md = _CS32 if bits == 32 else _CS16
    for insn in md.disasm(code, address, 1):
        # capstone spells a REP prefix into the mnemonic ("rep outsb"): keep it apart
        mnemonic = insn.mnemonic.split()[-1]
        return Instruction(address, bytes(insn.bytes), mnemonic, insn.op_str, insn)
    return None


def reg_name(cs_reg):
    return capstone.Cs.reg_name(_CS32, cs_reg)


def segment_of(op):
    """The segment register a memory operand goes through (capstone names the override)."""
    if op.mem.segment in _SEG:
        return _SEG[op.mem.segment]
    if op.mem.base in (x86.X86_REG_ESP, x86.X86_REG_EBP, x86.X86_REG_SP, x86.X86_REG_BP):
        return "ss"
    return "ds"


def effective_address(op, reg_read):
    """Offset of a memory operand within its segment, from the guest's registers."""
    m = op.mem
    ea = m.disp
    if m.base:
        ea += reg_read(reg_name(m.base))
    if m.index:
        ea += reg_read(reg_name(m.index)) * m.scale
    return ea & 0xFFFFFFFF
