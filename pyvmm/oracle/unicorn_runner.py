"""Run one code snippet on Unicorn and on pyvmm, and compare the two result records.

A `Case` is everything both machines need: the memory regions to map and their initial
contents, the code (placed inside one of those regions), the registers, where to stop
(`until` and/or `count`), plus what the comparison needs to know about the instruction:
which EFLAGS bits and which result bytes the SDM leaves undefined (from
`pyvmm._core.isa.undefined_mask`), and which ranges of memory to compare.

`UnicornRunner.run(case)` and `PyvmmRunner.run(case)` return the same `Result` record:
the 8 GPRs, EIP and EFLAGS, the bytes of the compared ranges, and the outcome, one of
    ok          the run stopped at `until`, after `count` instructions, or at HLT
    exception   the guest raised exception `vector` (no IDT: the run stops there)
    unmapped    an access hit unmapped guest-physical memory at `address`
    error       anything else: a host-side Python exception (pyvmm) or UcError (Unicorn)
`compare(case, a, b)` lists the differing fields; `format_report` prints a failure with
capstone's disassembly, the inputs and both results side by side.

Unicorn pitfalls handled here (measured with Unicorn 2.1.4):
  * translations are cached per address: after rewriting code at an address already
    executed, `ctl_remove_cache` must be called, which `run` does for every region;
  * after an exception reported through UC_HOOK_INTR, QEMU's `old_exception` state is
    never cleared, so the NEXT exception is escalated (#DE -> #DF -> silent shutdown):
    a Uc that has seen any exception, or ran a segment/system instruction, or stopped
    anywhere but `until`, is thrown away and a fresh one (~0.6 ms) made for the next case;
  * #UD is not delivered to UC_HOOK_INTR but raised as UC_ERR_INSN_INVALID: mapped here
    to exception vector 6;
  * with count=1 Unicorn translates the branch target before stopping, so a branch to
    unmapped memory ends in UC_ERR_FETCH_UNMAPPED although the branch completed: that is
    treated as a clean stop (pyvmm, like hardware, fetches only what it executes);
  * a REP string instruction is one "instruction" per iteration for `count=`: cases
    that count instructions (branches) never use REP, the others stop at `until`;
  * emu_start costs ~4 us plus ~20 us for rewriting 128 KiB and removing the cache.

System cases (SystemCase, UnicornSystemRunner, PyvmmSystemRunner, compare_system: the
second half of this file) run whole programs with descriptor tables, rings and paging, and
compare selectors, hidden segment state, control registers and exceptions with their error
codes too; their own Unicorn limits are in SYSTEM_UNICORN_LIMITS.

Where Unicorn disagrees with the Intel SDM, exactly one of three narrow, documented
mechanisms applies (never a blanket mask):
  KNOWN_DEVIATIONS  EFLAGS bits ignored for one mnemonic/operand form under a condition;
  ALIASES           encodings Unicorn lacks (F6/F7 /1): Unicorn runs the canonical twin;
  UNICORN_LIMITS    inputs the templates never generate (Unicorn crashes, or is wrong in a
                    way no flag mask can express); tests/core/test_harness_api.py checks
                    pyvmm on each of them against the SDM instead. Two of them are also
                    recognised by compare(): an access crossing the 4 GiB limit (#GP on
                    pyvmm, a wrapped/unmapped access on Unicorn) and the order of CMPS's
                    two reads when both fault (unmapped, or one across the limit).

State after an `unmapped` stop is not architectural on either side (the access stops the
harness in the middle of the instruction), so for that outcome only the outcome and the
address are compared, the address to within 8 bytes (Unicorn names the first byte of the
access, pyvmm may name another byte of it, e.g. its last).
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

GPRS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
STATE_REGS = GPRS + ("eip", "eflags")

# EFLAGS bits, for reports
FLAG_NAMES = ((0x1, "CF"), (0x4, "PF"), (0x10, "AF"), (0x40, "ZF"), (0x80, "SF"),
              (0x100, "TF"), (0x200, "IF"), (0x400, "DF"), (0x800, "OF"), (0x3000, "IOPL"),
              (0x4000, "NT"), (0x10000, "RF"), (0x20000, "VM"), (0x40000, "AC"),
              (0x80000, "VIF"), (0x100000, "VIP"), (0x200000, "ID"))
CF, PF, AF, ZF, SF, OF = 0x001, 0x004, 0x010, 0x040, 0x080, 0x800

EXCEPTION_NAMES = {0: "#DE", 1: "#DB", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM",
                   8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF",
                   16: "#MF", 17: "#AC"}


def flag_names(bits):
    return " ".join(n for b, n in FLAG_NAMES if bits & b) or "-"


# ------------------------------------------------------------------------------------------
# Case and Result
# ------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One snippet with its machine state, and what the comparison may ignore."""
    code: bytes
    code_addr: int
    regs: Dict[str, int]                          # GPRs and 'eflags' (EIP = code_addr)
    regions: Tuple[Tuple[int, int], ...]          # (address, size) to map, page aligned
    memory: List[Tuple[int, bytes]] = field(default_factory=list)   # initial contents
    compare_ranges: Tuple[Tuple[int, int], ...] = ()                # compared after the run
    until: Optional[int] = None                   # default: code_addr + len(code)
    count: int = 0                                # instructions (0 = no limit)
    # -- for the comparison ---------------------------------------------------------------
    family: str = ""
    insn: object = None                           # the isa.Insn row, when known
    opsize: int = 32
    adsize: int = 32
    shift_count: Optional[int] = None             # masked count of a shift/rotate
    flag_mask: int = 0                            # EFLAGS bits the SDM leaves undefined
    undefined_regs: Dict[str, int] = field(default_factory=dict)   # reg -> undefined bits
    undefined_mem: List[Tuple[int, int]] = field(default_factory=list)  # undefined bytes
    fresh: bool = False                           # run on a fresh emulator instance
    oracle_code: Optional[bytes] = None           # what Unicorn runs instead (see ALIASES)
    # -- for the report --------------------------------------------------------------------
    description: str = ""
    notes: Dict[str, object] = field(default_factory=dict)
    watch: List[Tuple[int, int]] = field(default_factory=list)  # input bytes worth printing

    @property
    def end(self):
        return self.until if self.until is not None else self.code_addr + len(self.code)

    def initial_memory(self, address, size):
        """The initial bytes of [address, address+size) as this case sets them up."""
        out = bytearray(size)
        for addr, data in self.memory:
            lo = max(addr, address)
            hi = min(addr + len(data), address + size)
            if lo < hi:
                out[lo - address:hi - address] = data[lo - addr:hi - addr]
        return bytes(out)


@dataclass
class Result:
    regs: Dict[str, int]
    memory: Dict[int, bytes]
    outcome: str = "ok"                           # ok | exception | unmapped | error
    vector: Optional[int] = None
    error_code: Optional[int] = None              # pyvmm only (Unicorn does not report it)
    address: Optional[int] = None                 # of the unmapped access
    error: str = ""
    length: Optional[int] = None                  # decoded length, when the runner knows it
    runner: str = ""

    def outcome_text(self):
        if self.outcome == "exception":
            name = EXCEPTION_NAMES.get(self.vector, f"vector {self.vector}")
            err = "" if self.error_code is None else f"({self.error_code:#x})"
            return f"exception {name}{err}"
        if self.outcome == "unmapped":
            return f"unmapped @{self.address:#x}" if self.address is not None else "unmapped"
        if self.outcome == "error":
            return f"error: {self.error}"
        return "ok"


# ------------------------------------------------------------------------------------------
# Known Unicorn deviations from the SDM
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Deviation:
    """One place where Unicorn contradicts the Intel SDM; the comparison ignores `flags`
    (EFLAGS bits) for cases matching mnemonic, operand pattern and `when`."""
    mnemonic: str
    operands: Optional[str]                       # isa operand string, None = every form
    flags: int
    when: Callable[[Case], bool]
    condition: str                                # `when` in words
    sdm: str                                      # why Unicorn is wrong
    reference: str = ""

    def applies(self, case):
        ins = case.insn
        if ins is None or ins.mnemonic != self.mnemonic:
            return False
        if self.operands is not None and ins.operands != self.operands:
            return False
        return bool(self.when(case))


# Every entry is narrow: one mnemonic, one operand pattern (or an explicit list), only the
# flag bits that were measured to be wrong, only under the condition that makes them wrong.
_LEGACY_PREFIXES = frozenset((0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65))


def prefixes(code):
    """The legacy prefix bytes at the start of an instruction."""
    out = bytearray()
    for byte in code:
        if byte not in _LEGACY_PREFIXES:
            break
        out.append(byte)
    return bytes(out)


def _locked(case):
    return 0xF0 in prefixes(case.code)


KNOWN_DEVIATIONS: List[Deviation] = [
    Deviation(
        "neg", "Eb", SF | PF, _locked,
        condition="with a LOCK prefix (memory operand)",
        sdm="NEG: 'The CF flag set to 0 if the source operand is 0; otherwise it is set to "
            "1. The OF, SF, ZF, AF, and PF flags are set according to the result.' Unicorn "
            "2.1.4's LOCK NEG (a cmpxchg loop in QEMU's TCG) computes SF and PF from the "
            "original operand instead of the result (lock neg dword [m]=0x42af9fc3 -> result "
            "0xbd50603d: SF must be 1, PF 0; Unicorn gives SF=0 PF=1; without LOCK it is "
            "right). ZF cannot differ (x==0 iff -x==0).",
        reference="measured here; QEMU target/i386 gen_NEG with PREFIX_LOCK"),
    Deviation(
        "neg", "Ev", SF | PF, _locked,
        condition="with a LOCK prefix (memory operand)",
        sdm="as for NEG Eb: SF and PF must follow the result",
        reference="measured here"),
]


# Where Unicorn is wrong in a way no flag mask can express, the differential templates
# (tests/core/templates.py) simply do not generate the input, and test_harness_api.py checks
# pyvmm's behaviour on it against the SDM instead. Each entry: what, and what the SDM says.
UNICORN_LIMITS = (
    ("LOCK with a register destination when an 0x67 prefix is present too",
     "f0 67 30 e4 (lock xor ah, ah) runs on Unicorn 2.1.4; SDM LOCK: '#UD ... if the "
     "destination operand is not a memory operand'. The templates do not generate the "
     "combination; test_random_bytes.py checks pyvmm's #UD for invalid LOCK."),
    ("LTR with a null selector",
     "QEMU loads an invalid TR; SDM LTR: '#GP(0) If the source operand contains a NULL segment "
     "selector.' The templates skip the descriptor-table instructions; test_privilege.py checks them."),
    ("RET imm16 / RETF imm16 with imm16 >= 0x8000",
     "QEMU loads the immediate sign-extended (x86_ldsw_code); SDM RET: 'imm16 ... number of "
     "bytes to release', ESP += imm16 zero-extended. Templates keep imm16 < 0x8000."),
    ("ENTER imm16 >= 0x8000",
     "Same sign extension of the frame size; SDM ENTER: ESP <- ESP - Size (unsigned). "
     "Templates keep imm16 < 0x8000."),
    ("LOCK prefix on an instruction that is not lockable (e.g. lock mov [eax], eax)",
     "Unicorn executes it; SDM LOCK: #UD. Templates add LOCK only to lockable rows."),
    ("LOCK BTS/BTR/BTC with a register destination",
     "Unicorn 2.1.4 ABORTS the host process (SIGABRT in QEMU's TCG). SDM: #UD. Never sent "
     "to Unicorn; the random-byte test checks pyvmm raises #UD."),
    ("LOCK XCHG/XADD with a register destination",
     "Unicorn executes it; SDM LOCK: #UD (LOCK needs a memory destination operand)."),
    ("writes through a CS segment override",
     "Unicorn writes; SDM 5.4.1 (type checking): code segments are not writable -> #GP(0). "
     "Templates use CS overrides only on read-only memory operands."),
    ("memory access through a null data segment (after mov ds, 0)",
     "Unicorn does not check; SDM 5.4.1: #GP(0). Cases are single instructions."),
    ("an access that crosses the 4 GiB limit of a flat segment (e.g. 4 bytes at 0xFFFFFFFF)",
     "Unicorn wraps to address 0 / reports unmapped memory; SDM 5.3: the last byte is beyond "
     "the limit -> #GP(0) (#SS(0) for SS). compare() accepts exactly that pair of outcomes."),
    ("faults after a first exception on the same Uc",
     "Unicorn never clears QEMU's old_exception after UC_HOOK_INTR: the next fault "
     "becomes #DF. UnicornRunner discards a Uc after any exception."),
)

# Encodings Unicorn rejects with #UD although processors execute them as an alias of a
# documented form (the isa table includes them): Unicorn runs the canonical encoding
# (same length, only ModRM.reg changed) and pyvmm the alias, and the results must agree.
# (opcode, ModRM.reg) -> (canonical ModRM.reg, why)
ALIASES = {
    (0xF6, 1): (0, "TEST Eb,Ib: F6 /1 executes as F6 /0 (AMD APM vol. 3 documents it; Intel "
                   "processors execute it the same); QEMU's group 3 decoder lacks /1"),
    (0xF7, 1): (0, "TEST Ev,Iz: F7 /1 executes as F7 /0; QEMU lacks /1"),
}


def deviations_for(case, deviations=None):
    devs = KNOWN_DEVIATIONS if deviations is None else deviations
    return [d for d in devs if d.applies(case)]


# ------------------------------------------------------------------------------------------
# capstone
# ------------------------------------------------------------------------------------------
_CS = None


def _capstone():
    global _CS
    if _CS is None:
        import capstone
        _CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    return _CS


def disassemble(code, address=0):
    """(text, length) of the first instruction in `code` by capstone; (None, None) when
    capstone cannot decode it."""
    for insn in _capstone().disasm_lite(bytes(code), address, 1):
        _addr, size, mnemonic, op_str = insn
        return f"{mnemonic} {op_str}".strip(), size
    return None, None


def disassemble_all(code, address=0):
    lines = []
    for addr, size, mnemonic, op_str in _capstone().disasm_lite(bytes(code), address):
        lines.append((addr, size, f"{mnemonic} {op_str}".strip()))
    return lines


# ------------------------------------------------------------------------------------------
# Unicorn
# ------------------------------------------------------------------------------------------
class UnicornRunner:
    """Runs cases on one reused Uc (UC_ARCH_X86, UC_MODE_32); a fresh Uc replaces it when
    the memory layout changes, the case asks for it, or the last run left state that would
    leak into the next case (an exception, see the module docstring)."""

    def __init__(self, cpu_model=None):
        from unicorn import x86_const as X
        self._X = X
        self.cpu_model = X.UC_CPU_X86_QEMU32 if cpu_model is None else cpu_model
        self._reg_ids = {name: getattr(X, "UC_X86_REG_" + name.upper()) for name in STATE_REGS}
        self._seg_ids = [getattr(X, "UC_X86_REG_" + s) for s in ("CS", "SS", "DS", "ES", "FS", "GS")]
        self.uc = None
        self.layout = None
        self.dirty = True
        self.created = 0
        self._intr = []
        self._unmapped = []

    def _new(self, regions):
        import unicorn
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
        # Unicorn's default x86 model is Haswell-like: F3 0F BC/BD run as TZCNT/LZCNT.
        # pyvmm's CPUID announces neither (family 5 with TSC, CX8, CMOV), so there they are
        # BSF/BSR with an ignored REP prefix, as on every processor without BMI1/ABM.
        # qemu32 (family 6, CMOV, CX8, TSC, no ABM/BMI1) is the closest model Unicorn has.
        uc.ctl_set_cpu_model(self.cpu_model)
        for addr, size in regions:
            uc.mem_map(addr, size)
        uc.hook_add(unicorn.UC_HOOK_INTR, self._hook_intr)
        uc.hook_add(unicorn.UC_HOOK_MEM_UNMAPPED, self._hook_unmapped)
        self.uc = uc
        self.layout = tuple(regions)
        self.dirty = False
        self.created += 1

    def _hook_intr(self, uc, intno, user_data):
        self._intr.append(intno)
        uc.emu_stop()

    def _hook_unmapped(self, uc, access, address, size, value, user_data):
        self._unmapped.append(address)
        return False

    def run(self, case):
        import unicorn
        regions = tuple(case.regions)
        if self.uc is None or self.dirty or case.fresh or regions != self.layout:
            self._new(regions)
        uc = self.uc
        for addr, size in regions:
            uc.mem_write(addr, case.initial_memory(addr, size))
            uc.ctl_remove_cache(addr, addr + size)
        if case.oracle_code is not None:
            uc.mem_write(case.code_addr, case.oracle_code)
        for name in GPRS:
            uc.reg_write(self._reg_ids[name], case.regs.get(name, 0) & 0xFFFFFFFF)
        uc.reg_write(self._reg_ids["eflags"], case.regs.get("eflags", 2))
        self._intr.clear()
        self._unmapped.clear()
        result = Result(regs={}, memory={}, runner="unicorn")
        try:
            uc.emu_start(case.code_addr, case.end, count=case.count)
        except unicorn.UcError as e:
            self.dirty = True
            if e.errno == unicorn.UC_ERR_INSN_INVALID:
                result.outcome, result.vector = "exception", 6
            elif (e.errno == unicorn.UC_ERR_FETCH_UNMAPPED and case.count == 1
                  and self._unmapped and self._unmapped[0] == uc.reg_read(self._reg_ids["eip"])
                  and self._unmapped[0] != case.code_addr):
                # count=1: the instruction completed (a branch to unmapped memory); Unicorn
                # then translates the target before noticing the count is used up. pyvmm
                # (like hardware) only fetches what it executes: this is a clean stop.
                pass
            elif e.errno in (unicorn.UC_ERR_READ_UNMAPPED, unicorn.UC_ERR_WRITE_UNMAPPED,
                             unicorn.UC_ERR_FETCH_UNMAPPED):
                result.outcome = "unmapped"
                result.address = self._unmapped[0] if self._unmapped else None
            else:
                result.outcome, result.error = "error", f"UcError: {e}"
        if self._intr:
            self.dirty = True
            result.outcome, result.vector = "exception", self._intr[0]
        for name in STATE_REGS:
            result.regs[name] = uc.reg_read(self._reg_ids[name])
        if any(uc.reg_read(s) for s in self._seg_ids):
            self.dirty = True
        for addr, size in case.compare_ranges:
            data = bytes(uc.mem_read(addr, size))
            if case.oracle_code is not None:
                # show the case's own bytes where Unicorn ran the canonical alias
                data = _restore_code(data, addr, case)
            result.memory[addr] = data
        if case.fresh or result.regs["eip"] != case.end:
            self.dirty = True               # an unusual stop: start the next case afresh
        return result


def _restore_code(data, addr, case):
    lo = max(addr, case.code_addr)
    hi = min(addr + len(data), case.code_addr + len(case.code))
    if lo >= hi:
        return data
    out = bytearray(data)
    for a in range(lo, hi):
        i = a - case.code_addr
        if out[a - addr] == case.oracle_code[i]:
            out[a - addr] = case.code[i]
    return bytes(out)


# ------------------------------------------------------------------------------------------
# pyvmm
# ------------------------------------------------------------------------------------------
# pyvmm runs a case with at most this many instructions (REP iterations count one each):
# a decoder bug that turns a case into a loop then shows up as a mismatch, not a hang.
SAFETY_COUNT = 1_000_000


def default_cpu_class():
    import pyvmm
    return pyvmm.CPU


class PyvmmRunner:
    """Runs cases on a pyvmm CPU class (compiled or pure). A CPU is reused between cases
    while nothing but GPRs, EIP, EFLAGS and memory can have changed (same rule as for
    Unicorn); otherwise each case gets a fresh CPU()."""

    def __init__(self, cpu_class=None, reuse=True):
        import pyvmm
        self.cpu_class = cpu_class or pyvmm.CPU
        self.GuestFault = pyvmm.GuestFault
        self.UnmappedMemory = pyvmm.UnmappedMemory
        # The pure core defines its own exception classes: catch those too.
        mod = __import__(self.cpu_class.__module__, fromlist=["GuestFault"])
        self._faults = tuple({self.GuestFault, getattr(mod, "GuestFault", self.GuestFault)})
        memmod = __import__(self.cpu_class.__module__.rsplit(".", 1)[0] + ".memory",
                            fromlist=["UnmappedMemory"])
        self._unmapped = tuple({self.UnmappedMemory,
                                getattr(memmod, "UnmappedMemory", self.UnmappedMemory)})
        self.reuse = reuse
        self.cpu = None
        self.layout = None
        self.dirty = True
        self.created = 0

    def new_cpu(self, regions):
        cpu = self.cpu_class()
        for addr, size in regions:
            cpu.mem_map(addr, size)
        self.cpu = cpu
        self.layout = tuple(regions)
        self.dirty = False
        self.created += 1
        return cpu

    def run(self, case):
        regions = tuple(case.regions)
        if (not self.reuse or self.cpu is None or self.dirty or case.fresh
                or regions != self.layout):
            self.new_cpu(regions)
        cpu = self.cpu
        for addr, size in regions:
            cpu.mem_write(addr, case.initial_memory(addr, size))
        for name in GPRS:
            cpu.reg_write(name, case.regs.get(name, 0) & 0xFFFFFFFF)
        cpu.reg_write("eflags", case.regs.get("eflags", 2))
        result = Result(regs={}, memory={}, runner="pyvmm")
        decode_length = getattr(cpu, "decode_length", None)
        if decode_length is not None:
            try:
                result.length = decode_length(case.code_addr)
            except Exception:               # #UD and friends: no length
                result.length = None
        try:
            cpu.emu_start(case.code_addr, case.end, count=case.count or SAFETY_COUNT)
        except self._faults as e:
            self.dirty = True
            result.outcome, result.vector, result.error_code = "exception", e.vector, e.error_code
            if cpu.reg_read("eip") != e.eip:
                result.outcome = "error"
                result.error = (f"GuestFault.eip={e.eip:#x} but the CPU's EIP is "
                                f"{cpu.reg_read('eip'):#x}")
        except self._unmapped as e:
            self.dirty = True
            result.outcome, result.address = "unmapped", e.address
        except Exception as e:              # never expected: a bug in pyvmm
            self.dirty = True
            import traceback
            tb = traceback.extract_tb(e.__traceback__)[-1]
            result.outcome = "error"
            result.error = f"{type(e).__name__}: {e} ({tb.filename}:{tb.lineno})"
        try:
            for name in STATE_REGS:
                result.regs[name] = cpu.reg_read(name)
            if any(cpu.reg_read(s) for s in ("cs", "ss", "ds", "es", "fs", "gs")):
                self.dirty = True
            for addr, size in case.compare_ranges:
                result.memory[addr] = bytes(cpu.mem_read(addr, size))
            if case.fresh or result.regs["eip"] != case.end:
                self.dirty = True           # an unusual stop (HLT, branch): next case afresh
        except Exception as e:
            self.dirty = True
            result.outcome = "error"
            result.error += f"; reading state raised {type(e).__name__}: {e}"
        return result


# ------------------------------------------------------------------------------------------
# Comparison
# ------------------------------------------------------------------------------------------
@dataclass
class Diff:
    field: str
    a: str
    b: str
    note: str = ""


def _byte_runs(a, b):
    """[(offset, length)] of the runs where two equal-length byte strings differ."""
    runs = []
    i, n = 0, len(a)
    while i < n:
        if a[i] != b[i]:
            j = i
            while j < n and a[j] != b[j]:
                j += 1
            runs.append((i, j - i))
            i = j
        else:
            i += 1
    return runs


def ignored_flags(case, deviations=None):
    """(mask, [Deviation]) of the EFLAGS bits the comparison ignores for `case`."""
    devs = deviations_for(case, deviations)
    mask = case.flag_mask
    for d in devs:
        mask |= d.flags
    return mask, devs


def _wraps_past_limit(u, p):
    """Unicorn (u) reports an unmapped access in the last 8 bytes below 4 GiB, pyvmm (p)
    faults #GP(0)/#SS(0): the access crosses the flat segment's 4 GiB limit, which the SDM
    faults on and Unicorn lets wrap (UNICORN_LIMITS)."""
    return (u.runner == "unicorn" and u.outcome == "unmapped" and u.address is not None
            and u.address >= 0xFFFFFFF9 and p.outcome == "exception" and p.vector in (12, 13)
            and p.error_code in (0, None))


def _cmps_other_read(case, u, p):
    """CMPS reads its two operands in an order the SDM leaves open. When one of them
    crosses the 4 GiB limit (pyvmm faults #GP(0)/#SS(0) on it) and Unicorn stopped at the
    other, unmapped, each simply read the other operand first: both outcomes are the SDM's."""
    if case.insn is None or case.insn.mnemonic != "cmps":
        return False
    if not (u.runner == "unicorn" and u.outcome == "unmapped" and p.outcome == "exception"
            and p.vector in (12, 13) and p.error_code in (0, None)):
        return False
    return any((case.regs.get(r, 0) & 0xFFFFFFFF) >= 0xFFFFFFF9 for r in ("esi", "edi"))


def compare(case, a, b, deviations=None, check_length=True):
    """Differences between two results of `case`, as a list of Diff (empty: they agree).

    Ignored: the EFLAGS bits in case.flag_mask (the SDM's undefined bits) and those of a
    matching KNOWN_DEVIATIONS entry; registers/bytes the SDM leaves undefined
    (case.undefined_regs / undefined_mem); for an `unmapped` outcome, the state."""
    diffs = []
    if _wraps_past_limit(a, b) or _wraps_past_limit(b, a) or \
            _cmps_other_read(case, a, b) or _cmps_other_read(case, b, a):
        return diffs
    if a.outcome != b.outcome or a.vector != b.vector:
        diffs.append(Diff("outcome", a.outcome_text(), b.outcome_text()))
        if "error" in (a.outcome, b.outcome) or a.outcome == "unmapped" or b.outcome == "unmapped":
            return diffs
    if a.outcome == "unmapped" and b.outcome == "unmapped":
        # Unicorn names the access's first byte, pyvmm may name another byte of the same
        # access (its last): they must be less than 8 bytes (the widest access) apart.
        # CMPS reads two operands in an order the SDM does not define: when both are
        # unmapped, either may be reported.
        two_reads = case.insn is not None and case.insn.mnemonic == "cmps"
        if a.address is not None and b.address is not None and not two_reads \
                and min((a.address - b.address) & 0xFFFFFFFF, (b.address - a.address) & 0xFFFFFFFF) >= 8:
            diffs.append(Diff("unmapped address", f"{a.address:#x}", f"{b.address:#x}"))
        return diffs
    if check_length:
        _text, cs_len = disassemble(case.code, case.code_addr)
        for r in (a, b):
            if r.length is not None and cs_len is not None and r.length != cs_len:
                diffs.append(Diff(f"length ({r.runner})", str(cs_len), str(r.length),
                                  "capstone vs decoder"))
    mask, _devs = ignored_flags(case, deviations)
    for name in STATE_REGS:
        va, vb = a.regs.get(name), b.regs.get(name)
        if va is None or vb is None:
            continue
        if name == "eflags":
            if (va ^ vb) & ~mask & 0xFFFFFFFF:
                diffs.append(Diff(name, f"{va:08x}", f"{vb:08x}",
                                  "differs in " + flag_names((va ^ vb) & ~mask)))
            continue
        undefined = case.undefined_regs.get(name, 0)
        if (va ^ vb) & ~undefined & 0xFFFFFFFF:
            diffs.append(Diff(name, f"{va:08x}", f"{vb:08x}"))
    for addr, size in case.compare_ranges:
        ma, mb = a.memory.get(addr), b.memory.get(addr)
        if ma is None or mb is None or ma == mb:
            continue
        ma, mb = bytearray(ma), bytearray(mb)
        for uaddr, usize in case.undefined_mem:
            lo, hi = max(uaddr, addr), min(uaddr + usize, addr + size)
            for i in range(lo - addr, hi - addr):
                ma[i] = mb[i] = 0
        for off, n in _byte_runs(ma, mb):
            shown = min(n, 16)
            more = " ..." if n > shown else ""
            diffs.append(Diff(f"mem {addr + off:#x}+{n}", ma[off:off + shown].hex(" ") + more,
                              mb[off:off + shown].hex(" ") + more))
    return diffs


def format_regs(regs, names=GPRS):
    return " ".join(f"{n}={regs.get(n, 0) & 0xFFFFFFFF:08x}" for n in names)


def format_report(case, a, b, diffs, title="mismatch", deviations=None):
    """A failure message: the case (capstone disassembly, inputs) and both results side by
    side, differing fields marked."""
    lines = [f"=== {title}: [{case.family}] {case.description} ==="]
    text, cs_len = disassemble(case.code, case.code_addr)
    lines.append(f"code @{case.code_addr:#010x}: {case.code.hex(' ')}")
    lines.append(f"  capstone: {text if text else '(cannot decode)'}"
                 f"   length {cs_len}; {a.runner} length {a.length}; {b.runner} length {b.length}")
    if len(case.code) > (cs_len or 0):
        for addr, size, t in disassemble_all(case.code, case.code_addr)[1:]:
            lines.append(f"            {addr:#010x}: {t}")
    lines.append(f"  opsize {case.opsize} adsize {case.adsize}; stop at {case.end:#x}"
                 + (f", count {case.count}" if case.count else ""))
    lines.append("inputs:")
    lines.append("  " + format_regs(case.regs, GPRS[:4]))
    lines.append("  " + format_regs(case.regs, GPRS[4:]))
    fl = case.regs.get("eflags", 2)
    lines.append(f"  eflags={fl:08x} [{flag_names(fl)}]")
    for k, v in case.notes.items():
        lines.append(f"  {k}: {v:#x}" if isinstance(v, int) else f"  {k}: {v}")
    for addr, size in case.watch:
        lines.append(f"  mem[{addr:#x}..+{size}] = {case.initial_memory(addr, size).hex(' ')}")
    mask, devs = ignored_flags(case, deviations)
    lines.append(f"ignored EFLAGS bits: {mask:#x} [{flag_names(mask)}]"
                 + "".join(f"; known deviation: {d.mnemonic} {d.operands} ({d.condition})"
                           for d in devs))
    if case.undefined_regs or case.undefined_mem:
        lines.append(f"undefined results ignored: regs {case.undefined_regs} "
                     f"mem {case.undefined_mem}")
    w = 26
    lines.append(f"{'field':<18}{a.runner:<{w}}{b.runner:<{w}}")
    differing = {d.field for d in diffs}
    lines.append(f"{'outcome':<18}{a.outcome_text():<{w}}{b.outcome_text():<{w}}"
                 + ("  <--" if "outcome" in differing else ""))
    for name in STATE_REGS:
        va, vb = a.regs.get(name), b.regs.get(name)
        sa = "-" if va is None else f"{va:08x}"
        sb = "-" if vb is None else f"{vb:08x}"
        mark = "  <--" if name in differing else ""
        if name == "eflags" and va is not None and vb is not None:
            sa += f" [{flag_names(va & 0x8D5)}]"
            sb += f" [{flag_names(vb & 0x8D5)}]"
        lines.append(f"{name:<18}{sa:<{w}}{sb:<{w}}{mark}")
    for d in diffs:
        if d.field not in STATE_REGS and d.field != "outcome":
            lines.append(f"{d.field:<18}{d.a:<{w}}{d.b:<{w}}  <--" + (f" {d.note}" if d.note else ""))
    for d in diffs:
        if d.field == "eflags" and d.note:
            lines.append(f"eflags {d.note}")
    return "\n".join(lines)


def run_both(case, first, second):
    """Run `case` on two runners; (result_first, result_second, diffs)."""
    a = first.run(case)
    b = second.run(case)
    return a, b, compare(case, a, b)


# ------------------------------------------------------------------------------------------
# System cases: descriptor tables, rings and paging
# ------------------------------------------------------------------------------------------
# A SystemCase runs a whole program on a fresh machine: usually a ring-0 prologue (far jump
# into the GDT's code segment, segment loads, LLDT, paging on, IRET into the tested ring)
# and then the body under test. Both runners report, beyond the GPRs, EIP and EFLAGS, the
# segment selectors, CR0/CR2/CR3/CR4, and for an exception its vector, error code and the
# EIP it saves (the faulting instruction).
#
# How exceptions are observed on Unicorn: Unicorn never delivers an exception through the
# IDT; it calls UC_HOOK_INTR with the vector while the CPU state is that of the faulting
# instruction (EIP, and CR2 for #PF, are read there). Two things are not part of Unicorn's
# API: the error code (QEMU's CPUX86State.error_code) and the segment registers' hidden
# parts (CPUX86State.segs[]). Both are read from the bytes of a uc.context_save(), a copy
# of CPUX86State, at offsets measured once per process by `unicorn_state_offsets` (runs
# with known descriptors and known #GP(selector) faults; exactly one offset must fit). If
# the measurement fails (another Unicorn build), those fields are None and compare_system()
# does not compare them; test_system_differential.py asserts that it succeeds here.
#
# Where Unicorn does not model a check the SDM requires (SYSTEM_UNICORN_LIMITS), a case
# carries `expect`: Unicorn runs up to the instruction it gets wrong, pyvmm runs it and must
# raise exactly the expected exception there, with the state equal to Unicorn's at that
# point.
SEGMENT_REGS = ("cs", "ss", "ds", "es", "fs", "gs")
CONTROL_REGS = ("cr0", "cr2", "cr3", "cr4")
SYSTEM_REGS = STATE_REGS + SEGMENT_REGS + CONTROL_REGS
# The hidden parts: segment caches, LDTR, TR, GDTR, IDTR. The cache of a null selector in
# DS/ES/FS/GS (and of a null LDTR) is not architectural (every use faults) and is not
# compared; neither is TR's type (busy or not in the cache), only its selector, base, limit.
HIDDEN_REGS = tuple(f"{s}.{f}" for s in SEGMENT_REGS for f in ("base", "limit", "attr")) + \
    ("ldtr", "ldtr.base", "ldtr.limit", "tr", "tr.base", "tr.limit",
     "gdtr.base", "gdtr.limit", "idtr.base", "idtr.limit")
ERROR_CODE_VECTORS = (8, 10, 11, 12, 13, 14, 17)


@dataclass(frozen=True)
class Expected:
    """pyvmm must raise `vector`(`error_code`) at `eip`: a check Unicorn does not model
    (`limit` names the SYSTEM_UNICORN_LIMITS entry)."""
    eip: int
    vector: int
    error_code: Optional[int]
    limit: str


@dataclass
class SystemCase(Case):
    gdtr: Tuple[int, int] = (0, 0)               # base, limit
    body: int = 0                                 # address of the code under test
    expect: Optional[Expected] = None


# Checks Unicorn 2.1.4 (QEMU 5.0 TCG) does not make, so the generators never ask it to:
# the case carries an Expected for pyvmm instead, or avoids the input altogether.
SYSTEM_UNICORN_LIMITS = {
    "segment limit": (
        "QEMU's TCG adds the segment base but never checks a data access against the "
        "segment limit (expand-up or expand-down) in protected mode. SDM Vol. 3 5.3: "
        "'the processor ... generates a general-protection exception (#GP) or a stack-fault "
        "exception (#SS) [error code 0] when an offset is outside the limit'."),
    "segment type": (
        "QEMU does not check the segment's type on a data access: a write through a "
        "read-only data segment or a (readable) code segment loaded into a data segment "
        "register succeeds. SDM Vol. 3 5.4.1: 'writing into a code segment or a read-only "
        "data segment' is #GP(0)."),
    "null segment": (
        "QEMU does not fault on an access through DS/ES/FS/GS holding a null selector. "
        "SDM Vol. 3 5.4.1 and MOV: 'a #GP(0) is generated when a memory reference is made "
        "through a segment register holding a null selector'."),
    "I/O permission": (
        "Unicorn's translator skips QEMU's I/O permission check ('Unicorn: allow all I/O "
        "instructions'): IN/OUT/INS/OUTS run at CPL > IOPL. SDM IN, OUT, INS, OUTS: 'IF "
        "((PE = 1) and ((CPL > IOPL) or (VM = 1))) THEN IF (Any I/O Permission Bit for I/O "
        "port being accessed = 1) THEN #GP(0)' - and without a TSS I/O bitmap every bit "
        "counts as 1 (Vol. 1 19.5.2)."),
    "CR0.NW without CR0.CD": (
        "QEMU loads CR0 with NW=1 and CD=0. SDM MOV CRn: '#GP(0) If an attempt is made to "
        "write a 1 to CR0.NW while CR0.CD is 0'."),
    "IRET with EFLAGS.VM=1 at CPL > 0": (
        "QEMU returns to virtual-8086 mode whenever the popped EFLAGS image has VM set. SDM "
        "IRET: 'IF tempEFLAGS(VM) = 1 and CPL = 0 THEN GOTO RETURN-TO-VIRTUAL-8086-MODE', "
        "else a protected-mode return in which VM is not changed. The generators pop images "
        "without VM; test_system_differential.py checks pyvmm's protected-mode return."),
    "accessed bit of the PDE on a faulting walk": (
        "QEMU sets a PDE's accessed flag as soon as the PDE is read, before it looks at the "
        "PTE, so a walk that ends in #PF (PTE not present, or access denied) leaves it set. "
        "SDM Vol. 3 4.8 says only that the processor sets the accessed flag of an entry it "
        "'uses ... as part of linear-address translation'; Intel processors update the "
        "accessed and dirty flags once the walk has succeeded (what KVM's guest page walker "
        "copies, commit 'KVM: MMU: Update accessed and dirty bits after guest pagetable "
        "walk'), and so does pyvmm. compare_system() ignores exactly that bit: bit 5 of the "
        "PDE mapping CR2, after a #PF on both machines, set on Unicorn and clear on pyvmm."),
    "PSE-36": (
        "QEMU translates a 4 MiB PDE's bits 20:13 as physical-address bits 39:32 (PSE-36) "
        "whatever CPUID says; pyvmm's CPUID has no PSE-36, and SDM Vol. 3 4.3 / Table 4-4 "
        "make those bits reserved then (#PF with RSVD). The generators keep them 0; "
        "test_paging.py checks pyvmm's RSVD fault."),
}


_STATE_OFFSETS = None


def _gdt_entry(base, limit, access, flags):
    import struct
    lo = (limit & 0xFFFF) | ((base & 0xFFFF) << 16)
    hi = ((base >> 16) & 0xFF) | (access << 8) | (limit & 0xF0000) | (flags << 20) | (base & 0xFF000000)
    return struct.pack("<II", lo, hi)


def unicorn_state_offsets():
    """Where, in bytes(uc.context_save()) (a copy of QEMU's CPUX86State), Unicorn keeps the
    two things its API does not give: the exception's error code and the segment registers'
    hidden parts. Measured once per process, never assumed: five runs load ES, FS and GS
    with known descriptors and then fault on `mov ds, [0x5000]` with a selector beyond the
    GDT limit (#GP(selector & ~3), a different selector each run). The error code's offset
    is the one 32-bit word holding the five error codes; the segment caches' offset is the
    one where ES, FS and GS (QEMU's order ES CS SS DS FS GS, 24-byte SegmentCache: selector,
    64-bit base, limit, flags) hold what was loaded. {'error_code': offset or None,
    'segments': offset or None}."""
    global _STATE_OFFSETS
    if _STATE_OFFSETS is not None:
        return _STATE_OFFSETS
    import struct

    import unicorn
    from unicorn import x86_const as X
    gdt = bytes(8) + _gdt_entry(0x12345678, 0x9ABCD, 0x93, 0x4) + \
        _gdt_entry(0x0FEDCBA0, 0x05432, 0xF3, 0xC)
    loaded = ((0, 0x08, 0x12345678, 0x9ABCD), (4, 0x13, 0x0FEDCBA0, 0x05432FFF),
              (5, 0x10, 0x0FEDCBA0, 0x05432FFF))           # (QEMU index, selector, base, limit)
    code = bytes.fromhex("8e0502500000 8e2504500000 8e2d06500000 8e1d00500000 90")
    samples = []
    for sel in (0x1238, 0x2469, 0x7FF2, 0x0018, 0xFFFB):
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
        uc.mem_map(0, 0x10000)
        uc.mem_write(0x8000, gdt)
        uc.reg_write(X.UC_X86_REG_GDTR, (0, 0x8000, len(gdt) - 1, 0))
        uc.mem_write(0x5000, struct.pack("<HHHH", sel, 0x08, 0x13, 0x10))
        uc.mem_write(0x1000, code)
        seen = []

        def hook(uc, intno, user_data, seen=seen):
            seen.append((intno, bytes(uc.context_save())))
            uc.emu_stop()
        uc.hook_add(unicorn.UC_HOOK_INTR, hook)
        try:
            uc.emu_start(0x1000, 0x1000 + len(code))
        except unicorn.UcError:
            pass
        if len(seen) != 1 or seen[0][0] != 13:
            _STATE_OFFSETS = {"error_code": None, "segments": None}
            return _STATE_OFFSETS
        samples.append((seen[0][1], sel & 0xFFFC))
    size = min(len(raw) for raw, _ in samples)
    hits = [off for off in range(0, size - 3, 4)
            if all(struct.unpack_from("<I", raw, off)[0] == err for raw, err in samples)]
    raw = samples[0][0]

    def segments_at(off):
        for index, sel, base, limit in loaded:
            at = off + 24 * index
            if at + 24 > len(raw):
                return False
            if struct.unpack_from("<IxxxxQII", raw, at)[:3] != (sel, base, limit):
                return False
        return True
    segs = [off for off in range(0, len(raw) - 6 * 24, 4) if segments_at(off)]
    _STATE_OFFSETS = {"error_code": hits[0] if len(hits) == 1 else None,
                      "segments": segs[0] if len(segs) == 1 else None}
    return _STATE_OFFSETS


def unicorn_segment_caches(raw, offset):
    """{name: (selector, base, limit, attributes)} from context bytes `raw` (see
    unicorn_state_offsets); attributes as the descriptor's high dword & 0x00F0FF00."""
    import struct
    out = {}
    for index, name in enumerate(("es", "cs", "ss", "ds", "fs", "gs")):
        sel, base, limit, flags = struct.unpack_from("<IxxxxQII", raw, offset + 24 * index)
        out[name] = (sel & 0xFFFF, base & 0xFFFFFFFF, limit, flags & 0x00F0FF00)
    return out


class UnicornSystemRunner:
    """Runs SystemCases on Unicorn: a fresh Uc (the qemu32 model) for every case."""

    def __init__(self, cpu_model=None):
        from unicorn import x86_const as X
        self._X = X
        self.cpu_model = X.UC_CPU_X86_QEMU32 if cpu_model is None else cpu_model
        self._ids = {name: getattr(X, "UC_X86_REG_" + name.upper()) for name in SYSTEM_REGS}
        offsets = unicorn_state_offsets()
        self.error_code_at = offsets["error_code"]
        self.segments_at = offsets["segments"]

    def run(self, case):
        import struct

        import unicorn
        X = self._X
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
        uc.ctl_set_cpu_model(self.cpu_model)
        for addr, size in case.regions:
            uc.mem_map(addr, size)
            uc.mem_write(addr, case.initial_memory(addr, size))
        intr, unmapped = [], []
        error_code_at = self.error_code_at

        def hook_intr(uc, intno, user_data):
            if not intr:
                err = None
                if intno in ERROR_CODE_VECTORS and error_code_at is not None:
                    err = struct.unpack_from("<I", bytes(uc.context_save()), error_code_at)[0]
                intr.append((intno, err, uc.reg_read(X.UC_X86_REG_EIP),
                             uc.reg_read(X.UC_X86_REG_CR2)))
            uc.emu_stop()

        def hook_unmapped(uc, access, address, size, value, user_data):
            unmapped.append(address)
            return False

        def hook_in(uc, port, size, user_data):
            return (1 << (8 * size)) - 1                # nothing answers: the bus floats high

        def hook_out(uc, port, size, value, user_data):
            pass
        uc.hook_add(unicorn.UC_HOOK_INTR, hook_intr)
        uc.hook_add(unicorn.UC_HOOK_MEM_UNMAPPED, hook_unmapped)
        uc.hook_add(unicorn.UC_HOOK_INSN, hook_in, None, 1, 0, X.UC_X86_INS_IN)
        uc.hook_add(unicorn.UC_HOOK_INSN, hook_out, None, 1, 0, X.UC_X86_INS_OUT)
        base, limit = case.gdtr
        uc.reg_write(X.UC_X86_REG_GDTR, (0, base, limit, 0))
        for name in GPRS:
            uc.reg_write(self._ids[name], case.regs.get(name, 0) & 0xFFFFFFFF)
        uc.reg_write(self._ids["eflags"], case.regs.get("eflags", 2))
        until = case.expect.eip if case.expect is not None else case.end
        result = Result(regs={}, memory={}, runner="unicorn")
        try:
            uc.emu_start(case.code_addr, until, count=case.count)
        except unicorn.UcError as e:
            if e.errno == unicorn.UC_ERR_INSN_INVALID:
                result.outcome, result.vector = "exception", 6
            elif e.errno in (unicorn.UC_ERR_READ_UNMAPPED, unicorn.UC_ERR_WRITE_UNMAPPED,
                             unicorn.UC_ERR_FETCH_UNMAPPED):
                result.outcome = "unmapped"
                result.address = unmapped[0] if unmapped else None
            else:
                result.outcome, result.error = "error", f"UcError: {e}"
        for name in SYSTEM_REGS:
            result.regs[name] = uc.reg_read(self._ids[name])
        if self.segments_at is not None:
            caches = unicorn_segment_caches(bytes(uc.context_save()), self.segments_at)
            for name, (_sel, base, limit, attr) in caches.items():
                result.regs.update({f"{name}.base": base, f"{name}.limit": limit,
                                    f"{name}.attr": attr})
        for name, reg in (("ldtr", X.UC_X86_REG_LDTR), ("tr", X.UC_X86_REG_TR)):
            sel, base, limit, _flags = uc.reg_read(reg)
            result.regs.update({name: sel, f"{name}.base": base, f"{name}.limit": limit})
        for name, reg in (("gdtr", X.UC_X86_REG_GDTR), ("idtr", X.UC_X86_REG_IDTR)):
            _sel, base, limit, _flags = uc.reg_read(reg)
            result.regs.update({f"{name}.base": base, f"{name}.limit": limit})
        if intr:
            vector, err, eip, cr2 = intr[0]
            result.outcome, result.vector, result.error_code = "exception", vector, err
            result.regs["eip"], result.regs["cr2"] = eip, cr2
        for addr, size in case.compare_ranges:
            result.memory[addr] = bytes(uc.mem_read(addr, size))
        return result


class PyvmmSystemRunner:
    """Runs SystemCases on a pyvmm CPU class (compiled or pure). With reuse=True one CPU
    serves every case with the same memory layout, brought back to its power-on state by
    CPU.reset() (and the few fields reset() leaves to the machine: the TSC offset and
    IA32_APIC_BASE) with all of its memory rewritten; reuse=False makes a new CPU per case
    (a CPU() costs ~5 ms, mostly building the decoder table)."""

    def __init__(self, cpu_class=None, reuse=True):
        import pyvmm
        self.cpu_class = cpu_class or pyvmm.CPU
        self.reuse = reuse
        self.cpu = None
        self.layout = None
        mod = __import__(self.cpu_class.__module__, fromlist=["GuestFault"])
        memmod = __import__(self.cpu_class.__module__.rsplit(".", 1)[0] + ".memory",
                            fromlist=["UnmappedMemory"])
        self._faults = tuple({pyvmm.GuestFault, getattr(mod, "GuestFault", pyvmm.GuestFault)})
        self._unmapped = tuple({pyvmm.UnmappedMemory,
                                getattr(memmod, "UnmappedMemory", pyvmm.UnmappedMemory)})

    def machine(self, regions):
        regions = tuple(regions)
        if self.reuse and self.cpu is not None and self.layout == regions:
            cpu = self.cpu
            cpu.reset()
            cpu.tsc_offset = 0
            cpu.apic_base = self._apic_base
            return cpu
        cpu = self.cpu_class()
        for addr, size in regions:
            cpu.mem_map(addr, size)
        self.cpu, self.layout, self._apic_base = cpu, regions, cpu.apic_base
        return cpu

    def run(self, case):
        cpu = self.machine(case.regions)
        for addr, size in case.regions:
            cpu.mem_write(addr, case.initial_memory(addr, size))
        base, limit = case.gdtr
        cpu.reg_write("gdtr_base", base)
        cpu.reg_write("gdtr_limit", limit)
        for name in GPRS:
            cpu.reg_write(name, case.regs.get(name, 0) & 0xFFFFFFFF)
        cpu.reg_write("eflags", case.regs.get("eflags", 2))
        result = Result(regs={}, memory={}, runner="pyvmm")
        try:
            cpu.emu_start(case.code_addr, case.end, count=case.count or SAFETY_COUNT)
        except self._faults as e:
            result.outcome, result.vector, result.error_code = "exception", e.vector, e.error_code
            if cpu.reg_read("eip") != e.eip:
                result.outcome = "error"
                result.error = (f"GuestFault.eip={e.eip:#x} but the CPU's EIP is "
                                f"{cpu.reg_read('eip'):#x}")
        except self._unmapped as e:
            result.outcome, result.address = "unmapped", e.address
        except Exception as e:              # never expected: a bug in pyvmm
            import traceback
            tb = traceback.extract_tb(e.__traceback__)[-1]
            result.outcome = "error"
            result.error = f"{type(e).__name__}: {e} ({tb.filename}:{tb.lineno})"
        for name in SYSTEM_REGS:
            result.regs[name] = cpu.reg_read(name)
        for name, (_sel, base, limit, attr) in cpu.segments.items():
            result.regs.update({f"{name}.base": base, f"{name}.limit": limit,
                                f"{name}.attr": attr & 0x00F0FF00})
        result.regs.update({"ldtr": cpu.ldtr_sel, "ldtr.base": cpu.ldtr_base,
                            "ldtr.limit": cpu.ldtr_limit, "tr": cpu.tr_sel,
                            "tr.base": cpu.tr_base, "tr.limit": cpu.tr_limit,
                            "gdtr.base": cpu.gdtr_base, "gdtr.limit": cpu.gdtr_limit,
                            "idtr.base": cpu.idtr_base, "idtr.limit": cpu.idtr_limit})
        for addr, size in case.compare_ranges:
            result.memory[addr] = bytes(cpu.mem_read(addr, size))
        return result


def _architectural(name, a, b):
    """False for a hidden part that no instruction can observe: the cache of a null
    selector in DS/ES/FS/GS, the base and limit of a null LDTR."""
    owner, _, part = name.partition(".")
    if not part or owner in ("cs", "ss", "tr", "gdtr", "idtr"):
        return True
    sel_a, sel_b = a.regs.get(owner), b.regs.get(owner)
    return not (sel_a is not None and sel_a == sel_b and (sel_a & 0xFFFC) == 0)


def compare_system(case, a, b):
    """Differences between the Unicorn result `a` and the pyvmm result `b` of a SystemCase:
    outcome, vector, error code (when Unicorn's is known), every SYSTEM_REGS register (EFLAGS
    minus case.flag_mask, registers minus case.undefined_regs) and the compared memory."""
    diffs = []
    exp = case.expect
    if exp is not None and a.outcome == "ok" and a.regs.get("eip") == exp.eip:
        # Unicorn stopped before the instruction whose check it lacks; pyvmm must fault there.
        want = f"exception {EXCEPTION_NAMES.get(exp.vector, exp.vector)}" + \
            ("" if exp.error_code is None else f"({exp.error_code:#x})")
        if (b.outcome, b.vector, b.error_code) != ("exception", exp.vector, exp.error_code):
            diffs.append(Diff("outcome", f"{want} (SDM; Unicorn: no {exp.limit} check)",
                              b.outcome_text()))
            return diffs
    else:
        if a.outcome != b.outcome or a.vector != b.vector:
            diffs.append(Diff("outcome", a.outcome_text(), b.outcome_text()))
            return diffs
        if a.outcome == "unmapped":
            if a.address is not None and b.address is not None and \
                    min((a.address - b.address) & 0xFFFFFFFF, (b.address - a.address) & 0xFFFFFFFF) >= 8:
                diffs.append(Diff("unmapped address", f"{a.address:#x}", f"{b.address:#x}"))
            return diffs
        if a.outcome == "exception" and a.error_code is not None and a.error_code != b.error_code:
            diffs.append(Diff("error code", f"{a.error_code:#x}",
                              "-" if b.error_code is None else f"{b.error_code:#x}"))
    for name in SYSTEM_REGS + HIDDEN_REGS:
        va, vb = a.regs.get(name), b.regs.get(name)
        if va is None or vb is None or not _architectural(name, a, b):
            continue
        ignore = case.flag_mask if name == "eflags" else case.undefined_regs.get(name, 0)
        if (va ^ vb) & ~ignore & 0xFFFFFFFF:
            note = "differs in " + flag_names((va ^ vb) & ~ignore) if name == "eflags" else ""
            diffs.append(Diff(name, f"{va:08x}", f"{vb:08x}", note))
    ignored_bits = _pde_accessed_on_fault(a, b)
    for addr, size in case.compare_ranges:
        ma, mb = a.memory.get(addr), b.memory.get(addr)
        if ma is None or mb is None or ma == mb:
            continue
        ma, mb = bytearray(ma), bytearray(mb)
        for uaddr, usize in case.undefined_mem:
            lo, hi = max(uaddr, addr), min(uaddr + usize, addr + size)
            for i in range(lo - addr, hi - addr):
                ma[i] = mb[i] = 0
        for baddr, bits in ignored_bits:
            if addr <= baddr < addr + size:
                ma[baddr - addr] &= ~bits
                mb[baddr - addr] &= ~bits
        for off, n in _byte_runs(ma, mb):
            shown = min(n, 16)
            more = " ..." if n > shown else ""
            diffs.append(Diff(f"mem {addr + off:#x}+{n}", ma[off:off + shown].hex(" ") + more,
                              mb[off:off + shown].hex(" ") + more))
    return diffs


def _pde_accessed_on_fault(a, b):
    """[(address, bits)]: the accessed bit of the PDE that maps CR2 when both machines
    stopped on the same #PF with paging on, if Unicorn set it and pyvmm did not
    (SYSTEM_UNICORN_LIMITS, 'accessed bit of the PDE on a faulting walk')."""
    if not (a.outcome == b.outcome == "exception" and a.vector == b.vector == 14):
        return []
    cr0, cr2, cr3 = (b.regs.get(n) for n in ("cr0", "cr2", "cr3"))
    if cr0 is None or not cr0 & 0x80000000 or cr2 != a.regs.get("cr2") or cr3 != a.regs.get("cr3"):
        return []
    pde = (cr3 & 0xFFFFF000) + ((cr2 >> 22) << 2)
    for addr, data in a.memory.items():
        other = b.memory.get(addr)
        if other is not None and addr <= pde < addr + len(data):
            if data[pde - addr] & 0x20 and not other[pde - addr] & 0x20:
                return [(pde, 0x20)]
    return []


def format_system_report(case, a, b, diffs, title="Unicorn vs pyvmm"):
    """A failure message for a SystemCase: the body disassembled (the prologue is named by
    the case's notes), the notes (descriptors, page tables), both results side by side."""
    lines = [f"=== {title}: [{case.family}] {case.description} ==="]
    body = case.body or case.code_addr
    code = case.code[body - case.code_addr:]
    lines.append(f"body @{body:#010x}: {code.hex(' ')}")
    for addr, size, text in disassemble_all(code, body):
        lines.append(f"    {addr:#010x}: {text}")
    fl = case.regs.get("eflags", 2)
    lines.append("registers at the prologue: " + format_regs(case.regs) + f" eflags={fl:08x}")
    for k, v in case.notes.items():
        lines.append(f"  {k}: {v:#x}" if isinstance(v, int) else f"  {k}: {v}")
    if case.expect is not None:
        e = case.expect
        lines.append(f"expected on pyvmm: {EXCEPTION_NAMES.get(e.vector, e.vector)}"
                     f"({'-' if e.error_code is None else hex(e.error_code)}) at {e.eip:#x} "
                     f"(Unicorn lacks the {e.limit} check and stops there)")
    if case.flag_mask or case.undefined_regs or case.undefined_mem:
        lines.append(f"ignored: EFLAGS {case.flag_mask:#x}, regs {case.undefined_regs}, "
                     f"mem {case.undefined_mem}")
    w = 26
    lines.append(f"{'field':<18}{a.runner:<{w}}{b.runner:<{w}}")
    differing = {d.field for d in diffs}
    lines.append(f"{'outcome':<18}{a.outcome_text():<{w}}{b.outcome_text():<{w}}"
                 + ("  <--" if "outcome" in differing or "error code" in differing else ""))
    for name in SYSTEM_REGS + HIDDEN_REGS:
        va, vb = a.regs.get(name), b.regs.get(name)
        if name in HIDDEN_REGS and name not in differing and va == vb:
            continue                                    # hidden parts: only when they differ
        sa = "-" if va is None else f"{va:08x}"
        sb = "-" if vb is None else f"{vb:08x}"
        lines.append(f"{name:<18}{sa:<{w}}{sb:<{w}}" + ("  <--" if name in differing else ""))
    for d in diffs:
        if d.field not in SYSTEM_REGS + HIDDEN_REGS and d.field != "outcome":
            lines.append(f"{d.field:<18}{d.a:<{w}}{d.b:<{w}}  <--" + (f" {d.note}" if d.note else ""))
        elif d.note:
            lines.append(f"{d.field}: {d.note}")
    return "\n".join(lines)
