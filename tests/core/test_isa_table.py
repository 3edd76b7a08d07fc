"""The instruction table (pyvmm/_core/isa.py) and the CPU agree with each other and with
capstone: every row executes (no #UD), every opcode outside the table is #UD, LOCK is
accepted exactly where the SDM allows it, and the decoder's length equals capstone's."""
import capstone
import pytest

from pyvmm import CPU, GuestFault, Unsupported, load_pure
from pyvmm._core import isa

CODE, DATA = 0x1000, 0x8000
MD = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)


def encodings():
    """(opcode bytes, ModRM.reg or None) for every one- and two-byte opcode x reg."""
    for idx in range(0x200):
        if idx == 0x0F or idx in (0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3):
            continue                                       # escape and prefixes
        opcode = bytes([idx]) if idx < 0x100 else bytes([0x0F, idx & 0xFF])
        table_opcode = idx if idx < 0x100 else 0x0F00 | (idx & 0xFF)
        rows = [r for r in isa.INSTRUCTIONS if r.opcode == table_opcode]
        if rows and rows[0].has_modrm:
            for reg in range(8):
                yield opcode, table_opcode, reg
        else:
            yield opcode, table_opcode, None


def instruction(opcode, reg):
    # ModRM: [ebx] (mod 0, rm 3); immediates all zero; the HLT afterwards ends the run.
    modrm = b"" if reg is None else bytes([(reg << 3) | 3])
    return opcode + modrm + bytes(8)


def run(cpu_class, code, ebx=DATA):
    cpu = cpu_class()
    cpu.mem_map(0, 0x10000)
    cpu.mem_write(CODE, code + b"\xf4")
    cpu.reg_write("ebx", ebx)
    cpu.reg_write("esp", 0x7000)
    cpu.reg_write("ecx", 1)       # a divisor that is not zero, a shift count
    try:
        cpu.emu_start(CODE, 0, count=1)
    except GuestFault as f:
        return f.vector
    except Unsupported:
        return "unsupported"            # e.g. MOV CR0 clearing PE: a clean stop, not #UD
    return None


ALL = list(encodings())


@pytest.mark.parametrize("opcode, table_opcode, reg", ALL,
                         ids=[f"{o.hex()}/{r}" for o, _, r in ALL])
def test_ud_exactly_outside_the_table(opcode, table_opcode, reg):
    row = isa.lookup(table_opcode, reg)
    vector = run(CPU, instruction(opcode, reg))
    if row is None or row.mnemonic == "ud2":
        assert vector == 6, f"{opcode.hex()} /{reg} is not in the table but executed"
    else:
        assert vector != 6, f"{row.mnemonic} ({opcode.hex()} /{reg}) is in the table but #UD"


@pytest.mark.parametrize("opcode, table_opcode, reg", ALL,
                         ids=[f"{o.hex()}/{r}" for o, _, r in ALL])
def test_decoder_length_matches_capstone(opcode, table_opcode, reg):
    if isa.lookup(table_opcode, reg) is None:
        pytest.skip("not in the subset")
    code = instruction(opcode, reg)
    cpu = CPU()
    cpu.mem_map(0, 0x10000)
    cpu.mem_write(CODE, code)
    insn = next(MD.disasm(code, CODE))
    assert cpu.decode_length(CODE) == insn.size, f"{insn.mnemonic} {insn.op_str}"
    if table_opcode in (0x0FB7, 0x0FBF):   # capstone names by the operand, the SDM by the op
        return
    row = isa.lookup(table_opcode, reg)
    # capstone's names where they differ from the SDM's
    aliases = {"cmovcc": "cmov", "setcc": "set", "jcc": "j", "iretd": "iret",
               "pushfd": "pushf", "popfd": "popf", "pushad": "pusha", "popad": "popa",
               "xlat": "xlatb"}
    if row.family == "far" and row.mnemonic in ("call", "jmp") and row.operands == "Ap":
        aliases[row.mnemonic] = "l" + row.mnemonic
    expected = aliases.get(row.mnemonic, row.mnemonic)
    assert insn.mnemonic.startswith(expected), \
        f"table says {row.mnemonic}, capstone says {insn.mnemonic} for {code[:4].hex()}"


LOCKABLE = [r for r in isa.INSTRUCTIONS if r.lock]
NOT_LOCKABLE = [r for r in isa.INSTRUCTIONS if not r.lock and r.has_modrm
                and not r.memory_only and r.opcode not in (0x0F01,)]


def row_bytes(row):
    opcode = bytes([row.opcode]) if row.opcode < 0x100 else bytes([0x0F, row.opcode & 0xFF])
    return opcode, row.reg if row.reg is not None else 0


@pytest.mark.parametrize("row", LOCKABLE, ids=[f"{r.mnemonic}-{r.opcode:x}-{r.reg}" for r in LOCKABLE])
def test_lock_is_accepted_on_memory_destinations_only(row):
    opcode, reg = row_bytes(row)
    assert run(CPU, b"\xf0" + instruction(opcode, reg)) != 6
    register_form = opcode + bytes([0xC0 | (reg << 3) | 3]) + bytes(8)
    assert run(CPU, b"\xf0" + register_form) == 6


@pytest.mark.parametrize("row", NOT_LOCKABLE[::3], ids=[f"{r.mnemonic}-{r.opcode:x}-{r.reg}" for r in NOT_LOCKABLE[::3]])
def test_lock_elsewhere_is_ud(row):
    opcode, reg = row_bytes(row)
    assert run(CPU, b"\xf0" + instruction(opcode, reg)) == 6


def test_uncompiled_core_agrees_on_ud():
    pure = load_pure().cpu.CPU
    for opcode, table_opcode, reg in ALL[::7]:
        code = instruction(opcode, reg)
        assert run(pure, code) == run(CPU, code), code.hex()
