"""Real mode against Unicorn (UC_MODE_16): the ALU, MOV and shift rows of the instruction table
in their register forms, with and without the 0x66 operand-size prefix, random registers
and flags; general registers, EIP and EFLAGS (minus the SDM's undefined bits) must agree and
the decoder's length must equal capstone's (CS_MODE_16)."""
import os
import random

import capstone
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyvmm
from pyvmm._core import isa

unicorn = pytest.importorskip("unicorn")
from unicorn import x86_const as X  # noqa: E402

CODE = 0x7C00
REGS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
UC_REGS = {r: getattr(X, "UC_X86_REG_" + r.upper()) for r in REGS}
FAMILIES = ("alu", "mov", "shift")
MD16 = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_16)
EXAMPLES = int(os.environ.get("PYVMM_DIFF_EXAMPLES", "200"))


def register_form_rows():
    rows = []
    for row in isa.INSTRUCTIONS:
        if row.family not in FAMILIES or row.lock and row.operands.startswith("M"):
            continue
        if row.memory_only or row.opcode in (0x0FB0, 0x0FB1):     # cmpxchg: fine, but keep simple
            continue
        if row.opcode in (0xF6, 0xF7) and row.reg == 1:
            continue            # TEST's /1 alias: Unicorn lacks it (pyvmm.oracle ALIASES)
        if row.opcode in (0xC6, 0xC7) or "O" in row.operands[:1] or any(o[:1] == "O" for o in row.operand_list):
            continue                                                  # moffs: memory
        rows.append(row)
    return rows


ROWS = register_form_rows()


def encode(row, rng, wide):
    opcode = bytes([row.opcode]) if row.opcode < 0x100 else bytes([0x0F, row.opcode & 0xFF])
    code = (b"\x66" if wide else b"") + opcode
    if row.has_modrm:
        reg = row.reg if row.reg is not None else rng.randrange(8)
        rm = rng.randrange(8)
        if rm == 4 or reg == 4 and row.reg is None:                 # keep SP out of it
            rm = 0
        code += bytes([0xC0 | (reg << 3) | rm])
    kind = row.imm_kind
    opsize = 4 if wide else 2
    if kind == isa.IMM_B:
        code += bytes([rng.randrange(256)])
    elif kind == isa.IMM_W:
        code += rng.randbytes(2)
    elif kind == isa.IMM_Z:
        code += rng.randbytes(opsize)
    return code


def run_unicorn(code, regs, eflags):
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_16)
    uc.mem_map(0, 0x100000)
    uc.mem_write(CODE, code)
    for r, v in regs.items():
        uc.reg_write(UC_REGS[r], v)
    uc.reg_write(X.UC_X86_REG_EFLAGS, eflags)
    uc.emu_start(CODE, CODE + len(code))
    return ({r: uc.reg_read(UC_REGS[r]) for r in REGS}, uc.reg_read(X.UC_X86_REG_EIP),
            uc.reg_read(X.UC_X86_REG_EFLAGS))


def run_pyvmm(cpu_class, code, regs, eflags):
    cpu = cpu_class()
    cpu.mem_map(0, 0x100000)
    cpu.mem_write(CODE, code)
    cpu.reset_real_mode(0, CODE)
    for r, v in regs.items():
        cpu.reg_write(r, v)
    cpu.reg_write("eflags", eflags)
    cpu.emu_start(CODE, CODE + len(code))
    return {r: cpu.reg_read(r) for r in REGS}, cpu.eip, cpu.reg_read("eflags")


@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), wide=st.booleans(), index=st.integers(0, len(ROWS) - 1))
def test_real_mode_register_forms_match_unicorn(seed, wide, index):
    rng = random.Random(seed)
    row = ROWS[index]
    code = encode(row, rng, wide)
    insn = next(MD16.disasm(code, CODE))
    assert insn.size == len(code), f"capstone sees {insn.mnemonic} {insn.op_str} ({insn.size} bytes)"
    regs = {r: rng.getrandbits(32) for r in REGS}
    regs["esp"] = 0x6000
    eflags = 0x2 | (rng.getrandbits(12) & 0x8D5)
    expected = run_unicorn(code, regs, eflags)
    actual = run_pyvmm(pyvmm.CPU, code, regs, eflags)
    size = (4 if wide else 2) if "v" in row.operands or "z" in row.operands or row.rule == "bswap" else 1
    count = None
    if row.rule in ("shl", "shr", "sar", "rotate", "shld"):
        count = (code[-1] if row.imm_kind == isa.IMM_B else
                 regs["ecx"] & 0xFF if "CL" in row.operands else 1) & 0x1F
    mask, result_undefined = isa.undefined_mask(row, count, 8 * size)
    text = f"{code.hex(' ')} ({insn.mnemonic} {insn.op_str}) regs={regs} eflags={eflags:#x}"
    if not result_undefined:
        assert actual[0] == expected[0], text
    assert actual[1] == expected[1], text
    assert actual[2] & ~mask == expected[2] & ~mask, text
