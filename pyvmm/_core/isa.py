"""The instruction set pyvmm's CPU implements: one declarative table.

Each row is one instruction form, written the way the Intel SDM's opcode map (Vol. 2,
Appendix A) writes it. From this table come
  * the decoder's per-opcode facts (ModRM present? which immediate? memory-only? LOCK ok?
    in the subset at all, or #UD?)  -> `decoder_table()`, loaded into the CPU at reset;
  * the differential test templates (tests/core/templates.py walks `INSTRUCTIONS`);
  * the flags the oracle may ignore: `undefined` and the count rules in `UNDEFINED_RULES`.
    Those are the ONLY bits the Unicorn comparison masks.

Operand notation (SDM A.2): E = ModRM r/m, G = ModRM reg, M = ModRM memory only,
S = segment register in ModRM reg, C / D = control / debug register in ModRM reg,
R = general register in ModRM r/m (the mod field is ignored), I = immediate, J = relative offset, O = moffs,
A = far pointer, Z = register in the opcode's low 3 bits, X/Y = DS:eSI / ES:eDI strings.
Sizes: b = byte, w = word, d = dword, v = word/dword by operand size, z = imm16/imm32,
p = 16:16 / 16:32 far pointer. Fixed operands (AL, eAX, CL, DX, 1) are written as such.
"""
from dataclasses import dataclass
from typing import Optional

# EFLAGS bits
CF, PF, AF, ZF, SF, OF = 0x001, 0x004, 0x010, 0x040, 0x080, 0x800
TF, IF, DF = 0x100, 0x200, 0x400
OSZAPC = OF | SF | ZF | AF | PF | CF
OSZAP = OF | SF | ZF | AF | PF
SZP = SF | ZF | PF


@dataclass(frozen=True)
class Insn:
    mnemonic: str
    opcode: int                 # 0x00-0xFF, or 0x0F00-0x0FFF for two-byte opcodes
    reg: Optional[int]          # ModRM.reg opcode extension (group opcodes), else None
    operands: str               # SDM notation, "" when none
    flags: int = 0              # EFLAGS arithmetic bits the instruction writes
    undefined: int = 0          # of those, bits the SDM leaves undefined (always)
    lock: bool = False          # LOCK allowed (with a memory destination)
    rule: str = ""              # count-dependent undefined bits, see UNDEFINED_RULES
    family: str = ""            # what the test templates need to know about it

    @property
    def has_modrm(self):
        return self.reg is not None or any(
            o[:1] in ("E", "G", "M", "S", "R", "C", "D") and o not in ("eAX", "DX")
            for o in self.operand_list)

    @property
    def operand_list(self):
        return [o for o in self.operands.split(",") if o]

    @property
    def memory_only(self):
        return any(o.startswith("M") for o in self.operand_list)

    @property
    def imm_kind(self):
        """Immediate bytes after ModRM/SIB/displacement, as a decoder kind."""
        ops = self.operand_list
        if ops == ["Iw", "Ib"]:
            return IMM_ENTER
        for o in ops:
            if o in ("Ib", "Jb"):
                return IMM_B
            if o == "Iw":
                return IMM_W
            if o in ("Iz", "Jz", "Iv"):
                return IMM_Z
            if o[:1] == "O":
                return IMM_MOFFS
            if o == "Ap":
                return IMM_PTR
        return IMM_NONE


# Decoder immediate kinds
IMM_NONE, IMM_B, IMM_W, IMM_Z, IMM_MOFFS, IMM_PTR, IMM_ENTER = range(7)

# Bits of one decoder-table byte
DEC_IMM_MASK = 0x07
DEC_MODRM = 0x08
DEC_VALID = 0x10
DEC_MEMONLY = 0x20
DEC_LOCK = 0x40


def _rows():
    rows = []

    def add(mn, opc, operands="", reg=None, **kw):
        rows.append(Insn(mn, opc, reg, operands, **kw))

    # -- arithmetic and logic: the classic 00-3F block and group 1 --------------------------
    alu = ["add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"]
    for n, mn in enumerate(alu):
        logic = mn in ("and", "or", "xor")
        und = AF if logic else 0
        lock = mn != "cmp"
        base = n * 8
        fam = "alu"
        add(mn, base + 0, "Eb,Gb", flags=OSZAPC, undefined=und, lock=lock, family=fam)
        add(mn, base + 1, "Ev,Gv", flags=OSZAPC, undefined=und, lock=lock, family=fam)
        add(mn, base + 2, "Gb,Eb", flags=OSZAPC, undefined=und, family=fam)
        add(mn, base + 3, "Gv,Ev", flags=OSZAPC, undefined=und, family=fam)
        add(mn, base + 4, "AL,Ib", flags=OSZAPC, undefined=und, family=fam)
        add(mn, base + 5, "eAX,Iz", flags=OSZAPC, undefined=und, family=fam)
        add(mn, 0x80, "Eb,Ib", reg=n, flags=OSZAPC, undefined=und, lock=lock, family=fam)
        add(mn, 0x81, "Ev,Iz", reg=n, flags=OSZAPC, undefined=und, lock=lock, family=fam)
        add(mn, 0x82, "Eb,Ib", reg=n, flags=OSZAPC, undefined=und, lock=lock, family=fam)
        add(mn, 0x83, "Ev,Ib", reg=n, flags=OSZAPC, undefined=und, lock=lock, family=fam)
    add("test", 0x84, "Eb,Gb", flags=OSZAPC, undefined=AF, family="alu")
    add("test", 0x85, "Ev,Gv", flags=OSZAPC, undefined=AF, family="alu")
    add("test", 0xA8, "AL,Ib", flags=OSZAPC, undefined=AF, family="alu")
    add("test", 0xA9, "eAX,Iz", flags=OSZAPC, undefined=AF, family="alu")
    for r in range(8):
        add("inc", 0x40 + r, f"Z{r}v", flags=OSZAP, family="alu")
        add("dec", 0x48 + r, f"Z{r}v", flags=OSZAP, family="alu")
    add("inc", 0xFE, "Eb", reg=0, flags=OSZAP, lock=True, family="alu")
    add("dec", 0xFE, "Eb", reg=1, flags=OSZAP, lock=True, family="alu")
    add("inc", 0xFF, "Ev", reg=0, flags=OSZAP, lock=True, family="alu")
    add("dec", 0xFF, "Ev", reg=1, flags=OSZAP, lock=True, family="alu")
    # group 3
    for opc, sz in ((0xF6, "b"), (0xF7, "v")):
        imm = "Ib" if sz == "b" else "Iz"
        add("test", opc, f"E{sz},{imm}", reg=0, flags=OSZAPC, undefined=AF, family="alu")
        add("test", opc, f"E{sz},{imm}", reg=1, flags=OSZAPC, undefined=AF, family="alu")
        add("not", opc, f"E{sz}", reg=2, lock=True, family="alu")
        add("neg", opc, f"E{sz}", reg=3, flags=OSZAPC, lock=True, family="alu")
        add("mul", opc, f"E{sz}", reg=4, flags=OSZAPC, undefined=SZP | AF, family="muldiv")
        add("imul", opc, f"E{sz}", reg=5, flags=OSZAPC, undefined=SZP | AF, family="muldiv")
        add("div", opc, f"E{sz}", reg=6, flags=OSZAPC, undefined=OSZAPC, family="muldiv")
        add("idiv", opc, f"E{sz}", reg=7, flags=OSZAPC, undefined=OSZAPC, family="muldiv")
    add("imul", 0x0FAF, "Gv,Ev", flags=OSZAPC, undefined=SZP | AF, family="muldiv")
    add("imul", 0x69, "Gv,Ev,Iz", flags=OSZAPC, undefined=SZP | AF, family="muldiv")
    add("imul", 0x6B, "Gv,Ev,Ib", flags=OSZAPC, undefined=SZP | AF, family="muldiv")
    # BCD
    add("daa", 0x27, flags=OSZAPC, undefined=OF, family="bcd")
    add("das", 0x2F, flags=OSZAPC, undefined=OF, family="bcd")
    add("aaa", 0x37, flags=OSZAPC, undefined=OF | SF | ZF | PF, family="bcd")
    add("aas", 0x3F, flags=OSZAPC, undefined=OF | SF | ZF | PF, family="bcd")
    add("aam", 0xD4, "Ib", flags=OSZAPC, undefined=OF | AF | CF, family="bcd")
    add("aad", 0xD5, "Ib", flags=OSZAPC, undefined=OF | AF | CF, family="bcd")

    # -- shifts and rotates: group 2 --------------------------------------------------------
    shifts = ["rol", "ror", "rcl", "rcr", "shl", "shr", "sal", "sar"]
    for n, mn in enumerate(shifts):
        rot = n < 4
        fl = (OF | CF) if rot else OSZAPC
        rule = "rotate" if rot else ("shr" if mn == "shr" else ("sar" if mn == "sar" else "shl"))
        for opc, ops in ((0xC0, "Eb,Ib"), (0xC1, "Ev,Ib"), (0xD0, "Eb,1"), (0xD1, "Ev,1"),
                         (0xD2, "Eb,CL"), (0xD3, "Ev,CL")):
            add(mn, opc, ops, reg=n, flags=fl, rule=rule, family="shift")
    add("shld", 0x0FA4, "Ev,Gv,Ib", flags=OSZAPC, rule="shld", family="shift")
    add("shld", 0x0FA5, "Ev,Gv,CL", flags=OSZAPC, rule="shld", family="shift")
    add("shrd", 0x0FAC, "Ev,Gv,Ib", flags=OSZAPC, rule="shld", family="shift")
    add("shrd", 0x0FAD, "Ev,Gv,CL", flags=OSZAPC, rule="shld", family="shift")

    # -- bits -----------------------------------------------------------------------------
    bt_und = OF | SF | AF | PF
    add("bt", 0x0FA3, "Ev,Gv", flags=CF | bt_und, undefined=bt_und, family="bit")
    add("bts", 0x0FAB, "Ev,Gv", flags=CF | bt_und, undefined=bt_und, lock=True, family="bit")
    add("btr", 0x0FB3, "Ev,Gv", flags=CF | bt_und, undefined=bt_und, lock=True, family="bit")
    add("btc", 0x0FBB, "Ev,Gv", flags=CF | bt_und, undefined=bt_und, lock=True, family="bit")
    for r, mn in ((4, "bt"), (5, "bts"), (6, "btr"), (7, "btc")):
        add(mn, 0x0FBA, "Ev,Ib", reg=r, flags=CF | bt_und, undefined=bt_und, lock=mn != "bt",
            family="bit")
    add("bsf", 0x0FBC, "Gv,Ev", flags=OSZAPC, undefined=OSZAPC & ~ZF, rule="bsf", family="bit")
    add("bsr", 0x0FBD, "Gv,Ev", flags=OSZAPC, undefined=OSZAPC & ~ZF, rule="bsf", family="bit")

    # -- data movement ----------------------------------------------------------------------
    add("mov", 0x88, "Eb,Gb", family="mov")
    add("mov", 0x89, "Ev,Gv", family="mov")
    add("mov", 0x8A, "Gb,Eb", family="mov")
    add("mov", 0x8B, "Gv,Ev", family="mov")
    for sreg in range(6):       # ES CS SS DS FS GS; reg 6 and 7 are #UD, MOV CS,r/m too
        add("mov", 0x8C, "Ew,Sw", reg=sreg, family="sreg")
        if sreg != 1:
            add("mov", 0x8E, "Sw,Ew", reg=sreg, family="sreg")
    add("mov", 0xA0, "AL,Ob", family="mov")
    add("mov", 0xA1, "eAX,Ov", family="mov")
    add("mov", 0xA2, "Ob,AL", family="mov")
    add("mov", 0xA3, "Ov,eAX", family="mov")
    for r in range(8):
        add("mov", 0xB0 + r, f"Z{r}b,Ib", family="mov")
        add("mov", 0xB8 + r, f"Z{r}v,Iv", family="mov")
    add("mov", 0xC6, "Eb,Ib", reg=0, family="mov")
    add("mov", 0xC7, "Ev,Iz", reg=0, family="mov")
    add("movzx", 0x0FB6, "Gv,Eb", family="mov")
    add("movzx", 0x0FB7, "Gv,Ew", family="mov")
    add("movsx", 0x0FBE, "Gv,Eb", family="mov")
    add("movsx", 0x0FBF, "Gv,Ew", family="mov")
    add("lea", 0x8D, "Gv,M", family="mov")
    add("xchg", 0x86, "Eb,Gb", lock=True, family="mov")
    add("xchg", 0x87, "Ev,Gv", lock=True, family="mov")
    for r in range(1, 8):
        add("xchg", 0x90 + r, f"Z{r}v,eAX", family="mov")
    add("nop", 0x90, family="misc")
    add("xadd", 0x0FC0, "Eb,Gb", flags=OSZAPC, lock=True, family="alu")
    add("xadd", 0x0FC1, "Ev,Gv", flags=OSZAPC, lock=True, family="alu")
    add("cmpxchg", 0x0FB0, "Eb,Gb", flags=OSZAPC, lock=True, family="alu")
    add("cmpxchg", 0x0FB1, "Ev,Gv", flags=OSZAPC, lock=True, family="alu")
    add("cmpxchg8b", 0x0FC7, "Mq", reg=1, flags=ZF, lock=True, family="alu")
    for r in range(8):
        add("bswap", 0x0FC8 + r, f"Z{r}d", rule="bswap", family="mov")
    add("xlat", 0xD7, family="mov")
    for r in range(8):
        add("push", 0x50 + r, f"Z{r}v", family="stack")
        add("pop", 0x58 + r, f"Z{r}v", family="stack")
    add("push", 0xFF, "Ev", reg=6, family="stack")
    add("pop", 0x8F, "Ev", reg=0, family="stack")
    add("push", 0x68, "Iz", family="stack")
    add("push", 0x6A, "Ib", family="stack")
    for opc, s in ((0x06, "es"), (0x0E, "cs"), (0x16, "ss"), (0x1E, "ds"),
                   (0x0FA0, "fs"), (0x0FA8, "gs")):
        add("push", opc, s, family="sreg")
    for opc, s in ((0x07, "es"), (0x17, "ss"), (0x1F, "ds"), (0x0FA1, "fs"), (0x0FA9, "gs")):
        add("pop", opc, s, family="sreg")
    add("pushad", 0x60, family="stack")
    add("popad", 0x61, family="stack")
    add("pushfd", 0x9C, family="stack")
    add("popfd", 0x9D, flags=OSZAPC, family="stack")
    add("enter", 0xC8, "Iw,Ib", family="stack")
    add("leave", 0xC9, family="stack")
    add("cwde", 0x98, family="mov")
    add("cdq", 0x99, family="mov")
    add("lahf", 0x9F, family="flags")
    add("sahf", 0x9E, flags=SF | ZF | AF | PF | CF, family="flags")
    for cc in range(16):
        add("cmovcc", 0x0F40 + cc, "Gv,Ev", family="cond")
        add("setcc", 0x0F90 + cc, "Eb", family="cond")

    # -- control transfer ---------------------------------------------------------------------
    for cc in range(16):
        add("jcc", 0x70 + cc, "Jb", family="branch")
        add("jcc", 0x0F80 + cc, "Jz", family="branch")
    add("jmp", 0xEB, "Jb", family="branch")
    add("jmp", 0xE9, "Jz", family="branch")
    add("jmp", 0xFF, "Ev", reg=4, family="branch")
    add("jmp", 0xEA, "Ap", family="far")
    add("jmp", 0xFF, "Mp", reg=5, family="far")
    add("call", 0xE8, "Jz", family="branch")
    add("call", 0xFF, "Ev", reg=2, family="branch")
    add("call", 0x9A, "Ap", family="far")
    add("call", 0xFF, "Mp", reg=3, family="far")
    add("ret", 0xC3, family="branch")
    add("ret", 0xC2, "Iw", family="branch")
    add("les", 0xC4, "Gv,Mp", family="far")
    add("lds", 0xC5, "Gv,Mp", family="far")
    add("lss", 0x0FB2, "Gv,Mp", family="far")
    add("lfs", 0x0FB4, "Gv,Mp", family="far")
    add("lgs", 0x0FB5, "Gv,Mp", family="far")
    add("retf", 0xCB, family="far")
    add("retf", 0xCA, "Iw", family="far")
    add("loopne", 0xE0, "Jb", family="branch")
    add("loope", 0xE1, "Jb", family="branch")
    add("loop", 0xE2, "Jb", family="branch")
    add("jecxz", 0xE3, "Jb", family="branch")
    add("bound", 0x62, "Gv,Ma", family="interrupt")
    add("wait", 0x9B, family="misc")
    add("int3", 0xCC, family="interrupt")
    add("int", 0xCD, "Ib", family="interrupt")
    add("into", 0xCE, family="interrupt")
    add("iretd", 0xCF, family="interrupt")

    # -- strings ------------------------------------------------------------------------------
    for opc, mn, ops, fl in ((0xA4, "movs", "Yb,Xb", 0), (0xA5, "movs", "Yv,Xv", 0),
                             (0xA6, "cmps", "Xb,Yb", OSZAPC), (0xA7, "cmps", "Xv,Yv", OSZAPC),
                             (0xAA, "stos", "Yb,AL", 0), (0xAB, "stos", "Yv,eAX", 0),
                             (0xAC, "lods", "AL,Xb", 0), (0xAD, "lods", "eAX,Xv", 0),
                             (0xAE, "scas", "AL,Yb", OSZAPC), (0xAF, "scas", "eAX,Yv", OSZAPC)):
        add(mn, opc, ops, flags=fl, family="string")
    add("ins", 0x6C, "Yb,DX", family="io")
    add("ins", 0x6D, "Yz,DX", family="io")
    add("outs", 0x6E, "DX,Xb", family="io")
    add("outs", 0x6F, "DX,Xz", family="io")
    add("in", 0xE4, "AL,Ib", family="io")
    add("in", 0xE5, "eAX,Ib", family="io")
    add("out", 0xE6, "Ib,AL", family="io")
    add("out", 0xE7, "Ib,eAX", family="io")
    add("in", 0xEC, "AL,DX", family="io")
    add("in", 0xED, "eAX,DX", family="io")
    add("out", 0xEE, "DX,AL", family="io")
    add("out", 0xEF, "DX,eAX", family="io")

    # -- flags and misc -------------------------------------------------------------------------
    add("clc", 0xF8, flags=CF, family="flags")
    add("stc", 0xF9, flags=CF, family="flags")
    add("cmc", 0xF5, flags=CF, family="flags")
    add("cld", 0xFC, family="flags")
    add("std", 0xFD, family="flags")
    add("cli", 0xFA, family="system")
    add("sti", 0xFB, family="system")
    add("hlt", 0xF4, family="system")
    add("nop", 0x0F1F, "Ev", reg=0, family="misc")
    add("cpuid", 0x0FA2, family="system")
    add("rdtsc", 0x0F31, family="system")
    add("rdmsr", 0x0F32, family="system")
    add("wrmsr", 0x0F30, family="system")
    add("ud2", 0x0F0B, family="system")    # defined to raise #UD: decodes, never executes
    add("sgdt", 0x0F01, "Ms", reg=0, family="system")
    add("sidt", 0x0F01, "Ms", reg=1, family="system")
    add("lgdt", 0x0F01, "Ms", reg=2, family="system")
    add("lidt", 0x0F01, "Ms", reg=3, family="system")
    add("smsw", 0x0F01, "Ew", reg=4, family="system")
    add("lmsw", 0x0F01, "Ew", reg=6, family="system")
    add("sldt", 0x0F00, "Ew", reg=0, family="system")
    add("str", 0x0F00, "Ew", reg=1, family="system")
    add("lldt", 0x0F00, "Ew", reg=2, family="system")
    add("ltr", 0x0F00, "Ew", reg=3, family="system")
    add("verr", 0x0F00, "Ew", reg=4, flags=ZF, family="system")
    add("verw", 0x0F00, "Ew", reg=5, flags=ZF, family="system")
    add("lar", 0x0F02, "Gv,Ew", flags=ZF, family="system")
    add("lsl", 0x0F03, "Gv,Ew", flags=ZF, family="system")
    add("invlpg", 0x0F01, "M", reg=7, family="system")
    add("clts", 0x0F06, family="system")
    add("invd", 0x0F08, family="system")
    add("wbinvd", 0x0F09, family="system")
    # MOV to/from control and debug registers: flags undefined (SDM MOV CRn, MOV DRn)
    for cr in (0, 2, 3, 4):         # CR1, CR5-CR7 do not exist: #UD
        add("mov", 0x0F20, "Rd,Cd", reg=cr, flags=OSZAPC, undefined=OSZAPC, family="system")
        add("mov", 0x0F22, "Cd,Rd", reg=cr, flags=OSZAPC, undefined=OSZAPC, family="system")
    add("mov", 0x0F21, "Rd,Dd", flags=OSZAPC, undefined=OSZAPC, family="system")
    add("mov", 0x0F23, "Dd,Rd", flags=OSZAPC, undefined=OSZAPC, family="system")
    return rows


INSTRUCTIONS = _rows()

# Count-dependent undefined flags (and results), exactly as the SDM words them.
# `count` is the masked count (count & 0x1F); `size` the operand size in bits.
UNDEFINED_RULES = {
    # SHL/SAL: CF undefined when count >= size; OF undefined unless count == 1; AF undefined.
    "shl": "count != 0: AF; count > 1: OF; count >= size: CF",
    "shr": "count != 0: AF; count > 1: OF; count >= size: CF",
    "sar": "count != 0: AF; count > 1: OF",
    # ROL/ROR/RCL/RCR: only CF and OF are written; OF undefined unless count == 1.
    "rotate": "count > 1: OF",
    # SHLD/SHRD: AF undefined; OF unless count == 1; count > size: result and all flags.
    "shld": "count != 0: AF; count > 1: OF; count > size: OF SF ZF AF PF CF and result",
    # BSF/BSR: destination undefined when the source is zero.
    "bsf": "source == 0: result",
    # BSWAP: "When the BSWAP instruction references a 16-bit register, the result is undefined."
    "bswap": "size == 16: result",
}


def undefined_mask(insn, count=None, size=32):
    """EFLAGS bits the SDM leaves undefined for `insn` executed with shift `count`.

    Also answers whether the destination operand itself is undefined
    (returns (flag_mask, result_undefined))."""
    mask = insn.undefined
    result = False
    if insn.rule in ("shl", "shr", "sar", "rotate", "shld") and count is not None:
        if count != 0 and insn.rule != "rotate":
            mask |= AF
        if count > 1:
            mask |= OF
        if insn.rule in ("shl", "shr") and count >= size:
            mask |= CF
        if insn.rule == "shld" and count > size:
            mask |= OSZAPC
            result = True
    if insn.rule == "bswap" and size == 16:
        result = True
    return mask, result


def decoder_table():
    """4096 bytes: entry (opcode_index << 3) | reg, opcode_index 0x000-0x1FF (0x100+ = 0F xx).

    For opcodes without a ModRM byte only entry reg=0 is used."""
    table = [0] * 4096
    by_op = {}
    for ins in INSTRUCTIONS:
        idx = ins.opcode if ins.opcode < 0x100 else 0x100 | (ins.opcode & 0xFF)
        by_op.setdefault(idx, []).append(ins)
    for idx, rows in by_op.items():
        modrm = any(r.has_modrm for r in rows)
        for reg in range(8):
            match = [r for r in rows if r.reg is None or r.reg == reg]
            if not match:
                continue
            r = match[0]
            entry = r.imm_kind | DEC_VALID
            if modrm:
                entry |= DEC_MODRM
            if r.memory_only:
                entry |= DEC_MEMONLY
            if r.lock:
                entry |= DEC_LOCK
            table[(idx << 3) | reg] = entry
            if not modrm:
                break
        if modrm:
            # Invalid /reg values of a group still need ModRM to be decoded (for length).
            for reg in range(8):
                table[(idx << 3) | reg] |= DEC_MODRM
    return table


def lookup(opcode, reg=None):
    """The table row for an opcode (and ModRM.reg for groups), or None."""
    for ins in INSTRUCTIONS:
        if ins.opcode == opcode and (ins.reg is None or ins.reg == reg):
            return ins
    return None
