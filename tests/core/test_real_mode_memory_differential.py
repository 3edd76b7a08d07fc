"""Real mode against Unicorn (UC_MODE_16): the ALU, MOV and shift rows of the instruction table
in their memory forms.

Every case draws a ModRM memory operand: the eight 16-bit forms ([BX+SI] ... [BX], [BP] /
disp16) with no, 8- and 16-bit displacements, or under an 0x67 prefix the 32-bit forms with
SIB; the moffs forms of MOV (A0-A3). The five data segment registers hold random selectors
(base = selector * 16, so operands land anywhere in the first 1 MiB + 64 KiB), CS is one of
several paragraphs that put the code at linear 0x7C00, and half the cases carry a segment
override (ES/CS/SS/DS/FS/GS); BP- (and EBP/ESP-) based forms default to SS. Base and index
registers are random in all 32 bits, so 16-bit effective addresses wrap at 0xFFFF about half
the time and the upper halves must be ignored. An 0x66 prefix selects 32-bit operands.

General registers, EIP, EFLAGS (minus the SDM's undefined bits, isa.undefined_mask) and the
whole mapped memory must agree, and the decoder's length must equal capstone's (CS_MODE_16).

The stack (PUSH/POP of registers and immediates), string (MOVS/CMPS/STOS/LODS/SCAS, REP,
DF, 0x67) and near-branch (JMP/Jcc/CALL/RET, IP wrapping) rows are compared the same way
(see their tests). PYVMM_DIFF_EXAMPLES sets the examples per test (default 200); a longer
run: PYVMM_DIFF_EXAMPLES=4000 pytest tests/core/test_real_mode_memory_differential.py.

Not generated, with the reason:
  * an operand that crosses the segment limit (offset + size - 1 > 0xFFFF): on the processor
    that is #GP(0), #SS(0) for SS (SDM Vol. 2, "Real-Address Mode Exceptions" of every
    instruction with a memory operand; Vol. 3 22.31, segment wraparound), which pyvmm raises
    (tests/core/test_real_mode.py checks it) and Unicorn does not model: it accesses the
    bytes past base + 0xFFFF instead;
  * an operand overlapping the instruction itself (self-modifying code is not the subject);
  * LOCK, and F6/F7 /1 (TEST's alias, which Unicorn lacks: pyvmm.oracle ALIASES).
"""
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

MEM_SIZE = 0x110000                     # 1 MiB + 64 KiB: every seg*16 + offset16
CODE = 0x7C00                           # linear address of the instruction
CODE_GUARD = (CODE - 16, CODE + 32)     # operands stay out of here
REGS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
SEGS = ("es", "cs", "ss", "ds", "fs", "gs")          # in prefix order below
SEG_PREFIX = {"es": 0x26, "cs": 0x2E, "ss": 0x36, "ds": 0x3E, "fs": 0x64, "gs": 0x65}
UC_REGS = {r: getattr(X, "UC_X86_REG_" + r.upper()) for r in REGS + SEGS}
MD16 = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_16)
EXAMPLES = int(os.environ.get("PYVMM_DIFF_EXAMPLES", "200"))
FAMILIES = ("alu", "mov", "shift")
# The background: the same pseudo-random bytes in both machines for every case.
BACKGROUND = random.Random(0x5EED).randbytes(MEM_SIZE)

# 16-bit ModRM r/m: the registers summed, and whether SS is the default segment
MODRM16 = {0: ((3, 6), False), 1: ((3, 7), False), 2: ((5, 6), True), 3: ((5, 7), True),
           4: ((6,), False), 5: ((7,), False), 6: ((5,), True), 7: ((3,), False)}


def memory_rows():
    rows = []
    for row in isa.INSTRUCTIONS:
        if row.family not in FAMILIES:
            continue
        if row.opcode in (0xF6, 0xF7) and row.reg == 1:
            continue            # TEST's /1 alias: Unicorn lacks it (pyvmm.oracle ALIASES)
        ops = row.operand_list
        if row.has_modrm and any(o[:1] in "EM" for o in ops):
            rows.append(row)
        elif any(o[:1] == "O" for o in ops):
            rows.append(row)                                        # moffs
    return rows


ROWS = memory_rows()


def operand_size(row, wide):
    """Bytes of the memory operand (0 for LEA's M)."""
    for o in row.operand_list:
        if o[:1] in "EMO":
            kind = o[1:] if o[:1] != "O" else o[1:]
            if kind == "b":
                return 1
            if kind == "w":
                return 2
            if kind == "q":
                return 8
            if kind == "v":
                return 4 if wide else 2
            return 0
    raise AssertionError(row)


class Case:
    def __init__(self, rng, row, wide, adsize32):
        self.rng = rng
        self.row = row
        self.wide = wide
        self.a32 = adsize32
        self.regs = [rng.getrandbits(32) for _ in range(8)]
        self.size = operand_size(row, wide)
        self.segs = {s: rng.getrandbits(16) for s in SEGS if s != "cs"}
        self.cs = rng.choice((0, 0x07C0, 0x0700, rng.randrange(0, 0x7C1)))
        self.eflags = 0x2 | (rng.getrandbits(12) & 0x8D5)
        if rng.random() < 0.3:
            self.eflags |= isa.DF

    # -- addressing ---------------------------------------------------------------------------
    def target(self):
        """An offset whose operand stays inside the 64 KiB limit (see the module docstring);
        near both ends now and then."""
        top = 0x10000 - max(self.size, 1)
        return self.rng.choice((self.rng.randrange(0, top + 1), self.rng.randrange(0, 16),
                                top - self.rng.randrange(0, 16)))

    def modrm16(self):
        rng = self.rng
        mod, rm = rng.randrange(3), rng.randrange(8)
        if mod == 0 and rm == 6:
            used, ss, dsize = (), False, 2                          # [disp16]
        else:
            used, ss = MODRM16[rm]
            dsize = (0, 1, 2)[mod]
        disp = rng.getrandbits(8 * dsize) if dsize else 0
        sdisp = disp - 0x100 if dsize == 1 and disp >= 0x80 else disp
        ea = (sum(self.regs[r] & 0xFFFF for r in used) + sdisp) & 0xFFFF
        if ea + max(self.size, 1) > 0x10000:
            return None                                             # crosses the limit
        return bytes([(mod << 6) | rm]) + disp.to_bytes(dsize, "little"), ea, ss, rm

    def modrm32(self):
        rng = self.rng
        mod, rm = rng.randrange(3), rng.randrange(8)
        base = index = None
        scale = 0
        sib = b""
        if rm == 4:
            scale, idx, b = rng.randrange(4), rng.randrange(8), rng.randrange(8)
            sib = bytes([(scale << 6) | (idx << 3) | b])
            index = None if idx == 4 else idx
            base = None if (b == 5 and mod == 0) else b
            dsize = 4 if base is None else (0, 1, 4)[mod]
        elif mod == 0 and rm == 5:
            dsize = 4
        else:
            base, dsize = rm, (0, 1, 4)[mod]
        ss = base in (4, 5)
        ea = self.target()
        disp = rng.getrandbits(8 * dsize) if dsize else 0
        sdisp = disp - 0x100 if dsize == 1 and disp >= 0x80 else disp
        iv = (self.regs[index] << scale) if index is not None else 0
        if base is not None and base != index:
            self.regs[base] = (ea - iv - sdisp) & 0xFFFFFFFF
        elif dsize == 4:
            bv = self.regs[base] if base is not None else 0
            disp = (ea - bv - iv) & 0xFFFFFFFF
        else:
            return None                                 # [r + r*s] without disp32: redraw
        reg_field = rng.randrange(8)
        return bytes([(mod << 6) | rm]) + sib + disp.to_bytes(dsize, "little"), ea, ss, reg_field

    def linear(self, seg, ea):
        base = (self.cs if seg == "cs" else self.segs[seg]) << 4
        return base + ea

    def build(self):
        """(code, segment, ea) or None when the draw hit a case that is not generated."""
        rng, row = self.rng, self.row
        prefixes = [0x66] if self.wide else []
        if self.a32:
            prefixes.append(0x67)
        opcode = bytes([row.opcode]) if row.opcode < 0x100 else bytes([0x0F, row.opcode & 0xFF])
        if row.has_modrm:
            m = self.modrm32() if self.a32 else self.modrm16()
            if m is None:
                return None
            modrm, ea, ss, _ = m
            reg = row.reg if row.reg is not None else rng.randrange(8)
            modrm = bytes([modrm[0] | (reg << 3)]) + modrm[1:]
        else:                                           # moffs: the offset is the immediate
            ea = self.target()
            ss = False
            modrm = b""
        seg = "ss" if ss else "ds"
        if rng.random() < 0.5:
            seg = rng.choice(SEGS)
            prefixes.append(SEG_PREFIX[seg])
        rng.shuffle(prefixes)
        lin = self.linear(seg, ea)
        if lin < CODE_GUARD[1] and lin + max(self.size, 1) > CODE_GUARD[0]:
            return None                                 # would overwrite the code
        opsize = 4 if self.wide else 2
        imm = b""
        kind = row.imm_kind
        if kind == isa.IMM_B:
            imm = rng.randbytes(1)
        elif kind == isa.IMM_W:
            imm = rng.randbytes(2)
        elif kind == isa.IMM_Z:
            imm = rng.randbytes(opsize)
        elif kind == isa.IMM_MOFFS:
            imm = ea.to_bytes(4 if self.a32 else 2, "little")
        code = bytes(prefixes) + opcode + modrm + imm
        return code, seg, ea, lin


def memory_image(case_lin, data):
    mem = bytearray(BACKGROUND)
    mem[case_lin:case_lin + len(data)] = data
    return mem


def run_unicorn(mem, code, ip, cpu, count=0):
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_16)
    uc.mem_map(0, MEM_SIZE)
    uc.mem_write(0, bytes(mem))
    uc.mem_write(CODE, code)
    for s, v in cpu["segs"].items():
        uc.reg_write(UC_REGS[s], v)
    uc.reg_write(UC_REGS["cs"], cpu["cs"])
    for r, v in zip(REGS, cpu["regs"]):
        uc.reg_write(UC_REGS[r], v)
    uc.reg_write(X.UC_X86_REG_EFLAGS, cpu["eflags"])
    # Unicorn's begin/until are linear in UC_MODE_16; branches stop after one instruction
    uc.emu_start(CODE, MEM_SIZE - 1 if count == 1 else CODE + len(code), count=count)
    return ([uc.reg_read(UC_REGS[r]) for r in REGS], uc.reg_read(X.UC_X86_REG_EIP),
            uc.reg_read(X.UC_X86_REG_EFLAGS), bytes(uc.mem_read(0, MEM_SIZE)))


def run_pyvmm(mem, code, ip, cpu, count=1):
    m = pyvmm.CPU()
    m.mem_map(0, MEM_SIZE)
    m.mem_write(0, bytes(mem))
    m.mem_write(CODE, code)
    m.reset_real_mode(cpu["cs"], ip)
    for s, v in cpu["segs"].items():
        m.reg_write(s, v)
    for r, v in zip(REGS, cpu["regs"]):
        m.reg_write(r, v)
    m.reg_write("eflags", cpu["eflags"])
    m.emu_start(ip, ip + len(code), count=count)
    return ([m.reg_read(r) for r in REGS], m.eip, m.reg_read("eflags"), bytes(m.mem_read(0, MEM_SIZE)))


def first_difference(a, b):
    for i in range(0, len(a), 4096):
        if a[i:i + 4096] != b[i:i + 4096]:
            j = next(k for k in range(i, i + 4096) if a[k] != b[k])
            return f"memory differs first at {j:#x}: pyvmm {a[j:j + 8].hex()} unicorn {b[j:j + 8].hex()}"
    return ""


def shift_count(row, code, regs):
    if row.rule not in ("shl", "shr", "sar", "rotate", "shld"):
        return None
    if row.imm_kind == isa.IMM_B:
        return code[-1] & 0x1F
    if "CL" in row.operands:
        return regs[1] & 0x1F
    return 1


@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), wide=st.booleans(), a32=st.booleans(),
       index=st.integers(0, len(ROWS) - 1))
def test_real_mode_memory_forms_match_unicorn(seed, wide, a32, index):
    rng = random.Random(seed)
    row = ROWS[index]
    for _ in range(100):
        case = Case(rng, row, wide, a32)
        built = case.build()
        if built is not None:
            break
    else:
        raise AssertionError("no case drawn")
    code, seg, ea, lin = built
    ip = CODE - (case.cs << 4)
    insn = next(MD16.disasm(code, ip))
    assert insn.size == len(code), f"capstone sees {insn.mnemonic} {insn.op_str} ({insn.size} bytes)"
    mem = memory_image(lin, rng.randbytes(max(case.size, 1)))
    state = {"regs": case.regs, "segs": case.segs, "cs": case.cs, "eflags": case.eflags}
    expected = run_unicorn(mem, code, ip, state)
    actual = run_pyvmm(mem, code, ip, state)
    count = shift_count(row, code, case.regs)
    esize = case.size if row.has_modrm else 0
    mask, result_undefined = isa.undefined_mask(row, count, 8 * (esize or (4 if wide else 2)))
    text = (f"{code.hex(' ')} ({insn.mnemonic} {insn.op_str}) cs={case.cs:#06x} "
            + " ".join(f"{s}={v:#06x}" for s, v in case.segs.items())
            + f" seg={seg} ea={ea:#06x} linear={lin:#x} regs=["
            + " ".join(f"{r}={v:#010x}" for r, v in zip(REGS, case.regs))
            + f"] eflags={case.eflags:#x}")
    assert actual[0] == expected[0], text        # (the destination is memory: defined)
    assert actual[1] == expected[1] == ip + len(code), text
    assert actual[2] & ~mask == expected[2] & ~mask, text
    a_mem, e_mem = actual[3], expected[3]
    if result_undefined:            # SHLD/SHRD count > size: the destination is undefined
        a_mem = a_mem[:lin] + a_mem[lin + esize:]
        e_mem = e_mem[:lin] + e_mem[lin + esize:]
    assert a_mem == e_mem, text + "\n" + first_difference(a_mem, e_mem)


# -- stack, string and near-branch rows ----------------------------------------------------------
def base_state(rng):
    regs = [rng.getrandbits(32) for _ in range(8)]
    segs = {s: rng.getrandbits(16) for s in SEGS if s != "cs"}
    cs = rng.choice((0, 0x07C0, 0x0700, rng.randrange(0, 0x7C1)))
    eflags = 0x2 | (rng.getrandbits(12) & 0x8D5) | (isa.DF if rng.random() < 0.5 else 0)
    return {"regs": regs, "segs": segs, "cs": cs, "eflags": eflags}


def clear_of_code(lin, size):
    return lin >= CODE_GUARD[1] or lin + size <= CODE_GUARD[0]


def compare(code, ip, state, mem, count, mask=0, check_length=True):
    if check_length:
        insn = next(MD16.disasm(code, ip))
        assert insn.size == len(code), f"capstone sees {insn.mnemonic} {insn.op_str} ({insn.size} bytes)"
    expected = run_unicorn(mem, code, ip, state, count=1 if count == 1 else 0)
    actual = run_pyvmm(mem, code, ip, state, count=count)
    text = (f"{code.hex(' ')} cs={state['cs']:#06x} ip={ip:#06x} "
            + " ".join(f"{s}={v:#06x}" for s, v in state["segs"].items()) + " regs=["
            + " ".join(f"{r}={v:#010x}" for r, v in zip(REGS, state["regs"]))
            + f"] eflags={state['eflags']:#x}")
    assert actual[0] == expected[0], text
    assert actual[1] == expected[1], text
    assert actual[2] & ~mask == expected[2] & ~mask, text
    assert actual[3] == expected[3], text + "\n" + first_difference(actual[3], expected[3])
    return actual


@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), wide=st.booleans(),
       kind=st.sampled_from(("push", "pop", "push imm8", "push imm")))
def test_real_mode_stack_matches_unicorn(seed, wide, kind):
    """PUSH/POP of registers and immediates, 16- and 32-bit (0x66), on a 16-bit stack at a
    random SS: SP wraps at 0 (PUSH at SP=0 writes at 0xFFFE), the upper half of ESP stays.
    An access crossing offset 0xFFFF (#SS) is not generated (module docstring)."""
    rng = random.Random(seed)
    size = 4 if wide else 2
    for _ in range(100):
        state = base_state(rng)
        sp = rng.choice((rng.getrandbits(16), rng.randrange(0, 8), 0x10000 - rng.randrange(1, 9)))
        state["regs"][4] = (state["regs"][4] & 0xFFFF0000) | sp
        off = (sp - size) & 0xFFFF if kind.startswith("push") else sp
        lin = (state["segs"]["ss"] << 4) + off
        if off + size <= 0x10000 and clear_of_code(lin, size):
            break
    r = rng.randrange(8)
    opcode = {"push": bytes([0x50 + r]), "pop": bytes([0x58 + r]),
              "push imm8": bytes([0x6A]) + rng.randbytes(1),
              "push imm": bytes([0x68]) + rng.randbytes(size)}[kind]
    code = (b"\x66" if wide else b"") + opcode
    compare(code, CODE - (state["cs"] << 4), state, memory_image(lin, rng.randbytes(size)), 1)


STRING_OPS = {"movs": 0xA4, "cmps": 0xA6, "stos": 0xAA, "lods": 0xAC, "scas": 0xAE}


@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), op=st.sampled_from(sorted(STRING_OPS)),
       word=st.booleans(), wide=st.booleans(), a32=st.booleans(),
       rep=st.sampled_from((None, 0xF3, 0xF2)))
def test_real_mode_strings_match_unicorn(seed, op, word, wide, a32, rep):
    """MOVS/CMPS/STOS/LODS/SCAS, byte/word/dword, with and without REP/REPE/REPNE, DF 0/1,
    16-bit SI/DI/CX (wrapping at 0xFFFF between iterations) or ESI/EDI/ECX under 0x67,
    DS (or an override) for the source, ES for the destination."""
    rng = random.Random(seed)
    size = (4 if wide else 2) if word else 1
    amask = 0xFFFFFFFF if a32 else 0xFFFF
    prefixes = [0x66] if wide else []
    if a32:
        prefixes.append(0x67)
    if rep is not None:
        prefixes.append(rep)
    src_seg = "ds"
    if op in ("movs", "cmps", "lods") and rng.random() < 0.5:
        src_seg = rng.choice(SEGS)
        prefixes.append(SEG_PREFIX[src_seg])
    rng.shuffle(prefixes)
    code = bytes(prefixes) + bytes([STRING_OPS[op] + (1 if word else 0)])
    n = rng.randrange(0, 9) if rep is not None else 1
    for _ in range(200):
        state = base_state(rng)
        regs = state["regs"]
        step = -size if state["eflags"] & isa.DF else size
        if rep is not None:
            regs[1] = (regs[1] & ~amask & 0xFFFFFFFF) | n
        ok = True
        touched = []
        for reg, seg in ((6, src_seg), (7, "es")):
            if a32:                         # every access inside the 64 KiB limit
                regs[reg] = rng.randrange(8 * 4, 0x10000 - 8 * 4)
            else:
                regs[reg] = (regs[reg] & 0xFFFF0000) | rng.choice(
                    (rng.getrandbits(16), rng.randrange(0, 16), 0x10000 - rng.randrange(1, 17)))
            base = ((state["cs"] if seg == "cs" else state["segs"][seg]) << 4)
            for i in range(max(n, 1)):
                off = (regs[reg] + i * step) & amask
                if off + size > 0x10000 or not clear_of_code(base + off, size):
                    ok = False
                touched.append(base + off)
        if ok:
            break
    else:
        raise AssertionError("no case drawn")
    mem = bytearray(BACKGROUND)
    same = rng.random() < 0.5                   # CMPS/SCAS: equal runs, so REPE goes on
    fill = rng.randbytes(size)
    for lin in touched:
        mem[lin:lin + size] = fill if same else rng.randbytes(size)
    if op == "scas" and same:
        regs[0] = (regs[0] & ~((1 << (8 * size)) - 1) & 0xFFFFFFFF) | int.from_bytes(fill, "little")
    ip = CODE - (state["cs"] << 4)
    actual = compare(code, ip, state, mem, 100)
    assert actual[1] == ip + len(code)


@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), wide=st.booleans(),
       kind=st.sampled_from(("jmp8", "jmp16", "jcc8", "jcc16", "call", "ret", "ret imm")))
def test_real_mode_near_branches_match_unicorn(seed, wide, kind):
    """JMP/Jcc rel8/rel16, CALL rel16, RET and RET imm16: without 0x66 the new IP wraps at
    0xFFFF; with 0x66 (rel32, 32-bit return address) the target is kept inside the CS limit,
    as beyond it the processor raises #GP(0) (SDM JMP/CALL/RET: 'If tempEIP is beyond the code
    segment limit'), which Unicorn does not model. RET imm16 < 0x8000 (UNICORN_LIMITS)."""
    rng = random.Random(seed)
    size = 4 if wide else 2
    for _ in range(200):
        state = base_state(rng)
        ip = CODE - (state["cs"] << 4)
        sp = rng.choice((rng.getrandbits(16), rng.randrange(0, 8), 0x10000 - rng.randrange(1, 9)))
        state["regs"][4] = (state["regs"][4] & 0xFFFF0000) | sp
        off = (sp - size) & 0xFFFF if kind == "call" else sp
        lin = (state["segs"]["ss"] << 4) + off
        if off + size <= 0x10000 and clear_of_code(lin, size):
            break
    pre = b"\x66" if wide else b""
    ret_target = rng.getrandbits(16)
    if kind in ("jmp8", "jcc8"):
        op = bytes([0xEB]) if kind == "jmp8" else bytes([0x70 + rng.randrange(16)])
        rel = rng.randrange(-128, 128)
        if wide and not 0 <= ip + len(pre) + 2 + rel <= 0xFFFF:
            rel = -rel                      # (ip is 0x0000-0x7C00: the other way is inside)
        code = pre + op + (rel & 0xFF).to_bytes(1, "little")
    elif kind in ("jmp16", "jcc16", "call"):
        op = {"jmp16": b"\xE9", "call": b"\xE8", "jcc16": bytes([0x0F, 0x80 + rng.randrange(16)])}[kind]
        n = len(pre) + len(op) + size
        if wide:                            # a target inside the limit, reached by rel32
            rel = (rng.getrandbits(16) - (ip + n)) & 0xFFFFFFFF
        else:
            rel = rng.getrandbits(16)
        code = pre + op + rel.to_bytes(size, "little")
    else:
        code = pre + (b"\xC3" if kind == "ret" else b"\xC2" + rng.randrange(0, 0x8000).to_bytes(2, "little"))
    ret_bytes = ret_target.to_bytes(size, "little")
    compare(code, ip, state, memory_image(lin, ret_bytes), 1)
