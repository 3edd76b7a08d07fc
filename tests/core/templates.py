"""Concrete test cases built from pyvmm._core.isa.INSTRUCTIONS.

`make_case(rng, row)` turns one table row into one runnable `Case` (pyvmm.oracle): an
encoding (prefixes, opcode, ModRM/SIB, displacement, immediates) for a random operand size
(0x66), addressing form (register, [reg], [reg+disp8], [reg+disp32], [disp32], SIB with
every base/index/scale incl. no base and ESP base, 16-bit addressing via 0x67), random
segment override / LOCK / REP prefixes where they mean something, and a random register
and flag state arranged so that every memory operand lands inside the data region.

`rng` is anything with the `random.Random` interface: hypothesis' `st.randoms()` in the
tests (so failures shrink), a seeded `random.Random` in the campaign runner.

Memory layout of every case (both machines):
    DATA  [0x00000, 0x10000)  64 KiB of seeded random bytes; memory operands, the stack and
                              string pointers point here (16-bit addressing reaches it too)
    CODE  [0x10000, 0x20000)  filled with HLT (F4); the instruction sits at CODE_ADDR and the
                              run stops at its end (`until`); a stray jump ends at a HLT
Both regions are compared byte for byte after the run.

`annotate(case)` decodes the case's code with a small table-driven decoder (`parse`) and
fills in what the comparison may ignore, from isa.undefined_mask and the SDM's
undefined-result rules (shift counts, BSF/BSR of zero), using the final register and
memory state, so template cases and random-byte cases go through the same rules.

Families that are skipped in the differential suite (`SKIP_FAMILIES`, `SKIP_MNEMONICS`)
are tested by their own expected behaviour in test_harness_api.py.
"""
import random
from dataclasses import dataclass
from typing import Optional

from pyvmm._core import isa
from pyvmm.oracle import Case

DATA_BASE, DATA_SIZE = 0x00000, 0x10000
CODE_BASE, CODE_SIZE = 0x10000, 0x10000
CODE_ADDR = 0x18000
REGIONS = ((DATA_BASE, DATA_SIZE), (CODE_BASE, CODE_SIZE))
MARGIN = 0x100                  # memory operands keep this far from the region's edges
HLT = 0xF4

REG32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
REG16 = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")
REG8 = ("al", "cl", "dl", "bl", "ah", "ch", "dh", "bh")
EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)

SEG_PREFIXES = (0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65)
LEGACY_PREFIXES = frozenset((0x66, 0x67, 0xF0, 0xF2, 0xF3) + SEG_PREFIXES)

# Families / rows the differential suite does not run on Unicorn (see test_harness_api.py):
# far transfers and interrupts need descriptor tables neither side has at reset; I/O,
# CPUID, RDTSC, SGDT/SIDT/SMSW and HLT have machine-specific results.
SKIP_FAMILIES = frozenset(("far", "interrupt", "io"))
SKIP_MNEMONICS = frozenset(("hlt", "cpuid", "rdtsc", "sgdt", "sidt", "lgdt", "lidt", "smsw",
                            "lmsw", "invlpg", "clts", "invd", "wbinvd",
                            # descriptor-table instructions: they need GDT/LDT/TSS set-ups the
                            # templates do not make; tests/core/test_privilege.py checks them
                            # by the SDM (Unicorn also loads a null selector with LTR, where
                            # the SDM says #GP(0))
                            "sldt", "str", "lldt", "ltr", "verr", "verw", "lar", "lsl",
                            # model-specific registers are this machine's own
                            "rdmsr", "wrmsr"))
# ... and MOV to/from control and debug registers (machine state Unicorn models differently)
SKIP_OPERANDS = frozenset(("Cd", "Dd"))
# Families whose run may leave segment/descriptor state behind: fresh machines each time.
FRESH_FAMILIES = frozenset(("sreg", "system", "far", "interrupt", "io"))

# Operand size: rows whose behaviour depends on it even though no operand says 'v'/'z'
SIZE_MNEMONICS = frozenset(("cwde", "cdq", "pushad", "popad", "pushfd", "popfd", "enter",
                            "leave", "ret", "retf", "iretd", "push", "pop", "jmp", "call",
                            "jcc", "loop", "loope", "loopne", "jecxz"))
NO_OPSIZE_PREFIX = frozenset(("bswap", "cmpxchg8b"))   # 0x66 there is undefined / reserved
# Memory operand only read (a CS override is allowed: code segments are readable)
READ_ONLY_MNEMONICS = frozenset(("cmp", "test", "bt", "push", "jmp", "call", "nop", "lea",
                                 "mov", "movzx", "movsx", "imul", "mul", "div", "idiv",
                                 "bsf", "bsr", "cmovcc"))

# LOCK with a register destination: Unicorn aborts the process (bts/btr/btc) or runs it
# (xchg, xadd) instead of raising #UD (unicorn_runner.UNICORN_LIMITS)
LOCK_REG_UNICORN_BROKEN = frozenset(("bts", "btr", "btc", "xchg", "xadd"))

INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
               0x7FFFFFFF, 0x80000000, 0x80000001, 0xFFFFFFFE, 0xFFFFFFFF)


def families():
    """The families the differential suite covers, in table order."""
    out = []
    for row in isa.INSTRUCTIONS:
        if row.family not in SKIP_FAMILIES and row.family not in out and testable(row):
            out.append(row.family)
    return out


def testable(row):
    return (row.family not in SKIP_FAMILIES and row.mnemonic not in SKIP_MNEMONICS
            and not SKIP_OPERANDS.intersection(row.operand_list))


def rows_of(family):
    return [r for r in isa.INSTRUCTIONS if r.family == family and testable(r)]


# ------------------------------------------------------------------------------------------
# Random values
# ------------------------------------------------------------------------------------------
def rand_value(rng, bits=32):
    k = rng.random()
    mask = (1 << bits) - 1
    if k < 0.15:
        return rng.randrange(0, 4)
    if k < 0.4:
        sign = 1 << (bits - 1)
        return rng.choice((0, 1, mask, sign, sign - 1, sign + 1, mask - 1, 0x80 & mask,
                           0x7F, 0xFF & mask, (sign >> 1)))
    if k < 0.55:
        return rng.randrange(0, 0x100) & mask
    return rng.getrandbits(bits)


def rand_reg32(rng):
    k = rng.random()
    if k < 0.25:
        return rng.choice(INTERESTING)
    if k < 0.4:
        return rng.randrange(0, 0x100)
    if k < 0.5:
        return rng.randrange(DATA_BASE, DATA_BASE + DATA_SIZE)    # looks like a pointer
    return rng.getrandbits(32)


def to_bytes(v, n):
    return (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little")


def sext(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


# ------------------------------------------------------------------------------------------
# Operand notation
# ------------------------------------------------------------------------------------------
def operand_bytes(spec, opsize, adsize=32):
    """Size in bytes of an operand written in isa notation, or None for no access."""
    letter = spec[-1]
    if spec in ("AL", "CL"):
        return 1
    if spec in ("eAX",):
        return opsize // 8
    if spec == "DX":
        return 2
    if spec == "M":
        return None
    return {"b": 1, "w": 2, "d": 4, "v": opsize // 8, "z": opsize // 8, "q": 8,
            "p": opsize // 8 + 2, "s": 6}.get(letter)


def imm_bytes(spec, opsize, adsize):
    kind = spec[0]
    if spec in ("Ib", "Jb"):
        return 1
    if spec == "Iw":
        return 2
    if spec in ("Iz", "Iv", "Jz"):
        return opsize // 8
    if kind == "O":
        return adsize // 8
    if spec == "Ap":
        return opsize // 8 + 2
    return 0


def address_sized(row):
    """Rows whose behaviour depends on the address size without a ModRM memory operand."""
    return (row.family == "string" or row.mnemonic in ("xlat", "loop", "loope", "loopne", "jecxz")
            or any(o[0] == "O" for o in row.operand_list))


def sizable(row):
    if row.mnemonic in NO_OPSIZE_PREFIX:
        return False
    return row.mnemonic in SIZE_MNEMONICS or any(o[-1] in "vzp" for o in row.operand_list)


# ------------------------------------------------------------------------------------------
# A small decoder (for annotate() and the random-byte tests)
# ------------------------------------------------------------------------------------------
MODRM16 = {0: (EBX, ESI), 1: (EBX, EDI), 2: (EBP, ESI), 3: (EBP, EDI), 4: (ESI,), 5: (EDI,),
           6: (EBP,), 7: (EBX,)}


@dataclass
class Parsed:
    row: object
    prefixes: bytes
    opcode: int
    opsize: int
    adsize: int
    length: int
    mod: Optional[int] = None
    reg: Optional[int] = None
    rm: Optional[int] = None
    base: Optional[int] = None
    index: Optional[int] = None
    scale: int = 0
    disp: int = 0
    imm: bytes = b""
    imm_offset: int = 0

    @property
    def rep(self):
        for p in reversed(self.prefixes):
            if p in (0xF2, 0xF3):
                return p
        return None

    @property
    def lock(self):
        return 0xF0 in self.prefixes

    def ea(self, regs):
        """Effective address of the ModRM memory operand with GPR values `regs` (list)."""
        if self.adsize == 16:
            total = self.disp
            for r in (self.base, self.index):
                if r is not None:
                    total += regs[r] & 0xFFFF
            return total & 0xFFFF
        total = self.disp
        if self.base is not None:
            total += regs[self.base]
        if self.index is not None:
            total += regs[self.index] << self.scale
        return total & 0xFFFFFFFF


def parse(code):
    """Decode one instruction of the isa subset; None when its opcode is not in the table
    or the bytes run out."""
    try:
        i = 0
        prefixes = bytearray()
        while code[i] in LEGACY_PREFIXES:
            prefixes.append(code[i])
            i += 1
            if i > 14:
                return None
        opsize = 16 if 0x66 in prefixes else 32
        adsize = 16 if 0x67 in prefixes else 32
        op = code[i]
        i += 1
        if op == 0x0F:
            op = 0x0F00 | code[i]
            i += 1
        rows = [r for r in isa.INSTRUCTIONS if r.opcode == op]
        if not rows:
            return None
        p = Parsed(None, bytes(prefixes), op, opsize, adsize, 0)
        if any(r.has_modrm for r in rows):
            modrm = code[i]
            i += 1
            p.mod, p.reg, p.rm = modrm >> 6, (modrm >> 3) & 7, modrm & 7
            if any(o[0] == "R" for r in rows for o in r.operand_list):
                p.mod = 3                   # R operands: the mod field is ignored
            if p.mod != 3:
                if adsize == 32:
                    if p.rm == 4:
                        sib = code[i]
                        i += 1
                        p.scale, idx, base = sib >> 6, (sib >> 3) & 7, sib & 7
                        p.index = None if idx == 4 else idx
                        if base == 5 and p.mod == 0:
                            p.base = None
                            p.disp = int.from_bytes(code[i:i + 4], "little")
                            if len(code) < i + 4:
                                return None
                            i += 4
                        else:
                            p.base = base
                    elif p.rm == 5 and p.mod == 0:
                        p.disp = int.from_bytes(code[i:i + 4], "little")
                        if len(code) < i + 4:
                            return None
                        i += 4
                    else:
                        p.base = p.rm
                    if p.mod == 1:
                        p.disp = sext(code[i], 8) & 0xFFFFFFFF
                        i += 1
                    elif p.mod == 2:
                        if len(code) < i + 4:
                            return None
                        p.disp = int.from_bytes(code[i:i + 4], "little")
                        i += 4
                else:
                    if p.mod == 0 and p.rm == 6:
                        if len(code) < i + 2:
                            return None
                        p.disp = int.from_bytes(code[i:i + 2], "little")
                        i += 2
                    else:
                        regs16 = MODRM16[p.rm]
                        p.base = regs16[0]
                        p.index = regs16[1] if len(regs16) > 1 else None
                        if p.mod == 1:
                            p.disp = sext(code[i], 8) & 0xFFFF
                            i += 1
                        elif p.mod == 2:
                            if len(code) < i + 2:
                                return None
                            p.disp = int.from_bytes(code[i:i + 2], "little")
                            i += 2
        p.row = isa.lookup(op, p.reg)
        if p.row is None:
            return None
        kind = p.row.imm_kind
        n = {isa.IMM_NONE: 0, isa.IMM_B: 1, isa.IMM_W: 2, isa.IMM_Z: opsize // 8,
             isa.IMM_MOFFS: adsize // 8, isa.IMM_PTR: opsize // 8 + 2, isa.IMM_ENTER: 3}[kind]
        if len(code) < i + n:
            return None
        p.imm_offset = i
        p.imm = bytes(code[i:i + n])
        p.length = i + n
        return p
    except IndexError:
        return None


# ------------------------------------------------------------------------------------------
# Locations (register or memory operands) and their values in a case's initial state
# ------------------------------------------------------------------------------------------
def reg_location_name(r, size):
    """(32-bit register name, bit mask within it) of register number r at `size` bytes."""
    if size == 1:
        return (REG32[r & 3], 0xFF00 if r >= 4 else 0xFF)
    return (REG32[r], 0xFFFF if size == 2 else 0xFFFFFFFF)


def get_reg(regs, r, size):
    if size == 1:
        return (regs[r & 3] >> (8 if r >= 4 else 0)) & 0xFF
    return regs[r] & (0xFFFF if size == 2 else 0xFFFFFFFF)


def set_reg(regs, r, size, v):
    if size == 1:
        shift = 8 if r >= 4 else 0
        regs[r & 3] = (regs[r & 3] & ~(0xFF << shift) & 0xFFFFFFFF) | ((v & 0xFF) << shift)
    elif size == 2:
        regs[r] = (regs[r] & 0xFFFF0000) | (v & 0xFFFF)
    else:
        regs[r] = v & 0xFFFFFFFF


def operand_locations(p, regs):
    """{'E': ('reg', r, size) | ('mem', ea, size), 'G': ('reg', r, size)} for parsed p."""
    out = {}
    for spec in p.row.operand_list:
        kind = spec[0]
        size = operand_bytes(spec, p.opsize, p.adsize)
        if kind in ("E", "M", "R") and p.mod is not None:
            if p.mod == 3:
                out["E"] = ("reg", p.rm, size)
            else:
                out["E"] = ("mem", p.ea(regs), size)
        elif kind == "G":
            out["G"] = ("reg", p.reg, size)
    return out


# ------------------------------------------------------------------------------------------
# annotate: what the comparison may ignore
# ------------------------------------------------------------------------------------------
def annotate(case, p=None):
    """Fill case.insn/opsize/adsize/shift_count/flag_mask/undefined_* from the SDM rules
    (isa.undefined_mask) evaluated on the case's initial state."""
    if p is None:
        p = parse(case.code)
    if p is None:
        return case
    row = p.row
    regs = [case.regs.get(n, 0) & 0xFFFFFFFF for n in REG32]
    case.insn, case.opsize, case.adsize = row, p.opsize, p.adsize
    case.family = case.family or row.family
    locs = operand_locations(p, regs)
    mask = row.undefined
    if row.rule in ("shl", "shr", "sar", "rotate", "shld"):
        ops = row.operand_list
        if ops[-1] == "CL":
            count = regs[ECX] & 0xFF
        elif ops[-1] == "Ib":
            count = p.imm[0]
        else:
            count = 1
        count &= 0x1F
        e = locs.get("E")
        size_bits = 8 * (e[2] if e else p.opsize // 8)
        mask, result_undefined = isa.undefined_mask(row, count, size_bits)
        case.shift_count = count
        if result_undefined and e is not None:
            _mark_undefined(case, e)
    elif row.rule == "bsf":
        e = locs.get("E")
        if e is not None:
            if e[0] == "reg":
                src = get_reg(regs, e[1], e[2])
            else:
                src = int.from_bytes(case.initial_memory(e[1], e[2]), "little")
            if src == 0:
                _mark_undefined(case, locs["G"])
    case.flag_mask = mask
    return case


def _mark_undefined(case, loc):
    if loc[0] == "reg":
        name, bits = reg_location_name(loc[1], loc[2])
        case.undefined_regs[name] = case.undefined_regs.get(name, 0) | bits
    else:
        case.undefined_mem.append((loc[1], loc[2]))


# ------------------------------------------------------------------------------------------
# The builder
# ------------------------------------------------------------------------------------------
class Unsolvable(Exception):
    pass


class Builder:
    """Assembles one instruction and the register/memory state around it."""

    def __init__(self, rng, row):
        self.rng = rng
        self.row = row
        self.regs = [rand_reg32(rng) for _ in range(8)]
        self.regs[ESP] = self.stack_pointer()
        self.pinned = set()          # registers an address depends on: not to be changed
        self.opsize = 32
        self.adsize = 32
        self.prefixes = []
        self.modrm = None
        self.sib = None
        self.disp = b""
        self.imm = b""
        self.E = None                # ('reg', r, size) / ('mem', ea, size)
        self.G = None
        self.count = 0
        self.fresh = row.family in FRESH_FAMILIES
        self.notes = {}
        self.watch = []
        seed = rng.getrandbits(32)
        self.notes["data seed"] = seed
        self.data = bytearray(random.Random(seed).randbytes(DATA_SIZE))
        fl = 0x2 | (rng.getrandbits(12) & isa.OSZAPC)
        if rng.random() < 0.3:
            fl |= isa.DF
        if rng.random() < 0.3:
            fl |= isa.IF
        if rng.random() < 0.1:
            fl |= rng.choice((0x4000, 0x40000, 0x200000, 0x3000))    # NT, AC, ID, IOPL
        self.eflags = fl

    # -- random pieces ----------------------------------------------------------------------
    def stack_pointer(self):
        sp = self.rng.randrange(0x800, DATA_SIZE - 0x800)
        return sp & ~3 if self.rng.random() < 0.85 else sp

    def pick_ea(self, size=4):
        ea = self.rng.randrange(DATA_BASE + MARGIN, DATA_BASE + DATA_SIZE - MARGIN)
        if self.rng.random() < 0.3:
            ea &= ~(max(size, 1) - 1)
        return ea

    def free(self, r, fixed=()):
        return r is not None and r not in self.pinned and r not in fixed

    # -- memory --------------------------------------------------------------------------------
    def mem_read(self, addr, size):
        return int.from_bytes(self.data[addr - DATA_BASE:addr - DATA_BASE + size], "little")

    def mem_write(self, addr, size, value):
        off = addr - DATA_BASE
        if 0 <= off and off + size <= DATA_SIZE:
            self.data[off:off + size] = to_bytes(value, size)

    def loc_read(self, loc):
        if loc[0] == "reg":
            return get_reg(self.regs, loc[1], loc[2])
        return self.mem_read(loc[1], loc[2])

    def loc_writable(self, loc):
        if loc[0] == "mem":
            return True
        r = loc[1] & 3 if loc[2] == 1 else loc[1]
        return r not in self.pinned

    def loc_write(self, loc, value):
        """Set an operand's initial value; False when its register is pinned."""
        if not self.loc_writable(loc):
            return False
        if loc[0] == "reg":
            set_reg(self.regs, loc[1], loc[2], value)
        else:
            self.mem_write(loc[1], loc[2], value)
        return True

    def set_reg(self, r, size, value):
        if r in self.pinned or (size == 1 and (r & 3) in self.pinned):
            return False
        set_reg(self.regs, r, size, value)
        return True

    # -- addressing ----------------------------------------------------------------------------
    def memory_operand(self, size, fixed=(), anywhere=False):
        """Choose a ModRM memory form whose effective address lands in the data region
        (anywhere at all with anywhere=True, for LEA and NOP Ev); sets modrm mod/rm,
        sib, disp and the base/index registers. Returns the EA."""
        for _attempt in range(30):
            ea = self.rng.getrandbits(32) if anywhere else self.pick_ea(size or 1)
            if self.adsize == 16:
                ea &= 0xFFFF
                if not anywhere and ea + (size or 1) > DATA_SIZE - 8:
                    continue
            try:
                if self.adsize == 32:
                    return self._mem32(ea, fixed, anywhere)
                return self._mem16(ea, fixed, anywhere)
            except Unsolvable:
                continue
        # [disp32] / [disp16] always works
        ea = self.pick_ea(size or 1)
        if self.adsize == 32:
            self.mod, self.rm, self.sib = 0, 5, None
            self.disp = to_bytes(ea, 4)
        else:
            self.mod, self.rm, self.sib = 0, 6, None
            self.disp = to_bytes(ea, 2)
        return ea

    def _in_data(self, ea, size):
        return DATA_BASE + MARGIN <= ea and ea + (size or 1) <= DATA_BASE + DATA_SIZE - MARGIN

    def _mem32(self, ea, fixed, anywhere):
        rng = self.rng
        form = rng.choice(("base", "base8", "base32", "disp32", "sib", "sib"))
        base = index = None
        scale = 0
        sib = None
        if form == "base":
            mod, rm = 0, rng.choice((0, 1, 2, 3, 6, 7))
            base, dkind = rm, 0
        elif form in ("base8", "base32"):
            mod = 1 if form == "base8" else 2
            rm = rng.choice((0, 1, 2, 3, 5, 6, 7))
            base, dkind = rm, (1 if mod == 1 else 4)
        elif form == "disp32":
            mod, rm, dkind = 0, 5, 4
        else:
            mod, rm = rng.choice((0, 1, 2)), 4
            scale = rng.randrange(4)
            idx = rng.randrange(8)
            b = rng.randrange(8)
            if rng.random() < 0.15:
                mod, b = 0, 5                           # no base: [index*scale + disp32]
            index = None if idx == 4 else idx
            if b == 5 and mod == 0:
                base, dkind = None, 4
            else:
                base, dkind = b, (0, 1, 4)[mod]
            sib = (scale << 6) | (idx << 3) | b
        disp = 0
        if dkind == 1:
            disp = rng.randrange(-128, 128)
        elif dkind == 4:
            disp = rng.choice((rng.getrandbits(32), rng.randrange(-0x100, 0x100)))
        regs = self.regs
        s = 1 << scale
        if index is not None and index != base and self.free(index, fixed):
            regs[index] = rng.choice((rng.randrange(0, 0x100), rng.getrandbits(32),
                                      (-rng.randrange(1, 0x100)) & 0xFFFFFFFF))
        if base is not None and self.free(base, fixed):
            if base == index:
                c = 1 + s
                need = (ea - disp) & 0xFFFFFFFF
                if c == 2:
                    if need & 1:
                        ea -= 1
                        need -= 1
                    regs[base] = ((need >> 1) + rng.choice((0, 0x80000000))) & 0xFFFFFFFF
                else:
                    regs[base] = (need * pow(c, -1, 1 << 32)) & 0xFFFFFFFF
            else:
                iv = regs[index] * s if index is not None else 0
                regs[base] = (ea - iv - disp) & 0xFFFFFFFF
        elif index is not None and self.free(index, fixed):
            bv = regs[base] if base is not None else 0
            need = (ea - bv - disp) & 0xFFFFFFFF
            rem = need % s
            ea -= rem
            need -= rem
            regs[index] = ((need // s) + rng.randrange(s) * ((1 << 32) // s)) & 0xFFFFFFFF
        elif dkind == 4:
            bv = regs[base] if base is not None else 0
            iv = regs[index] * s if index is not None else 0
            disp = (ea - bv - iv) & 0xFFFFFFFF
        else:
            bv = regs[base] if base is not None else 0
            iv = regs[index] * s if index is not None else 0
            ea = (bv + iv + disp) & 0xFFFFFFFF
            if not anywhere and not self._in_data(ea, 8):
                raise Unsolvable
        for r in (base, index):
            if r is not None:
                self.pinned.add(r)
        self.mod, self.rm, self.sib = mod, rm, sib
        self.disp = to_bytes(disp, dkind) if dkind else b""
        return ea & 0xFFFFFFFF

    def _mem16(self, ea, fixed, anywhere):
        rng = self.rng
        mod, rm = rng.choice((0, 1, 2)), rng.randrange(8)
        if mod == 0 and rm == 6:
            used, dkind = (), 2
        else:
            used, dkind = MODRM16[rm], (0, 1, 2)[mod]
        disp = 0
        if dkind == 1:
            disp = rng.randrange(-128, 128)
        elif dkind == 2:
            disp = rng.getrandbits(16)
        regs = self.regs
        free = [r for r in used if self.free(r, fixed)]
        if free:
            r = free[0]
            others = sum(regs[o] & 0xFFFF for o in used if o != r)
            regs[r] = (regs[r] & 0xFFFF0000) | ((ea - others - disp) & 0xFFFF)
        elif dkind == 2:
            disp = (ea - sum(regs[o] & 0xFFFF for o in used)) & 0xFFFF
        else:
            ea = (sum(regs[o] & 0xFFFF for o in used) + disp) & 0xFFFF
            if not anywhere and not self._in_data(ea, 8):
                raise Unsolvable
        for r in used:
            self.pinned.add(r)
        self.mod, self.rm, self.sib = mod, rm, None
        self.disp = to_bytes(disp, dkind) if dkind else b""
        return ea

    # -- the generic encoder ---------------------------------------------------------------------
    def choose_sizes(self, mem_form):
        rng = self.rng
        row = self.row
        if sizable(row):
            self.opsize = 16 if rng.random() < 0.3 else 32
        elif row.mnemonic not in NO_OPSIZE_PREFIX and rng.random() < 0.04:
            self.prefixes.append(0x66)          # meaningless here: must be ignored
        if self.opsize == 16:
            self.prefixes.append(0x66)
        if (mem_form or address_sized(row)) and rng.random() < 0.25:
            self.adsize = 16
            self.prefixes.append(0x67)
        elif not mem_form and not address_sized(row) and rng.random() < 0.03:
            self.prefixes.append(0x67)          # no memory operand: must be ignored

    def build(self, mem=None, reg_field=None, fixed=(), anywhere=False, seg_override=True):
        """Encode self.row with the generic rules: E operand in a register or memory
        (`mem` forces one), G a random register. Sets self.E / self.G."""
        rng = self.rng
        row = self.row
        ops = row.operand_list
        modrm_needed = row.has_modrm
        if mem is None:
            mem = row.memory_only or (modrm_needed and rng.random() < 0.5)
        if row.memory_only:
            mem = True
        self.choose_sizes(mem and modrm_needed)
        if modrm_needed:
            if row.reg is not None:
                reg = row.reg
            elif reg_field is not None:
                reg = reg_field
            else:
                reg = rng.randrange(8)
            self.reg_field = reg
            espec = next((o for o in ops if o[0] in "EM"), None)
            esize = operand_bytes(espec, self.opsize, self.adsize) if espec else None
            if mem:
                ea = self.memory_operand(esize, fixed=fixed, anywhere=anywhere)
                self.E = ("mem", ea, esize)
                if esize:
                    self.watch.append((ea, esize))
                if seg_override and rng.random() < 0.15:
                    segs = SEG_PREFIXES if self.cs_ok() else tuple(p for p in SEG_PREFIXES if p != 0x2E)
                    self.prefixes.append(rng.choice(segs))
            else:
                self.mod, self.rm, self.sib, self.disp = 3, rng.randrange(8), None, b""
                self.E = ("reg", self.rm, esize)
            gspec = next((o for o in ops if o[0] == "G"), None)
            if gspec:
                self.G = ("reg", reg, operand_bytes(gspec, self.opsize))
            self.modrm = (self.mod << 6) | (reg << 3) | self.rm
        # LOCK
        if row.lock and self.E is not None:
            if self.E[0] == "mem" and rng.random() < 0.3:
                self.prefixes.append(0xF0)
            elif (self.E[0] == "reg" and row.mnemonic not in LOCK_REG_UNICORN_BROKEN
                  and 0x67 not in self.prefixes and rng.random() < 0.03):
                # (Unicorn 2.1.4 runs `lock` + a register form when 0x67 is present too,
                # e.g. f0 67 30 e4 "lock xor ah, ah": pyvmm's #UD there is checked by
                # tests/core/test_random_bytes.py's invalid-LOCK test)
                self.prefixes.append(0xF0)      # #UD: LOCK needs a memory destination
        # immediates
        imm = b""
        for spec in ops:
            n = imm_bytes(spec, self.opsize, self.adsize)
            if not n:
                continue
            if spec[0] == "O":
                ea = self.pick_ea(operand_bytes(spec, self.opsize))
                if self.adsize == 16:
                    ea &= 0xFFFF
                self.E = ("mem", ea, operand_bytes(spec, self.opsize))
                self.watch.append((ea, self.E[2]))
                imm += to_bytes(ea, n)
                if rng.random() < 0.15:
                    segs = SEG_PREFIXES if self.cs_ok() else tuple(p for p in SEG_PREFIXES if p != 0x2E)
                    self.prefixes.append(rng.choice(segs))
            else:
                imm += to_bytes(rand_value(rng, 8 * n), n)
        if row.imm_kind == isa.IMM_ENTER:
            # Iw < 0x8000: Unicorn sign-extends it (see unicorn_runner.UNICORN_LIMITS)
            imm = to_bytes(rng.choice((0, 4, rng.randrange(0, 0x200), rng.getrandbits(15))), 2) \
                + bytes([rng.choice((0, 1, 2, rng.randrange(0, 32), rng.getrandbits(8)))])
        self.imm = imm
        rng.shuffle(self.prefixes)

    def cs_ok(self):
        """May the memory operand be read through CS (only read, never written)?"""
        return cs_override_ok(self.row)

    def encode(self):
        op = self.row.opcode
        out = bytearray(self.prefixes)
        if op >= 0x0F00:
            out += bytes((0x0F, op & 0xFF))
        else:
            out.append(op)
        if self.modrm is not None:
            out.append(self.modrm)
            if self.sib is not None:
                out.append(self.sib)
            out += self.disp
        out += self.imm
        return bytes(out)

    def set_operand_values(self):
        """Interesting values for the E and G operands (where not pinned)."""
        for loc in (self.E, self.G):
            if loc is not None and loc[2] and self.rng.random() < 0.5:
                self.loc_write(loc, rand_value(self.rng, 8 * min(loc[2], 4)))

    def finish(self, description=""):
        code = self.encode()
        code_region = bytearray([HLT]) * CODE_SIZE
        off = CODE_ADDR - CODE_BASE
        code_region[off:off + len(code)] = code
        regs = {n: self.regs[i] & 0xFFFFFFFF for i, n in enumerate(REG32)}
        regs["eflags"] = self.eflags
        case = Case(code=code, code_addr=CODE_ADDR, regs=regs, regions=REGIONS,
                    memory=[(DATA_BASE, bytes(self.data)), (CODE_BASE, bytes(code_region))],
                    compare_ranges=REGIONS, count=self.count, family=self.row.family,
                    fresh=self.fresh, notes=self.notes,
                    watch=[w for w in self.watch if w[1]],
                    description=description or f"{self.row.mnemonic} {self.row.operands}".strip()
                    + f" (opcode {self.row.opcode:#x}" + (f" /{self.row.reg}" if self.row.reg is not None else "") + ")")
        oracle_alias(case)
        return annotate(case)


def oracle_alias(case):
    """Unicorn lacks a few undocumented-but-real aliases (see unicorn_runner.ALIASES):
    give it the canonical encoding of the same length."""
    from pyvmm.oracle.unicorn_runner import ALIASES
    p = parse(case.code)
    if p is None or p.row is None:
        return
    for (opcode, reg), (new_reg, _why) in ALIASES.items():
        if p.opcode == opcode and p.reg == reg:
            i = len(p.prefixes) + (2 if opcode >= 0x0F00 else 1)
            code = bytearray(case.code)
            code[i] = (code[i] & 0xC7) | (new_reg << 3)
            case.oracle_code = bytes(code)


# ------------------------------------------------------------------------------------------
# Families
# ------------------------------------------------------------------------------------------
def gen_alu(b):
    row = b.row
    b.build()
    b.set_operand_values()
    rng = b.rng
    if row.mnemonic == "cmpxchg" and rng.random() < 0.5:
        # accumulator equal to the destination: the exchange path
        b.set_reg(EAX, b.E[2], b.loc_read(b.E))
    if row.mnemonic == "cmpxchg8b" and rng.random() < 0.5:
        q = b.mem_read(b.E[1], 8)
        b.set_reg(EAX, 4, q & 0xFFFFFFFF)
        b.set_reg(EDX, 4, q >> 32)


def gen_muldiv(b):
    row = b.row
    rng = b.rng
    b.build()
    b.set_operand_values()
    if row.mnemonic not in ("div", "idiv") or rng.random() < 0.1:
        return
    size = b.E[2]
    bits = 8 * size
    # the dividend lives in AX (8-bit), DX:AX or EDX:EAX; leave random when the divisor
    # shares a register with it or those registers are pinned by the address
    acc = (EAX,) if size == 1 else (EAX, EDX)
    if b.E[0] == "reg" and (b.E[1] & 3 if size == 1 else b.E[1]) in acc:
        return
    if any(r in b.pinned for r in acc):
        return
    d = b.loc_read(b.E)
    if row.mnemonic == "div":
        if d == 0:
            return
        q = rng.choice((rng.getrandbits(bits), (1 << bits) - 1, 0, 1))
        r = rng.randrange(d)
        n = q * d + r
    else:
        ds = sext(d, bits)
        if ds == 0:
            return
        q = rng.choice((rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1)),
                        (1 << (bits - 1)) - 1, -(1 << (bits - 1)), 0, -1))
        n = q * ds
        r = rng.randrange(abs(ds))
        if n < 0 or (n == 0 and rng.random() < 0.5):
            r = -r
        n += r
        # the SDM's truncating quotient must still fit
        tq = abs(n) // abs(ds) * (1 if (n >= 0) == (ds > 0) else -1)
        if not -(1 << (bits - 1)) <= tq < (1 << (bits - 1)):
            n = q * ds
    n &= (1 << (2 * bits)) - 1
    if size == 1:
        set_reg(b.regs, EAX, 2, n)
    else:
        set_reg(b.regs, EAX, size, n & ((1 << bits) - 1))
        set_reg(b.regs, EDX, size, n >> bits)


def gen_bcd(b):
    rng = b.rng
    b.build()
    if rng.random() < 0.6:
        # valid packed/unpacked BCD in AL (and AH)
        al = rng.choice((rng.randrange(10) << 4 | rng.randrange(10), rng.randrange(10),
                         rng.randrange(0x100)))
        set_reg(b.regs, EAX, 1, al)
    if rng.random() < 0.3:
        set_reg(b.regs, 4, 1, rng.randrange(10))    # AH
    if b.row.mnemonic in ("aam", "aad"):
        b.imm = bytes([rng.choice((10, 10, 0, 16, 2, rng.randrange(0x100)))])


def shift_count(rng, bits):
    return rng.choice((0, 1, 2, rng.randrange(0, 8), bits - 1, bits, bits + 1, 16, 17, 31,
                       32, 33, rng.randrange(0, 0x20), rng.randrange(0x100)))


def gen_shift(b):
    rng = b.rng
    row = b.row
    b.build()
    b.set_operand_values()
    bits = 8 * b.E[2]
    if row.operand_list[-1] == "CL":
        b.set_reg(ECX, 1, shift_count(rng, bits))
    elif row.operand_list[-1] == "Ib":
        b.imm = bytes([shift_count(rng, bits)])


def gen_bit(b):
    rng = b.rng
    row = b.row
    if row.operands == "Ev,Gv":
        # the bit offset in Gv is a signed displacement into memory: keep it small, and
        # set it before the address is solved so the address accounts for it
        reg = rng.randrange(8)
        mem = rng.random() < 0.5
        if mem:
            span = 8 * (MARGIN // 2)
            b.regs[reg] = rng.randrange(-span, span) & 0xFFFFFFFF
        else:
            b.regs[reg] = rng.choice((rng.randrange(64), rng.getrandbits(32)))
        b.build(mem=mem, reg_field=reg, fixed=(reg,))
        if b.E[0] == "reg":
            b.loc_write(b.E, rand_value(rng, 8 * b.E[2]))
    elif row.mnemonic in ("bsf", "bsr"):
        b.build()
        b.set_operand_values()
        if rng.random() < 0.25:
            b.loc_write(b.E, 0)
        elif rng.random() < 0.3:
            b.loc_write(b.E, 1 << rng.randrange(8 * b.E[2]))
    else:
        b.build()
        b.set_operand_values()
        b.imm = bytes([rng.choice((rng.randrange(8 * b.E[2]), rng.randrange(0x100)))])


def gen_mov(b):
    rng = b.rng
    row = b.row
    if row.mnemonic == "lea":
        b.build(anywhere=rng.random() < 0.5, seg_override=True)
        return
    if row.mnemonic == "xlat":
        b.choose_sizes(True)
        if rng.random() < 0.15:
            b.prefixes.append(rng.choice(SEG_PREFIXES))
        ea = b.pick_ea(1)
        al = b.regs[EAX] & 0xFF
        if b.adsize == 16:
            set_reg(b.regs, EBX, 2, ea - al)
            ea = ((b.regs[EBX] & 0xFFFF) + al) & 0xFFFF
        else:
            b.regs[EBX] = (ea - al) & 0xFFFFFFFF
        b.watch.append((ea, 1))
        return
    b.build()
    b.set_operand_values()


def gen_sreg(b):
    """MOV Sreg,Ew / MOV Ew,Sreg / PUSH / POP Sreg. No descriptor table exists, so a
    selector load succeeds only for a null selector into DS/ES/FS/GS (any RPL); anything
    else is #GP (null into SS: #GP(0); non-null: #GP(selector) beyond the GDT limit)."""
    rng = b.rng
    row = b.row
    b.fresh = True
    b.build()                                       # ModRM.reg = the row's segment register
    if row.opcode == 0x8E:                          # mov Sreg, Ew
        b.loc_write(b.E, rng.choice((0, 0, 0, 1, 3, rng.getrandbits(16))))
    elif row.mnemonic == "pop":
        sp = b.regs[ESP]
        b.mem_write(sp, 2, rng.choice((0, 0, 0, 2, rng.getrandbits(16))))
        b.watch.append((sp, 4))


def gen_stack(b):
    rng = b.rng
    row = b.row
    mn = row.mnemonic
    b.regs[ESP] = b.stack_pointer()
    fixed = (ESP,)
    if mn in ("enter", "leave"):
        b.regs[EBP] = b.stack_pointer()
        fixed = (ESP, EBP)
    b.pinned.update(fixed)
    b.build(fixed=fixed)
    b.set_operand_values()
    sp = b.regs[ESP]
    if mn == "popfd":
        n = 2 if b.opsize == 16 else 4
        v = b.mem_read(sp, n) & ~0x100                 # no TF: it would trap after the run
        b.mem_write(sp, n, v)
    b.watch.append((sp, 8))


def gen_flags(b):
    b.build()
    if b.row.mnemonic == "sahf":
        set_reg(b.regs, 4, 1, b.rng.getrandbits(8))


def gen_cond(b):
    b.build()
    b.set_operand_values()


def gen_branch(b):
    rng = b.rng
    row = b.row
    mn = row.mnemonic
    b.count = 1                     # stop right after the branch, wherever it goes
    b.regs[ESP] = b.stack_pointer()
    b.pinned.add(ESP)
    b.build(fixed=(ESP,))
    ops = row.operand_list
    if ops and ops[0][0] == "J":
        n = len(b.imm)
        own = len(b.encode())
        if n == 1:
            rel = rng.randrange(-128, 128)
            if -own <= rel < 0:
                rel = rng.choice((0, -128, 127, rel - own))      # never into itself
        elif n == 2:
            rel = rng.choice((rng.getrandbits(16), 0, 0x8000, 0xFFFF))   # IP wraps in 64 KiB
        else:
            # a target in mapped memory (Unicorn fetches it even with count=1)
            nxt = CODE_ADDR + own
            target = rng.choice((rng.randrange(0, CODE_BASE + CODE_SIZE),
                                 nxt + rng.randrange(-0x400, 0x400), nxt, DATA_BASE))
            rel = target - nxt
            if -own <= rel < 0:
                rel = 0
        b.imm = to_bytes(rel, n)
    if mn in ("loop", "loope", "loopne", "jecxz"):
        cx = rng.choice((0, 1, 2, rng.randrange(16), 0x10000, 0x10001, 0xFFFFFFFF))
        if 0x67 in b.prefixes:
            set_reg(b.regs, ECX, 2, cx)
        else:
            b.regs[ECX] = cx
    if mn in ("jmp", "call") and b.E is not None:
        target = rng.choice((rng.randrange(CODE_BASE, CODE_BASE + CODE_SIZE),
                             rng.randrange(DATA_BASE, CODE_BASE + CODE_SIZE),
                             rng.getrandbits(16)))
        if not (CODE_ADDR <= target < CODE_ADDR + 16):
            b.loc_write(b.E, target)
    if mn == "ret":
        if row.operands == "Iw":
            # Iw < 0x8000: Unicorn sign-extends it (see unicorn_runner.UNICORN_LIMITS)
            b.imm = to_bytes(rng.choice((0, 2, 4, rng.randrange(0x100), rng.getrandbits(15))), 2)
        sp = b.regs[ESP]
        target = rng.choice((rng.randrange(CODE_BASE, CODE_BASE + CODE_SIZE),
                             rng.randrange(DATA_BASE, CODE_BASE + CODE_SIZE),
                             rng.getrandbits(16)))
        if CODE_ADDR <= target < CODE_ADDR + 16:
            target = CODE_BASE
        b.mem_write(sp, 4, target)
        b.watch.append((sp, 4))
    if mn == "call":
        b.watch.append(((b.regs[ESP] - 4) & 0xFFFFFFFF, 4))


def gen_string(b):
    rng = b.rng
    row = b.row
    mn = row.mnemonic
    b.choose_sizes(True)
    rep = rng.choice((None, 0xF3, 0xF2, 0xF3))
    if rep:
        b.prefixes.append(rep)
    reads_src = mn in ("movs", "cmps", "lods")
    if reads_src and rng.random() < 0.2:
        b.prefixes.append(rng.choice(SEG_PREFIXES))
    rng.shuffle(b.prefixes)
    if rng.random() < 0.5:
        b.eflags |= isa.DF
    else:
        b.eflags &= ~isa.DF
    size = operand_bytes(row.operand_list[0], b.opsize) or 1
    n = rng.choice((0, 1, 2, 3, rng.randrange(9)))
    si, di = b.pick_ea(size), b.pick_ea(size)
    if b.adsize == 16:
        set_reg(b.regs, ESI, 2, si)
        set_reg(b.regs, EDI, 2, di)
        set_reg(b.regs, ECX, 2, n)
    else:
        b.regs[ESI], b.regs[EDI], b.regs[ECX] = si, di, n
    step = -size if b.eflags & isa.DF else size
    if mn in ("cmps", "scas") and rng.random() < 0.6:
        # make the first k elements match so REPE continues (and REPNE stops)
        k = rng.randrange(n + 1)
        for i in range(k):
            if mn == "cmps":
                b.mem_write(di + i * step, size, b.mem_read(si + i * step, size))
            else:
                b.mem_write(di + i * step, size, get_reg(b.regs, EAX, size))
    b.watch += [(min(si, si + step * n), size * max(n, 1)), (min(di, di + step * n), size * max(n, 1))]


def gen_misc(b):
    b.build(anywhere=True)


def gen_system(b):
    b.build()


GENERATORS = {
    "alu": gen_alu, "muldiv": gen_muldiv, "bcd": gen_bcd, "shift": gen_shift, "bit": gen_bit,
    "mov": gen_mov, "sreg": gen_sreg, "stack": gen_stack, "flags": gen_flags,
    "cond": gen_cond, "branch": gen_branch, "string": gen_string, "misc": gen_misc,
    "system": gen_system,
}


def make_case(rng, row):
    """One random, runnable Case for isa row `row`."""
    b = Builder(rng, row)
    GENERATORS[row.family](b)
    return b.finish()


def random_case(rng, family=None):
    rows = rows_of(family) if family else [r for r in isa.INSTRUCTIONS if testable(r)]
    return make_case(rng, rng.choice(rows))


# ------------------------------------------------------------------------------------------
# Random byte strings
# ------------------------------------------------------------------------------------------
BRANCH_FAMILIES = frozenset(("branch", "far", "interrupt"))


def random_state(rng):
    """Registers for random-byte cases: mostly pointers into the data region and small
    counts, so memory operands and REP strings usually do something."""
    regs = {}
    for n in REG32:
        k = rng.random()
        if k < 0.5:
            regs[n] = rng.randrange(DATA_BASE + MARGIN, DATA_BASE + DATA_SIZE - MARGIN)
        elif k < 0.7:
            regs[n] = rng.randrange(0, 16)
        else:
            regs[n] = rand_reg32(rng)
    regs["esp"] = rng.randrange(0x800, DATA_SIZE - 0x800) & ~3
    if rng.random() < 0.8:
        regs["ecx"] = rng.randrange(0, 16)
    regs["eflags"] = 0x2 | (rng.getrandbits(12) & isa.OSZAPC) | rng.choice((0, isa.DF)) \
        | rng.choice((0, isa.IF))
    return regs


def bytes_case(code, regs, data_seed, count=None):
    """A Case running the first instruction of `code` (or all of it, when count is given)."""
    data = random.Random(data_seed).randbytes(DATA_SIZE)
    code_region = bytearray([HLT]) * CODE_SIZE
    off = CODE_ADDR - CODE_BASE
    code_region[off:off + len(code)] = code
    case = Case(code=bytes(code), code_addr=CODE_ADDR, regs=dict(regs), regions=REGIONS,
                memory=[(DATA_BASE, data), (CODE_BASE, bytes(code_region))],
                compare_ranges=REGIONS, count=count or 0, notes={"data seed": data_seed},
                description="random bytes")
    oracle_alias(case)
    return case


def random_code(rng, length=15):
    """Random instruction bytes, biased towards the table: a few legacy prefixes, then an
    opcode (random, from the table, or 0F xx), then random bytes."""
    out = bytearray()
    while rng.random() < 0.3 and len(out) < 4:
        out.append(rng.choice(sorted(LEGACY_PREFIXES)))
    k = rng.random()
    if k < 0.4:
        op = rng.choice(isa.INSTRUCTIONS).opcode
        out += bytes((0x0F, op & 0xFF)) if op >= 0x0F00 else bytes((op,))
    elif k < 0.55:
        out += bytes((0x0F, rng.getrandbits(8)))
    while len(out) < length:
        out.append(rng.getrandbits(8))
    return bytes(out)


def cs_override_ok(row):
    """May this row's memory operand be accessed through CS (read-only use)?"""
    if row.mnemonic in READ_ONLY_MNEMONICS:
        ops = row.operand_list
        return row.mnemonic != "mov" or ops[0][0] == "G" or ops[0] in ("AL", "eAX")
    return bool(row.operand_list) and row.operand_list[0][0] == "G"


def lock_valid(p):
    """LOCK is allowed: a lockable row with a memory destination (else #UD)."""
    return p.row.lock and p.mod is not None and p.mod != 3


def classify_bytes(code):
    """How a random instruction can be checked: (verdict, parsed, length) with verdict
        'compare'  run on both machines and compare
        'ud'       pyvmm must raise #UD (invalid LOCK); Unicorn is wrong or crashes there
        'skip'     not in the subset, not comparable (SKIP_*), or hits a UNICORN_LIMITS item
    """
    from pyvmm.oracle import disassemble
    _text, n = disassemble(code, CODE_ADDR)
    if n is None:
        return "skip", None, None
    p = parse(code[:n])
    if p is None or p.length != n:
        return "skip", p, n
    row = p.row
    if not testable(row):
        return "skip", p, n
    if p.lock and not lock_valid(p):
        return "ud", p, n
    if 0xF2 in p.prefixes and 0xF3 in p.prefixes:
        return "skip", p, n         # two group-1 prefixes: the SDM leaves the effect open
    memory = (p.mod is not None and p.mod != 3) or any(o[0] == "O" for o in row.operand_list)
    if 0x2E in p.prefixes and memory and not cs_override_ok(row):
        return "skip", p, n
    if row.mnemonic in ("ret", "enter") and row.operand_list[:1] == ["Iw"] \
            and int.from_bytes(p.imm[:2], "little") >= 0x8000:
        return "skip", p, n
    if row.mnemonic in NO_OPSIZE_PREFIX and 0x66 in p.prefixes:
        return "skip", p, n
    return "compare", p, n


def random_bytes_case(rng, code=None):
    """(verdict, Case or None) for one random instruction and random machine state."""
    if code is None:
        code = random_code(rng)
    verdict, p, n = classify_bytes(code)
    if verdict == "skip":
        return verdict, None
    regs = random_state(rng)
    case = bytes_case(code[:n], regs, rng.getrandbits(32),
                      count=1 if p.row.family in BRANCH_FAMILIES else 0)
    case.fresh = p.row.family in FRESH_FAMILIES
    case.family = p.row.family
    case.description = (f"random bytes: {p.row.mnemonic} {p.row.operands} "
                        f"(opcode {p.row.opcode:#x}" + (f" /{p.reg}" if p.row.reg is not None else "") + ")")
    annotate(case, p)
    return verdict, case


# Cases run so far, per family and verdict: printed at the end of a pytest run.
STATS = {}


def count(key, n=1):
    STATS[key] = STATS.get(key, 0) + n


# ------------------------------------------------------------------------------------------
# Running one case on both machines
# ------------------------------------------------------------------------------------------
def self_check(case):
    """The template's own consistency: capstone, our table decoder and the encoding agree
    on the instruction's length. Returns an error text or None."""
    from pyvmm.oracle import disassemble
    _text, n = disassemble(case.code, case.code_addr)
    p = parse(case.code)
    if p is None:
        return f"template bug: {case.code.hex()} does not decode with the isa table"
    if p.length != len(case.code):
        return f"template bug: {case.code.hex()} decodes to {p.length} bytes"
    if n is None:
        if p.lock and not lock_valid(p):
            return None          # capstone refuses LOCK with a register operand
        return f"template bug: capstone cannot decode {case.code.hex()}"
    if n != len(case.code):
        return f"template bug: capstone decodes {case.code.hex()} as {n} bytes"
    return None


def differential(case, oracle, pyvmm_runner):
    """Run `case` on Unicorn and pyvmm: (unicorn_result, pyvmm_result, diffs)."""
    from pyvmm.oracle import compare
    a = oracle.run(case)
    b = pyvmm_runner.run(case)
    return a, b, compare(case, a, b)
