"""The IA-32 CPU: registers, lazy flags, decoder, execute loop, exception delivery.

Written in Cython's pure-Python mode (types in cpu.pxd and in local annotations), so this
same file is the compiled core and, uncompiled, a readable model a debugger can step
through. Every value here is a 32-bit quantity: uncompiled, Python ints do not wrap, so
every result is masked explicitly (the masks cost nothing once compiled).

Data flow of one instruction (run_inner):
    decode()   fetch prefixes, opcode, ModRM/SIB, displacement, immediate   -> i_* fields
    execute()  one branch per opcode (a C switch once compiled); operands go through
               read()/write() = segmentation -> linear -> (paging, later) -> physical
    a fault    raises CPUFault; run() rolls EIP/ESP back to the instruction and
               delivers the exception through the IDT, or stops when a hypervisor
               intercepts that vector (exception_intercept) or the machine triple-faults.

Flags are lazy (as in QEMU and Bochs): arithmetic records its operands and result
(cc_op, cc_a, cc_b, cc_res, cc_size) and EFLAGS' six arithmetic bits are computed only
when something reads them. Instructions with irregular flags (shifts, BCD, MUL, ...)
store them eagerly (cc_op = CC_EAGER).
"""
import sys

import cython

from .exits import ExitReason, VMControl, VMExitReason
from .faults import (EXCEPTION_NAMES, CPUFault, ExceptionExit, GuestFault, TripleFault,
                     UnmappedMemory, Unsupported, VMExitSignal, instruction_length)
from .isa import decoder_table
from .memory import PhysicalMemory

MASK32 = 0xFFFFFFFF
SIGN32 = 0x80000000
MASK16 = 0xFFFF
HOST_LITTLE_ENDIAN = sys.byteorder == "little"
NO_UNTIL = 1 << 32
SIGN64 = 1 << 63           # `until` when no harness stop address is set: no EIP equals it
# Masks above 0x7FFFFFFF must be typed constants (cpu.pxd): as literals Cython would do the
# arithmetic around them on Python ints.
KEEP_HIGH16 = 0xFFFF0000     # what writing a 16-bit register (or SP, BP) leaves alone
KEEP_HIGH24 = 0xFFFFFF00     # ... an 8-bit low register (AL, CL, DL, BL)
KEEP_NOT_AH = 0xFFFF00FF     # ... an 8-bit high register (AH, CH, DH, BH)
TOP_BYTE = 0xFF000000
PAGE_FRAME = 0xFFFFF000      # page-aligned part of an address or a page-table entry
LARGE_FRAME = 0xFFC00000     # 4 MiB-aligned part
ARITH_FLAGS = 0x8D5          # OF SF ZF AF PF CF
# POPF at CPL 0 may change CF PF AF ZF SF TF IF DF OF IOPL NT AC ID (not RF, VM, VIF, VIP).
POPF_MASK = 0x247FD5

# Page-table entry bits and control-register bits used by the MMU
PTE_P = 0x1
PTE_RW = 0x2
PTE_US = 0x4
PTE_A = 0x20
PTE_D = 0x40
PTE_PS = 0x80
PTE_G = 0x100
TLB_NOEXEC = 0x200           # TLB flag: the nested mapping forbids instruction fetch
# Nested (EPT-like) table entries: 32-bit, two levels, the guest's own layout with EPT's
# permission bits in bits 0-2 (AMD's nested paging uses the host's format the same way).
NPT_R = 0x1
NPT_W = 0x2
NPT_X = 0x4
NPT_PS = 0x80                # in a nested directory entry: a 4 MiB page
CR0_PE = 0x1
CR0_TS = 0x8
CR0_WP = 0x10000
CR0_PG = SIGN32
CR4_TSD = 0x4
CR4_DE = 0x8
CR4_PSE = 0x10
CR4_PGE = 0x80

# EFLAGS bits
F_CF = 0x1
F_PF = 0x4
F_AF = 0x10
F_ZF = 0x40
F_SF = 0x80
F_TF = 0x100
F_IF = 0x200
F_DF = 0x400
F_OF = 0x800
F_IOPL = 0x3000
F_NT = 0x4000
F_RF = 0x10000
F_VM = 0x20000

# Lazy flag states
CC_EAGER = 0
CC_ADD = 1
CC_ADC = 2
CC_SUB = 3
CC_SBB = 4
CC_LOGIC = 5
CC_INC = 6
CC_DEC = 7

# Segment registers, in x86 encoding order
ES = 0
CS = 1
SS = 2
DS = 3
FS = 4
GS = 5
SEG_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")
REG_NAMES = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")

# Decoder table bits (see isa.decoder_table)
DEC_IMM_MASK = 0x07
DEC_MODRM = 0x08
DEC_VALID = 0x10
DEC_MEMONLY = 0x20
DEC_LOCK = 0x40
IMM_NONE = 0
IMM_B = 1
IMM_W = 2
IMM_Z = 3
IMM_MOFFS = 4
IMM_PTR = 5
IMM_ENTER = 6

# Why run() returned (ExitReason, importable from Python; typed copies for the loop)
EXIT_COUNT = ExitReason.COUNT
EXIT_UNTIL = ExitReason.UNTIL
EXIT_HLT = ExitReason.HLT
EXIT_EXCEPTION = ExitReason.EXCEPTION
EXIT_TRIPLE_FAULT = ExitReason.TRIPLE_FAULT
EXIT_UNMAPPED = ExitReason.UNMAPPED
EXIT_REQUEST = ExitReason.REQUEST
EXIT_UNSUPPORTED = ExitReason.UNSUPPORTED
EXIT_INTERRUPT = ExitReason.INTERRUPT
EXIT_VMEXIT = ExitReason.VMEXIT
# VM-execution controls (Intel SDM bit positions) and basic exit reasons: exits.py's
CTL_INTR_WINDOW = VMControl.INTERRUPT_WINDOW_EXITING
CTL_HLT = VMControl.HLT_EXITING
CTL_INVLPG = VMControl.INVLPG_EXITING
CTL_RDTSC = VMControl.RDTSC_EXITING
CTL_CR3_LOAD = VMControl.CR3_LOAD_EXITING
CTL_CR3_STORE = VMControl.CR3_STORE_EXITING
CTL_MOV_DR = VMControl.MOV_DR_EXITING
CTL_IO = VMControl.UNCONDITIONAL_IO_EXITING
CTL_MSR = VMControl.MSR_EXITING
VMX_INTR_WINDOW = VMExitReason.INTERRUPT_WINDOW
VMX_CPUID = VMExitReason.CPUID
VMX_HLT = VMExitReason.HLT
VMX_INVLPG = VMExitReason.INVLPG
VMX_RDTSC = VMExitReason.RDTSC
VMX_VMCALL = VMExitReason.VMCALL
VMX_CR_ACCESS = VMExitReason.CR_ACCESS
VMX_MOV_DR = VMExitReason.MOV_DR
VMX_IO = VMExitReason.IO_INSTRUCTION
VMX_RDMSR = VMExitReason.RDMSR
VMX_WRMSR = VMExitReason.WRMSR
VMX_EPT_VIOLATION = VMExitReason.EPT_VIOLATION
VMX_EPT_MISCONFIG = VMExitReason.EPT_MISCONFIG

# Exception vectors
DE = 0
DB = 1
BP = 3
OF_ = 4
BR = 5
UD = 6
NM = 7
DF_ = 8
TS = 10
NP = 11
SS_ = 12
GP = 13
PF = 14
# Vectors that push an error code
ERROR_CODE_VECTORS = (8, 10, 11, 12, 13, 14, 17)
# SDM Vol. 3 6.15, table 6-4/6-5: contributory exceptions
CONTRIBUTORY = (0, 10, 11, 12, 13)



@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def size_mask(size: cython.int) -> cython.uint:
    if size == 4:
        return MASK32
    if size == 2:
        return 0xFFFF
    return 0xFF


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def sign_bit(size: cython.int) -> cython.uint:
    if size == 4:
        return SIGN32
    if size == 2:
        return 0x8000
    return 0x80


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def sext(v: cython.uint, size: cython.int) -> cython.longlong:
    """Sign-extend the low `size` bytes of v."""
    x: cython.longlong = v & size_mask(size)
    s: cython.longlong = sign_bit(size)
    return (x ^ s) - s


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def parity(v: cython.uint) -> cython.uint:
    """PF: 1 when the low byte has an even number of set bits."""
    v = v & 0xFF
    v = (v ^ (v >> 4)) & 0xF
    return ((0x6996 >> v) & 1) ^ 1


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def chunk_bits(off: cython.uint, size: cython.uint) -> cython.ulonglong:
    """The 64-byte chunks of a page that bytes off..off+size-1 touch (see memory.code_chunks)."""
    one: cython.ulonglong = 1
    return (one << (off >> 6)) | (one << ((off + size - 1) >> 6))


class DecodedInstruction:
    """One decoded instruction, as the decode cache keeps it (uncompiled stand-in for the
    C struct `Decoded` in cpu.pxd, where the fields are described)."""
    __slots__ = ("tag", "ppage", "gen", "disp", "imm", "imm2", "op", "len", "opsize",
                 "adsize", "rep", "lock", "mod", "reg", "rm", "scale", "ea_seg",
                 "seg", "base", "index")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)


class CPU:
    """One IA-32 processor with its guest-physical memory.

    The harness API (mem_map, mem_write, mem_read, reg_write, reg_read, emu_start) uses
    Unicorn's names so the same test drives both; run() is the hypervisor-facing loop."""

    def __init__(self, memory=None):
        if not cython.compiled:
            self.regs = [0] * 8
            self.seg_sel = [0] * 6
            self.seg_base = [0] * 6
            self.seg_limit = [0] * 6
            self.seg_attr = [0] * 6
            self.seg_lo = [0] * 6
            self.seg_hi = [0] * 6
            self.seg_rd = [0] * 6
            self.seg_wr = [0] * 6
            self.dec_table = [0] * 4096
            self.tlb_lin = [0] * 256
            self.tlb_phys = [0] * 256
            self.tlb_flags = [0] * 256
            self.dcache = [DecodedInstruction() for _ in range(4096)]
            self.cur = DecodedInstruction()
        table = decoder_table()
        i: cython.int
        for i in range(4096):
            self.dec_table[i] = table[i]
        self.mem = memory if memory is not None else PhysicalMemory()
        self.io = None
        self.intr_acknowledge = None
        self.apic_present = False
        self.apic_base = 0xFEE00900         # IA32_APIC_BASE: base, global enable, BSP
        self.tsc_offset = 0
        self.exception_intercept = 0
        self.interrupt_exiting = False
        self.guest_mode = False
        self.cpuid_faulting = False
        self.vm_controls = 0
        self.exit_reason = self.exit_qualification = self.exit_instruction_length = 0
        self.guest_physical_address = self.guest_linear_address = 0
        self.idt_vectoring = -1
        self.cr0_mask = self.cr0_read_shadow = self.cr4_mask = self.cr4_read_shadow = 0
        self.nested = False
        self.nested_root = 0
        self.last_exit = None
        self.hypervisor_leaf_ebx = 0
        self.hypervisor_leaf_ecx = 0
        self.hypervisor_leaf_edx = 0
        self.reset()

    def reset(self):
        """Flat 32-bit protected mode at CPL 0: the state Unicorn's UC_MODE_32 starts in
        (and, bar EAX/EBX, the state a Multiboot loader hands a kernel)."""
        i: cython.int
        for i in range(8):
            self.regs[i] = 0
        self.eip = 0
        self.eflags = 0x2
        self.cc_op = CC_EAGER
        self.cc_size = 4
        self.cc_a = self.cc_b = self.cc_res = self.cc_cf = 0
        self.code32 = self.stack32 = self.cs_flat = False
        self.protected = True          # (before the segments: their access rights depend on it)
        for i in range(6):
            # Selector 0 with a flat 4 GiB cache, as after Unicorn's reset. Code: type 0xB
            # (execute/read, accessed), data: type 0x3 (read/write, accessed); D/B=1, G=1.
            self.load_seg_cache(i, 0, 0x0000FFFF, 0x00CF9B00 if i == CS else 0x00CF9300)
        self.gdtr_base = self.gdtr_limit = 0
        self.ldtr_sel = self.ldtr_base = self.ldtr_limit = 0
        self.tr_sel = self.tr_base = self.tr_limit = self.tr_attr = 0
        self.supervisor_access = 0
        self.idtr_base = self.idtr_limit = 0
        self.cr0 = 0x00000011          # PE, ET
        self.paging = self.nested      # nested paging translates even with CR0.PG clear
        self.protected = True
        self.dr0 = self.dr1 = self.dr2 = self.dr3 = 0
        self.dr7 = 0x400
        self.cr2 = self.cr3 = self.cr4 = 0
        self.cpl = 0
        self.icount = 0
        self.walk_refs = self.tlb_hits = self.tlb_misses = self.cr3_loads = 0
        self.intr_pending = False
        self.set_halted(False)
        self.exit_request = 0
        self.until = NO_UNTIL
        self.soft_vector = -1
        self.entered_handler = False
        self.pending_debug = False
        self.dr6 = 0xFFFF0FF0
        self.intr_pending = False
        self.inhibit_at = 0
        self.interrupts = 0
        self.fetch_page = 0
        self.fetch_frame = 0
        self.fetch_ppage = 0
        for i in range(256):
            self.tlb_lin[i] = 0
            self.tlb_phys[i] = 0
            self.tlb_flags[i] = 0
        self.flush_decode_cache()
        self.decode_misses = 0
        self.i_start = self.i_esp = 0
        self.cur.len = self.cur.op = self.cur.rep = self.cur.lock = 0
        self.cur.seg = -1
        self.cur.opsize = self.cur.adsize = 4
        self.cur.mod = 3
        self.cur.reg = self.cur.rm = self.cur.scale = self.cur.ea_seg = 0
        self.cur.base = self.cur.index = -1
        self.cur.disp = self.cur.imm = self.cur.imm2 = 0
        self.fetch_fast = False
        self.fetch_base = 0
        self.d_lo = self.d_hi = self.d_addr = 0

    # ------------------------------------------------------------------------------------
    # Harness API (Unicorn's names)
    # ------------------------------------------------------------------------------------
    def mem_map(self, address, size, perms=7):
        """Map zero-filled RAM; `perms` is accepted for Unicorn compatibility (RAM is RWX)."""
        self.mem.map(address, size)
        self.fetch_page = 0

    def mem_write(self, address, data):
        self.mem.write(address, data)

    def mem_read(self, address, size):
        return self.mem.read(address, size)

    def mmio_map(self, address, size, device):
        """Memory-mapped I/O: guest accesses to [address, address+size) go to `device`."""
        self.mem.map_mmio(address, size, device)

    def reg_read(self, name):
        name = name.lower()
        if name in REG_NAMES:
            return self.regs[REG_NAMES.index(name)]
        if name == "eip":
            return self.eip
        if name == "eflags":
            return self.get_eflags()
        if name in SEG_NAMES:
            return self.seg_sel[SEG_NAMES.index(name)]
        if name in ("cr0", "cr2", "cr3", "cr4", "gdtr_base", "gdtr_limit", "idtr_base",
                    "idtr_limit", "cpl"):
            return getattr(self, name)
        small = _SMALL_REGS.get(name)
        if small is not None:
            r, size, shift = small
            return (self.regs[r] >> shift) & size_mask(size)
        raise KeyError(f"unknown register {name!r}")

    def reg_write(self, name, value):
        name = name.lower()
        value = int(value) & MASK32
        if name in REG_NAMES:
            self.regs[REG_NAMES.index(name)] = value
        elif name == "eip":
            self.eip = value
        elif name == "eflags":
            self.set_eflags(value, MASK32)
        elif name in SEG_NAMES:
            seg = SEG_NAMES.index(name)
            # A selector load with every protected-mode check, as MOV Sreg would do it
            # (CS: as a far jump would load it, keeping EIP).
            self.i_start = self.eip
            self.i_esp = self.regs[4]
            try:
                if seg == CS:
                    eip = self.eip
                    self.far_jump(value & 0xFFFF, eip, False, 4)
                else:
                    self.load_data_seg(seg, value & 0xFFFF)
            except CPUFault as f:
                raise ValueError(f"loading {name}={value:#06x} raises "
                                 f"{EXCEPTION_NAMES.get(f.vector)}({f.error_code:#x})") from None
        elif name == "cr0":
            self.write_cr0(value)
        elif name in ("cr2", "cr3", "cr4"):
            setattr(self, name, value)
            self.flush_tlb(False)
        elif name in ("gdtr_base", "gdtr_limit", "idtr_base", "idtr_limit"):
            setattr(self, name, value)
        else:
            small = _SMALL_REGS.get(name)
            if small is None:
                raise KeyError(f"unknown register {name!r}")
            r, size, shift = small
            mask = size_mask(size) << shift
            self.regs[r] = (self.regs[r] & ~mask & MASK32) | ((value << shift) & mask)

    def emu_start(self, begin, until, timeout=0, count=0):
        """Run from `begin` until EIP == `until`, `count` instructions (0: no limit) or HLT.

        Raises GuestFault/TripleFault for an exception the guest cannot handle and
        UnmappedMemory for an access to unmapped guest-physical memory."""
        self.eip = begin & MASK32
        self.until = until & MASK32         # for this run only (see run_until)
        self.set_halted(False)                 # as Unicorn: start executing at `begin`
        self.exit_request = 0
        budget = self.icount + count if count else 0xFFFFFFFFFFFFFFFF
        reason = self.run_until(budget)
        if reason in (EXIT_TRIPLE_FAULT, EXIT_UNMAPPED, EXIT_UNSUPPORTED):
            raise self.last_exit
        return ExitReason(reason)

    def step(self):
        """Execute exactly one instruction (or one iteration of a REP string instruction)."""
        reason = self.run_until(self.icount + 1)
        if reason in (EXIT_TRIPLE_FAULT, EXIT_UNMAPPED, EXIT_UNSUPPORTED):
            raise self.last_exit
        return ExitReason(reason)

    def run_until(self, budget):
        try:
            return self.run(budget)
        finally:
            self.until = NO_UNTIL

    @property
    def halted(self):
        """True after HLT, until an interrupt (or a new emu_start)."""
        return self.is_halted

    @property
    def intr_line(self):
        """INTR: an interrupt controller has an interrupt for this CPU."""
        return self.intr_pending

    @intr_line.setter
    def intr_line(self, level):
        self.intr_pending = bool(level)
        self.attention = self.intr_pending or self.is_halted

    @property
    def nested_paging(self):
        """Guest mode's "enable EPT" control: every guest-physical address (each entry the
        guest's own page walk reads, and the page it finds; the linear address itself while
        the guest's CR0.PG is clear) goes through the nested tables at `nested_root`, a
        host-physical page directory the guest cannot see. Setting it flushes the TLB."""
        return self.nested

    @nested_paging.setter
    def nested_paging(self, on):
        self.nested = bool(on)
        self.paging = (self.cr0 & CR0_PG) != 0 or self.nested
        self.flush_tlb(False)

    def tlb_invalidate(self, lin):
        """Drop the TLB's entry for the page at linear `lin` (what INVLPG does), for a VMM
        that changed the one shadow entry that maps it."""
        self.invlpg(lin & MASK32)

    def invept(self):
        """INVEPT: the VMM changed its nested tables; drop what the TLB cached from them."""
        self.flush_tlb(False)

    def set_halted(self, halted):
        self.is_halted = halted
        self.attention = self.intr_pending or halted

    def reset_real_mode(self, cs=0, ip=0):
        """The state a PC's firmware hands a boot sector: real mode, CS:IP as given, every
        segment 64 KiB from selector * 16, interrupts off."""
        i: cython.int
        self.write_cr0(0x10)
        for i in range(6):
            # a 64 KiB read/write data segment; CS execute/read, 16-bit
            self.load_seg_cache(i, 0, 0xFFFF, 0x00009B00 if i == CS else 0x00009300)
            self.load_real_seg(i, cs if i == CS else 0)
        self.eip = ip
        self.set_eflags(0x2, MASK32)
        self.idtr_base = 0
        self.idtr_limit = 0x3FF
        self.cpl = 0

    def get_segment(self, name):
        """A segment register whole, as a VMM sees it in a VMCS: (selector, base, limit,
        attributes), the limit in bytes and the attributes being descriptor bits 8-23
        (type, S, DPL, P, AVL, D/B, G)."""
        seg = SEG_NAMES.index(name.lower())
        return (self.seg_sel[seg], self.seg_base[seg], self.seg_limit[seg], self.seg_attr[seg])

    def set_segment(self, name, sel, base, limit, attr):
        """Load a segment register's selector and hidden part directly, with no descriptor
        table read and no checks, as VM entry loads guest state from a VMCS. A VMM uses it
        to put the guest where its emulation of an instruction says it is. Attributes
        with P clear make the register unusable (a null selector)."""
        seg = SEG_NAMES.index(name.lower())
        attr = int(attr) & 0x00F0FF00
        limit = int(limit) & MASK32
        raw = limit >> 12 if attr & 0x800000 else limit & 0xFFFFF
        base = int(base) & MASK32
        lo = ((base & 0xFFFF) << 16) | (raw & 0xFFFF)
        hi = (base & TOP_BYTE) | ((base >> 16) & 0xFF) | (raw & 0xF0000) | attr
        self.load_seg_cache(seg, int(sel) & 0xFFFF, lo & MASK32, hi & MASK32)
        if not attr & 0x8000:
            self.seg_rd[seg] = self.seg_wr[seg] = 0
        self.fetch_page = 0

    def vm_exit(self, reason, qualification, length):
        """Guest mode: this instruction causes a VM exit instead of executing (SDM 27)."""
        self.exit_reason = reason
        self.idt_vectoring = -1
        self.exit_qualification = qualification
        self.exit_instruction_length = length
        raise VMExitSignal()

    def inject_event(self, vector, error_code=-1, software=False):
        """VM entry with event injection (SDM 26.6): deliver an interrupt or exception
        through the guest's IDT now, as the processor would. Returns 0, or an EXIT_* code
        if delivering it ends the run (an intercepted fault, a triple fault)."""
        esp: cython.uint = self.regs[4]
        self.i_start = self.eip
        self.i_esp = esp
        self.set_halted(False)
        try:
            self.deliver(vector & 0xFF, error_code, software)
        except CPUFault as f:
            self.regs[4] = esp
            try:
                return self.raise_exception(f.vector, f.error_code)
            except VMExitSignal:
                self.regs[4] = esp
                self.eip = self.i_start
                self.idt_vectoring = f.vector
                return EXIT_VMEXIT
        except VMExitSignal:
            self.regs[4] = esp
            self.eip = self.i_start
            self.idt_vectoring = vector & 0xFF
            return EXIT_VMEXIT
        self.icount += 1                # the delivery is a step of guest time
        return 0

    def cpuid_values(self, leaf, subleaf=0):
        """What CPUID returns for (leaf, subleaf) on this processor: (EAX, EBX, ECX, EDX).
        A VMM emulating a CPUID exit starts from these."""
        saved = [self.regs[0], self.regs[1], self.regs[2], self.regs[3]]
        self.regs[0] = leaf & MASK32
        self.regs[1] = subleaf & MASK32
        self.exec_cpuid()
        out = (self.regs[0], self.regs[3], self.regs[1], self.regs[2])
        self.regs[0], self.regs[1], self.regs[2], self.regs[3] = saved
        return out

    def request_exit(self):
        """Ask the run loop to stop after the current instruction (from a device handler)."""
        self.exit_request = EXIT_REQUEST

    def flush_decode_cache(self):
        i: cython.int
        for i in range(4096):
            self.dcache[i].tag = i + 1  # can never equal an address that indexes entry i

    def decode_length(self, address):
        """Length of the instruction at linear `address` as the decoder sees it (faults raise
        GuestFault-free CPUFault info as a ValueError)."""
        saved = self.eip
        self.eip = address & MASK32
        try:
            self.decode()
            return self.cur.len
        except CPUFault as f:
            raise ValueError(f"decoding at {address:#x} raises "
                             f"{EXCEPTION_NAMES.get(f.vector, f.vector)}") from None
        finally:
            self.eip = saved

    @property
    def segments(self):
        """Segment registers with their descriptor caches, for traces and tests."""
        return {SEG_NAMES[i]: (self.seg_sel[i], self.seg_base[i], self.seg_limit[i],
                               self.seg_attr[i]) for i in range(6)}

    # ------------------------------------------------------------------------------------
    # Memory path: segment check -> linear -> (paging) -> physical
    # ------------------------------------------------------------------------------------
    def fault(self, vector, error_code):
        raise CPUFault(vector, error_code)

    def seg_check(self, seg, off, size, write):
        """Linear address of seg:off for an access of `size` bytes (SDM Vol. 3 5.3)."""
        off &= MASK32
        ok: cython.int = self.seg_wr[seg] if write else self.seg_rd[seg]
        hi: cython.uint = self.seg_hi[seg]
        if not ok or off < self.seg_lo[seg] or off > hi or hi - off < size - 1:
            # Null selector, wrong segment type or outside the limit: #SS for the stack.
            self.fault(SS_ if seg == SS else GP, 0)
        return (self.seg_base[seg] + off) & MASK32

    def phys_frame(self, pa, size, write):
        frame: cython.int = self.mem.frame_of_page[pa >> 12]
        if frame < 0:
            raise UnmappedMemory(pa, size, "write" if write else "read")
        return frame

    def phys_read(self, pa, size):
        off: cython.uint = pa & 0xFFF
        frame: cython.int = self.mem.frame_of_page[pa >> 12]
        o: cython.uint
        v: cython.uint
        if frame >= 0 and off <= 4096 - size:
            o = (frame << 12) | off
            if size == 1:
                return self.mem.ram[o]
            if cython.compiled and HOST_LITTLE_ENDIAN:
                # one load: the host is little-endian, like the guest
                if size == 4:
                    return cython.cast(cython.p_uint, cython.address(self.mem.ram[o]))[0]
                return cython.cast(cython.p_ushort, cython.address(self.mem.ram[o]))[0]
            if size == 4:
                v = self.mem.ram[o + 3]
                v = (v << 8) | self.mem.ram[o + 2]
                v = (v << 8) | self.mem.ram[o + 1]
                return (v << 8) | self.mem.ram[o]
            v = self.mem.ram[o + 1]
            return (v << 8) | self.mem.ram[o]
        return self.phys_read_slow(pa, size)

    def phys_read_slow(self, pa, size):
        """Memory-mapped I/O, unmapped memory, or an access that crosses into the next page:
        byte by byte, after checking every byte in order (so an unmapped access names its
        first unmapped byte)."""
        v: cython.uint = 0
        o: cython.uint
        frame: cython.int
        i: cython.int
        if self.mem.mmio:
            device = self.mem.mmio.get(pa >> 12)
            if device is not None and (pa & 0xFFF) <= 4096 - size:
                return device.mmio_read(pa, size) & size_mask(size)
            if device is not None or self.mem.mmio.get(((pa + size - 1) & MASK32) >> 12) is not None:
                for i in range(size - 1, -1, -1):
                    v = (v << 8) | self.phys_read_slow((pa + i) & MASK32, 1)
                return v
        for i in range(size):
            self.phys_frame((pa + i) & MASK32, size, False)
        for i in range(size - 1, -1, -1):
            o = (pa + i) & MASK32
            frame = self.phys_frame(o, size, False)
            v = (v << 8) | self.mem.ram[(frame << 12) | (o & 0xFFF)]
        return v

    def phys_write(self, pa, size, value):
        off: cython.uint = pa & 0xFFF
        frame: cython.int = self.mem.frame_of_page[pa >> 12]
        o: cython.uint
        i: cython.int
        if frame >= 0 and off <= 4096 - size:
            if self.mem.code_chunks[pa >> 12] & chunk_bits(off, size):
                self.mem.code_written(pa >> 12)     # self-modifying code
            o = (frame << 12) | off
            if size == 1:
                self.mem.ram[o] = value & 0xFF
            elif cython.compiled and HOST_LITTLE_ENDIAN:
                if size == 4:
                    cython.cast(cython.p_uint, cython.address(self.mem.ram[o]))[0] = value
                else:
                    cython.cast(cython.p_ushort, cython.address(self.mem.ram[o]))[0] = value & 0xFFFF
            else:
                self.mem.ram[o] = value & 0xFF
                self.mem.ram[o + 1] = (value >> 8) & 0xFF
                if size == 4:
                    self.mem.ram[o + 2] = (value >> 16) & 0xFF
                    self.mem.ram[o + 3] = (value >> 24) & 0xFF
            return 0
        return self.phys_write_slow(pa, size, value)

    def phys_write_slow(self, pa, size, value):
        """Memory-mapped I/O, unmapped, or across a page boundary: check every byte's page
        before writing any (a write is all or nothing), then byte by byte."""
        o: cython.uint
        frame: cython.int
        i: cython.int
        if self.mem.mmio:
            device = self.mem.mmio.get(pa >> 12)
            if device is not None and (pa & 0xFFF) <= 4096 - size:
                device.mmio_write(pa, size, value & size_mask(size))
                return 0
            if device is not None or self.mem.mmio.get(((pa + size - 1) & MASK32) >> 12) is not None:
                for i in range(size):
                    self.phys_write_slow((pa + i) & MASK32, 1, (value >> (8 * i)) & 0xFF)
                return 0
        for i in range(size):
            self.phys_frame((pa + i) & MASK32, size, True)
        for i in range(size):
            o = (pa + i) & MASK32
            frame = self.mem.frame_of_page[o >> 12]
            if self.mem.code_chunks[o >> 12] & chunk_bits(o & 0xFFF, 1):
                self.mem.code_written(o >> 12)
            self.mem.ram[(frame << 12) | (o & 0xFFF)] = (value >> (8 * i)) & 0xFF
        return 0

    def lin_read(self, lin, size):
        """Read at a linear address: identity while CR0.PG is clear, else through the TLB."""
        if not self.paging:
            return self.phys_read(lin, size)
        if (lin & 0xFFF) <= 4096 - size:
            return self.phys_read(self.translate(lin, False), size)
        return self.lin_read_split(lin, size)

    def lin_write(self, lin, size, value):
        if not self.paging:
            return self.phys_write(lin, size, value)
        if (lin & 0xFFF) <= 4096 - size:
            return self.phys_write(self.translate(lin, True), size, value)
        return self.lin_write_split(lin, size, value)

    def lin_read_rmw(self, lin, size):
        """The read of a read-modify-write instruction: a read (a fault here is a read's,
        W=0, as QEMU reports it), then a check that the page may be written, so that a
        read-only page faults before anything (the flags included) changes, as SDM 6.5
        requires of a fault."""
        v: int64_t = self.lin_read(lin, size)
        self.probe_write(lin, size)
        return v

    def probe_write(self, lin, size):
        """Translate for writing without writing: the write that follows cannot fault."""
        if self.paging:
            self.translate(lin, True)
            if (lin & 0xFFF) > 4096 - size:
                self.translate((lin + size - 1) & PAGE_FRAME, True)
        return 0

    def lin_read_split(self, lin, size):
        """An access that crosses into the next page: both pages are translated (and may
        fault) before anything is read."""
        first: cython.uint = self.translate(lin, False)
        second: cython.uint = self.translate((lin + size - 1) & PAGE_FRAME, False)  # CR2: page start
        v: cython.uint = 0
        i: cython.int
        n: cython.int = 4096 - (lin & 0xFFF)          # bytes on the first page
        for i in range(size - 1, -1, -1):
            if i < n:
                v = (v << 8) | self.phys_read((first + i) & MASK32, 1)
            else:
                v = (v << 8) | self.phys_read(second + (i - n), 1)
        return v

    def lin_write_split(self, lin, size, value):
        first: cython.uint = self.translate(lin, True)
        second: cython.uint = self.translate((lin + size - 1) & PAGE_FRAME, True)
        i: cython.int
        n: cython.int = 4096 - (lin & 0xFFF)
        for i in range(size):
            if i < n:
                self.phys_write((first + i) & MASK32, 1, (value >> (8 * i)) & 0xFF)
            else:
                self.phys_write(second + (i - n), 1, (value >> (8 * i)) & 0xFF)
        return 0

    # ------------------------------------------------------------------------------------
    # MMU: two-level paging (SDM Vol. 3 ch. 4, 32-bit paging) with a software TLB
    # ------------------------------------------------------------------------------------
    def translate(self, lin, write):
        """Physical address for a data access to `lin`; raises #PF (CR2 = lin)."""
        idx: cython.uint = (lin >> 12) & 255
        f: cython.uint
        if self.tlb_lin[idx] == (lin >> 12) + 1:
            f = self.tlb_flags[idx]
            # The cached entry answers if this access needs nothing the walk would do:
            # user access to a user page, and a write to a writable, already-dirty page.
            user: cython.bint = self.cpl == 3 and not self.supervisor_access
            if (not user or f & PTE_US) and \
                    (not write or (f & PTE_D and (f & PTE_RW or (not user and not self.cr0 & CR0_WP)))):
                self.tlb_hits += 1
                return (self.tlb_phys[idx] << 12) | (lin & 0xFFF)
        return self.page_walk(lin, write, False)

    def translate_fetch(self, lin):
        """Physical address for an instruction fetch from `lin`: the TLB, else a walk."""
        idx: cython.uint = (lin >> 12) & 255
        f: cython.uint
        if self.tlb_lin[idx] == (lin >> 12) + 1:
            f = self.tlb_flags[idx]
            if (self.cpl != 3 or f & PTE_US) and not f & TLB_NOEXEC:
                self.tlb_hits += 1
                return (self.tlb_phys[idx] << 12) | (lin & 0xFFF)
        return self.page_walk(lin, False, True)

    def page_walk(self, lin, write, fetch):
        """Walk the page directory and table for `lin`, check the access, set the accessed
        and dirty bits, fill the TLB. SDM 4.3 (32-bit paging), 4.6 (access rights), 4.7
        (#PF error code), 4.8 (accessed and dirty flags). With nested paging each guest
        table entry is itself at a guest-physical address, translated through the nested
        tables first (the two-dimensional walk), and so is the page found."""
        user: cython.bint = self.cpl == 3 and not self.supervisor_access
        err: cython.uint = (2 if write else 0) | (4 if user else 0)
        access: cython.int = 2 if fetch else (1 if write else 0)
        pde_addr: cython.uint
        pde: cython.uint
        pde_host: cython.uint
        pte_addr: cython.uint
        pte_host: cython.uint
        pte: cython.uint
        phys_page: cython.uint
        rights: cython.uint
        idx: cython.uint
        nested_rights: cython.uint = NPT_R | NPT_W | NPT_X
        self.tlb_misses += 1
        if not self.cr0 & CR0_PG:
            # Guest paging off (only reached with nested paging): linear is guest-physical.
            rights = PTE_RW | PTE_US | PTE_D
            phys_page = lin >> 12
        else:
            pde_addr = (self.cr3 & PAGE_FRAME) | ((lin >> 20) & 0xFFC)
            pde_host = pde_addr
            pde_rights: cython.uint = NPT_R | NPT_W | NPT_X
            if self.nested:
                pde_host = self.nested_translate(pde_addr, lin, 0, False)
                pde_rights = self.nested_last_rights
            pde = self.phys_read(pde_host, 4)
            self.walk_refs += 1
            if not pde & PTE_P:
                return self.page_fault(lin, err)
            if pde & PTE_PS and self.cr4 & CR4_PSE:
                # 4 MiB page: bits 21:13 are reserved (no PSE-36: physical addresses are 32-bit)
                if pde & 0x003FE000:
                    return self.page_fault(lin, err | 1 | 8)
                rights = pde
                if not self.access_ok(rights, write, user):
                    return self.page_fault(lin, err | 1)
                new: cython.uint = pde | PTE_A | (PTE_D if write else 0)
                if new != pde:
                    if not pde_rights & NPT_W:      # an A/D update writes the guest's table
                        self.nested_exit(VMX_EPT_VIOLATION, pde_addr, lin, 1, False, pde_rights)
                    self.phys_write(pde_host, 4, new)
                phys_page = ((pde & LARGE_FRAME) | (lin & 0x003FF000)) >> 12
                rights = new | PTE_PS
            else:
                pte_addr = (pde & PAGE_FRAME) | ((lin >> 10) & 0xFFC)
                pte_host = pte_addr
                pte_rights: cython.uint = NPT_R | NPT_W | NPT_X
                if self.nested:
                    pte_host = self.nested_translate(pte_addr, lin, 0, False)
                    pte_rights = self.nested_last_rights
                pte = self.phys_read(pte_host, 4)
                self.walk_refs += 1
                if not pte & PTE_P:
                    return self.page_fault(lin, err)
                # Effective rights: R/W and U/S must allow it at both levels.
                rights = (pde & pte & (PTE_RW | PTE_US)) | (pte & (PTE_D | PTE_G))
                if not self.access_ok(rights, write, user):
                    return self.page_fault(lin, err | 1)
                if not pde & PTE_A:
                    if not pde_rights & NPT_W:
                        self.nested_exit(VMX_EPT_VIOLATION, pde_addr, lin, 1, False, pde_rights)
                    self.phys_write(pde_host, 4, pde | PTE_A)
                new_pte: cython.uint = pte | PTE_A | (PTE_D if write else 0)
                if new_pte != pte:
                    if not pte_rights & NPT_W:
                        self.nested_exit(VMX_EPT_VIOLATION, pte_addr, lin, 1, False, pte_rights)
                    self.phys_write(pte_host, 4, new_pte)
                rights |= new_pte & PTE_D
                phys_page = pte >> 12
        if self.nested:
            phys_page = self.nested_translate((phys_page << 12) | (lin & 0xFFF), lin, access, True) >> 12
            nested_rights = self.nested_last_rights
        idx = (lin >> 12) & 255
        self.tlb_lin[idx] = (lin >> 12) + 1
        self.tlb_phys[idx] = phys_page
        self.tlb_flags[idx] = rights & (PTE_RW | PTE_US | PTE_D | PTE_G)
        if not self.cr4 & CR4_PGE or not self.cr0 & CR0_PG:
            self.tlb_flags[idx] &= ~PTE_G
        # What the nested mapping forbids is taken from the TLB's fast paths: a write
        # there (no "dirty") or a fetch walks again, and meets the violation.
        if not nested_rights & NPT_W:
            self.tlb_flags[idx] &= ~PTE_D
        if not nested_rights & NPT_X:
            self.tlb_flags[idx] |= TLB_NOEXEC
        return (phys_page << 12) | (lin & 0xFFF)

    def nested_translate(self, gpa, lin, access, final):
        """Host-physical address of guest-physical `gpa` through the nested tables (Intel
        SDM 29.3, EPT, in a two-level 32-bit form): `access` 0 read, 1 write, 2 fetch;
        `final` is False for the guest's own page-table entries. Leaves the mapping's
        permissions in nested_last_rights. A missing permission is an EPT violation (exit
        48), a write-only entry an EPT misconfiguration (exit 49): VM exits, with the
        qualification bits of SDM table 28-7."""
        rights: cython.uint = NPT_R | NPT_W | NPT_X
        pde_addr: cython.uint = (self.nested_root & PAGE_FRAME) | ((gpa >> 20) & 0xFFC)
        pde: cython.uint = self.phys_read(pde_addr, 4)
        pte: cython.uint
        hpa: cython.uint
        self.walk_refs += 1
        if pde & (NPT_R | NPT_W) == NPT_W:
            return self.nested_exit(VMX_EPT_MISCONFIG, gpa, lin, access, final, 0)
        rights &= pde
        if not pde & (NPT_R | NPT_W | NPT_X):
            return self.nested_exit(VMX_EPT_VIOLATION, gpa, lin, access, final, 0)
        if pde & NPT_PS:
            hpa = (pde & LARGE_FRAME) | (gpa & 0x003FFFFF)
        else:
            pte = self.phys_read((pde & PAGE_FRAME) | ((gpa >> 10) & 0xFFC), 4)
            self.walk_refs += 1
            if pte & (NPT_R | NPT_W) == NPT_W:
                return self.nested_exit(VMX_EPT_MISCONFIG, gpa, lin, access, final, 0)
            if not pte & (NPT_R | NPT_W | NPT_X):
                return self.nested_exit(VMX_EPT_VIOLATION, gpa, lin, access, final, 0)
            rights &= pte
            hpa = (pte & PAGE_FRAME) | (gpa & 0xFFF)
        if not rights & (1 << access):
            return self.nested_exit(VMX_EPT_VIOLATION, gpa, lin, access, final, rights)
        self.nested_last_rights = rights
        return hpa

    def nested_exit(self, reason, gpa, lin, access, final, rights):
        """Leave guest mode for an EPT violation or misconfiguration. Qualification: bit
        0/1/2 the access was a read/write/fetch, bits 3-5 what the mapping allowed, bit 7
        the linear address is valid, bit 8 it was the final translation (not an access to
        a guest page-table entry)."""
        self.guest_physical_address = gpa
        self.guest_linear_address = lin
        qual: cython.uint = (1 << access) | ((rights & 7) << 3) | 0x80 | (0x100 if final else 0)
        self.vm_exit(reason, qual if reason == VMX_EPT_VIOLATION else 0, 0)
        return 0

    def access_ok(self, rights, write, user):
        """SDM 4.6: user accesses need U/S=1 (and R/W=1 to write); supervisor writes need
        R/W=1 only when CR0.WP is set."""
        if user:
            return (rights & PTE_US) != 0 and (not write or (rights & PTE_RW) != 0)
        return not write or (rights & PTE_RW) != 0 or not self.cr0 & CR0_WP

    def page_fault(self, lin, err):
        if self.guest_mode and (self.exception_intercept >> PF) & 1:
            # SDM 27.1: a #PF that exits leaves CR2 alone (it is the guest's); the address
            # is the exit qualification
            self.exit_qualification = lin
        else:
            self.cr2 = lin
        self.fault(PF, err)
        return 0

    def guest_cr0(self):
        """CR0 as guest mode shows it: the bits the VMM owns (cr0_mask) from the read
        shadow (SDM 25.6.6); outside guest mode the mask is 0."""
        return (self.cr0 & ~self.cr0_mask) | (self.cr0_read_shadow & self.cr0_mask)

    def flush_tlb(self, keep_global):
        """Drop TLB entries (all, or all but global pages, as a CR3 load does)."""
        i: cython.int
        for i in range(256):
            if not (keep_global and self.tlb_flags[i] & PTE_G):
                self.tlb_lin[i] = 0
        self.fetch_page = 0

    def invlpg(self, lin):
        idx: cython.uint = (lin >> 12) & 255
        if self.tlb_lin[idx] == (lin >> 12) + 1:
            self.tlb_lin[idx] = 0
        self.fetch_page = 0

    def read(self, seg, off, size):
        hi: cython.uint = self.seg_hi[seg]
        off &= MASK32                   # (a no-op once compiled: `off` is a C uint)
        if self.seg_rd[seg] and off >= self.seg_lo[seg] and off <= hi and hi - off >= size - 1:
            return self.lin_read((self.seg_base[seg] + off) & MASK32, size)
        return self.lin_read(self.seg_check(seg, off, size, False), size)   # faults

    def write(self, seg, off, size, value):
        hi: cython.uint = self.seg_hi[seg]
        off &= MASK32
        if self.seg_wr[seg] and off >= self.seg_lo[seg] and off <= hi and hi - off >= size - 1:
            return self.lin_write((self.seg_base[seg] + off) & MASK32, size, value)
        return self.lin_write(self.seg_check(seg, off, size, True), size, value)  # faults

    def fetch8(self):
        """Next instruction byte at CS:EIP+i_len (limit-checked, at most 15 bytes)."""
        off: cython.uint
        lin: cython.uint
        frame: cython.int
        if self.fetch_fast:
            # decode() found all 15 possible bytes in the limit and on one mapped page
            if self.cur.len < 15:
                off = self.fetch_base + self.cur.len
                self.cur.len += 1
                return self.mem.ram[off]
        off = (self.i_start + self.cur.len) & MASK32
        if self.cur.len >= 15:
            self.fault(GP, 0)          # SDM: an instruction longer than 15 bytes is #GP(0)
        if off > self.seg_hi[CS] or off < self.seg_lo[CS]:
            self.fault(GP, 0)
        lin = (self.seg_base[CS] + off) & MASK32
        if (lin >> 12) + 1 != self.fetch_page:
            pa: cython.uint = lin
            if self.paging:
                pa = self.translate_fetch(lin)
            frame = self.phys_frame(pa, 1, False)
            self.fetch_page = (lin >> 12) + 1
            self.fetch_frame = frame
            self.fetch_ppage = pa >> 12
        self.cur.len += 1
        return self.mem.ram[(self.fetch_frame << 12) | (lin & 0xFFF)]

    # ------------------------------------------------------------------------------------
    # Registers and flags
    # ------------------------------------------------------------------------------------
    def get_reg(self, size, r):
        if size == 4:
            return self.regs[r]
        if size == 2:
            return self.regs[r] & 0xFFFF
        if r < 4:
            return self.regs[r] & 0xFF
        return (self.regs[r - 4] >> 8) & 0xFF

    def set_reg(self, size, r, v):
        if size == 4:
            self.regs[r] = v & MASK32
        elif size == 2:
            self.regs[r] = (self.regs[r] & KEEP_HIGH16) | (v & 0xFFFF)
        elif r < 4:
            self.regs[r] = (self.regs[r] & KEEP_HIGH24) | (v & 0xFF)
        else:
            self.regs[r - 4] = (self.regs[r - 4] & KEEP_NOT_AH) | ((v & 0xFF) << 8)

    def flag_cf(self):
        op: cython.int = self.cc_op
        sb: cython.uint
        if op == CC_EAGER:
            return self.eflags & 1
        if op == CC_LOGIC:
            return 0
        if op == CC_INC or op == CC_DEC:
            return self.cc_cf
        sb = sign_bit(self.cc_size)
        if op == CC_ADD or op == CC_ADC:
            return 1 if ((self.cc_a & self.cc_b) | ((self.cc_a | self.cc_b) & ~self.cc_res)) & sb else 0
        return 1 if ((~self.cc_a & self.cc_b) | ((~self.cc_a | self.cc_b) & self.cc_res)) & sb else 0

    def materialize(self):
        """Compute the six arithmetic flags from the lazy state into eflags."""
        op: cython.int = self.cc_op
        if op == CC_EAGER:
            return
        a: cython.uint = self.cc_a
        b: cython.uint = self.cc_b
        r: cython.uint = self.cc_res & size_mask(self.cc_size)
        sb: cython.uint = sign_bit(self.cc_size)
        f: cython.uint = self.flag_cf()
        f |= parity(r) << 2
        if r == 0:
            f |= F_ZF
        if r & sb:
            f |= F_SF
        if op != CC_LOGIC:
            f |= (a ^ b ^ r) & F_AF
            if op == CC_ADD or op == CC_ADC or op == CC_INC:
                if (a ^ r) & (b ^ r) & sb:
                    f |= F_OF
            elif (a ^ b) & (a ^ r) & sb:
                f |= F_OF
        self.eflags = (self.eflags & ~ARITH_FLAGS) | f
        self.cc_op = CC_EAGER

    def get_eflags(self):
        self.materialize()
        return self.eflags

    def set_eflags(self, value, mask):
        """Replace the EFLAGS bits in `mask` (bit 1 always reads 1; reserved bits 0)."""
        self.materialize()
        self.eflags = ((self.eflags & ~mask) | (value & mask)) & 0x003F7FD5 | 0x2

    def set_szp(self, res, size):
        """SF, ZF and PF from a result (the caller has materialized the flags)."""
        res = res & size_mask(size)
        f: cython.uint = self.eflags & ~(F_SF | F_ZF | F_PF)
        f |= parity(res) << 2
        if res == 0:
            f |= F_ZF
        if res & sign_bit(size):
            f |= F_SF
        self.eflags = f

    def cond(self, cc):
        """Condition code cc (the low nibble of Jcc/SETcc/CMOVcc) against the flags."""
        op: cython.int = self.cc_op
        a: cython.uint
        b: cython.uint
        r: cython.bint
        f: cython.uint
        # Fast paths for compare-then-branch, straight from the lazy operands.
        if op == CC_SUB:
            m: cython.uint = size_mask(self.cc_size)
            a = self.cc_a & m
            b = self.cc_b & m
            k: cython.int = cc >> 1
            if k == 1:
                r = a < b
            elif k == 2:
                r = a == b
            elif k == 3:
                r = a <= b
            elif k == 6:
                r = sext(a, self.cc_size) < sext(b, self.cc_size)
            elif k == 7:
                r = sext(a, self.cc_size) <= sext(b, self.cc_size)
            else:
                return self.cond_slow(cc)
            return r != (cc & 1)
        if op != CC_EAGER and (cc >> 1) == 2:
            r = (self.cc_res & size_mask(self.cc_size)) == 0
            return r != (cc & 1)
        return self.cond_slow(cc)

    def cond_slow(self, cc):
        f = self.get_eflags()
        k = cc >> 1
        if k == 0:
            r = (f & F_OF) != 0
        elif k == 1:
            r = (f & F_CF) != 0
        elif k == 2:
            r = (f & F_ZF) != 0
        elif k == 3:
            r = (f & (F_CF | F_ZF)) != 0
        elif k == 4:
            r = (f & F_SF) != 0
        elif k == 5:
            r = (f & F_PF) != 0
        elif k == 6:
            r = ((f & F_SF) != 0) != ((f & F_OF) != 0)
        else:
            r = (f & F_ZF) != 0 or (((f & F_SF) != 0) != ((f & F_OF) != 0))
        return r != (cc & 1)

    # ------------------------------------------------------------------------------------
    # Decoder: prefixes, opcode, ModRM/SIB, displacement, immediates (SDM Vol. 2 ch. 2)
    # ------------------------------------------------------------------------------------
    def decode_insert(self, lin):
        """Remember the instruction just decoded; a write to its page invalidates it."""
        self.cur.tag = lin
        self.cur.ppage = self.fetch_ppage
        self.cur.gen = self.mem.page_gen[self.fetch_ppage]
        self.mem.code_chunks[self.fetch_ppage] |= chunk_bits(lin & 0xFFF, self.cur.len)
        self.dcache[lin & 4095] = self.cur

    def decode(self):
        """Decode the instruction at CS:EIP into `cur`: a copy from the decode cache when it
        holds a valid one (the common case, kept small), else byte by byte."""
        lin: cython.uint = (self.seg_base[CS] + self.eip) & MASK32
        idx: cython.uint = lin & 4095
        self.i_start = self.eip
        if self.dcache[idx].tag == lin and (lin >> 12) + 1 == self.fetch_page and \
                self.dcache[idx].ppage == self.fetch_ppage and \
                self.dcache[idx].gen == self.mem.page_gen[self.fetch_ppage] and \
                (self.cs_flat or self.in_cs_limit(self.dcache[idx].len)):
            self.cur = self.dcache[idx]
            self.eip = (self.eip + self.cur.len) & MASK32
            return 0
        return self.decode_bytes(lin)

    def in_cs_limit(self, length):
        """Whether the `length` bytes at CS:EIP are all inside the code segment."""
        return self.eip >= self.seg_lo[CS] and self.eip <= self.seg_hi[CS] and \
            self.seg_hi[CS] - self.eip >= length - 1

    def decode_bytes(self, lin):
        b: cython.int
        entry: cython.int
        kind: cython.int
        wide: cython.int = 4 if self.code32 else 2
        self.decode_misses += 1
        if not cython.compiled:
            self.cur = DecodedInstruction()        # compiled, `cur` is a struct and the cache holds copies
        self.cur.len = 0
        self.fetch_fast = False
        if (lin >> 12) + 1 == self.fetch_page and (lin & 0xFFF) <= 0x1000 - 15 and \
                self.eip >= self.seg_lo[CS] and self.eip <= self.seg_hi[CS] - 14 and \
                self.seg_hi[CS] >= 14:
            self.fetch_fast = True
            self.fetch_base = (self.fetch_frame << 12) | (lin & 0xFFF)
        self.cur.opsize = wide
        self.cur.adsize = wide
        self.cur.seg = -1
        self.cur.rep = 0
        self.cur.lock = 0
        while True:
            b = self.fetch8()
            if b == 0x66:
                self.cur.opsize = 6 - wide
            elif b == 0x67:
                self.cur.adsize = 6 - wide
            elif b == 0x26:
                self.cur.seg = ES
            elif b == 0x2E:
                self.cur.seg = CS
            elif b == 0x36:
                self.cur.seg = SS
            elif b == 0x3E:
                self.cur.seg = DS
            elif b == 0x64:
                self.cur.seg = FS
            elif b == 0x65:
                self.cur.seg = GS
            elif b == 0xF0:
                self.cur.lock = 1
            elif b == 0xF3:
                self.cur.rep = 1
            elif b == 0xF2:
                self.cur.rep = 2
            else:
                break
        if b == 0x0F:
            b = 0x100 | self.fetch8()
        self.cur.op = b
        entry = self.dec_table[b << 3]
        if entry & DEC_MODRM:
            self.decode_modrm()
            entry = self.dec_table[(b << 3) | self.cur.reg]
        else:
            self.cur.mod = 3
            self.cur.reg = 0
            self.cur.rm = 0
        if not (entry & DEC_VALID):
            if b >= 0xD8 and b <= 0xDF and self.cr0 & 0xC:
                self.fault(NM, -1)      # x87 escape with CR0.EM or CR0.TS: the OS may emulate
            self.fault(UD, -1)          # (there is no FPU: otherwise it is not an instruction)
        if self.cur.lock and (not (entry & DEC_LOCK) or self.cur.mod == 3):
            self.fault(UD, -1)          # LOCK only on a read-modify-write of memory
        if self.cur.mod == 3 and entry & DEC_MEMONLY:
            if self.guest_mode and b == 0x101 and self.cur.reg == 0 and self.cur.rm == 1:
                # VMCALL (0F 01 C1): the guest calls its hypervisor (#UD outside guest mode)
                self.vm_exit(VMX_VMCALL, 0, self.cur.len)
            self.fault(UD, -1)
        kind = entry & DEC_IMM_MASK
        if kind != IMM_NONE:
            if kind == IMM_B:
                self.cur.imm = self.fetch8()
            elif kind == IMM_Z or kind == IMM_MOFFS or kind == IMM_PTR:
                size: cython.int = self.cur.adsize if kind == IMM_MOFFS else self.cur.opsize
                self.cur.imm = self.fetch8()
                self.cur.imm |= self.fetch8() << 8
                if size == 4:
                    self.cur.imm |= self.fetch8() << 16
                    self.cur.imm |= self.fetch8() << 24
                if kind == IMM_PTR:
                    self.cur.imm2 = self.fetch8()
                    self.cur.imm2 |= self.fetch8() << 8
            else:   # IMM_W, IMM_ENTER
                self.cur.imm = self.fetch8()
                self.cur.imm |= self.fetch8() << 8
                if kind == IMM_ENTER:
                    self.cur.imm2 = self.fetch8()
        elif b == 0xF6 or b == 0xF7:
            # TEST Eb,Ib / Ev,Iz (/0 and /1) are the only group-3 forms with an immediate.
            if self.cur.reg < 2:
                self.cur.imm = self.fetch8()
                if b == 0xF7:
                    self.cur.imm |= self.fetch8() << 8
                    if self.cur.opsize == 4:
                        self.cur.imm |= self.fetch8() << 16
                        self.cur.imm |= self.fetch8() << 24
        if (lin & 0xFFF) + self.cur.len <= 0x1000:
            self.decode_insert(lin)             # fits in one page: cacheable
        self.eip = (self.i_start + self.cur.len) & MASK32
        return 0

    def decode_modrm(self):
        m: cython.int = self.fetch8()
        mod: cython.int = m >> 6
        rm: cython.int = m & 7
        sib: cython.int
        d: cython.uint
        if self.cur.op >= 0x120 and self.cur.op <= 0x123:
            mod = 3                                     # MOV CRn/DRn: mod is ignored
        self.cur.mod = mod
        self.cur.reg = (m >> 3) & 7
        self.cur.rm = rm
        self.cur.base = -1
        self.cur.index = -1
        self.cur.scale = 0
        self.cur.disp = 0
        self.cur.ea_seg = DS
        if mod == 3:
            return 0
        if self.cur.adsize == 4:
            if rm == 4:
                sib = self.fetch8()
                self.cur.scale = sib >> 6
                if ((sib >> 3) & 7) != 4:
                    self.cur.index = (sib >> 3) & 7
                if (sib & 7) == 5 and mod == 0:
                    mod = 2                     # [index*scale + disp32], no base
                else:
                    self.cur.base = sib & 7
            elif rm == 5 and mod == 0:
                mod = 2                         # [disp32]
            else:
                self.cur.base = rm
            if mod == 1:
                d = self.fetch8()
                self.cur.disp = (d ^ 0x80) - 0x80 & MASK32
            elif mod == 2:
                d = self.fetch8()
                d |= self.fetch8() << 8
                d |= self.fetch8() << 16
                d |= self.fetch8() << 24
                self.cur.disp = d
            if self.cur.base == 4 or self.cur.base == 5:
                self.cur.ea_seg = SS
        else:
            # 16-bit forms: BX+SI, BX+DI, BP+SI, BP+DI, SI, DI, BP (disp16 if mod 0), BX
            if rm == 6 and mod == 0:
                mod = 2
            else:
                if rm < 2 or rm == 7:
                    self.cur.base = 3             # BX
                elif rm < 4 or rm == 6:
                    self.cur.base = 5             # BP
                    self.cur.ea_seg = SS
                if rm < 6:
                    self.cur.index = 6 + (rm & 1)     # SI (even rm) or DI (odd)
            if mod == 1:
                d = self.fetch8()
                self.cur.disp = (d ^ 0x80) - 0x80 & 0xFFFF
            elif mod == 2:
                d = self.fetch8()
                d |= self.fetch8() << 8
                self.cur.disp = d
        if self.cur.seg >= 0:
            self.cur.ea_seg = self.cur.seg
        return 0

    def ea(self):
        """Effective address (offset within the segment) of the ModRM memory operand."""
        a: cython.uint = self.cur.disp
        if self.cur.base >= 0:
            a += self.regs[self.cur.base]
        if self.cur.index >= 0:
            a += self.regs[self.cur.index] << self.cur.scale
        if self.cur.adsize == 2:
            return a & 0xFFFF
        return a & MASK32

    def read_rm(self, size):
        if self.cur.mod == 3:
            return self.get_reg(size, self.cur.rm)
        return self.read(self.cur.ea_seg, self.ea(), size)

    def write_rm(self, size, v):
        if self.cur.mod == 3:
            self.set_reg(size, self.cur.rm, v)
            return 0
        return self.write(self.cur.ea_seg, self.ea(), size, v)

    def push(self, size, v):
        sp: cython.uint
        v &= MASK32
        if self.stack32:
            sp = (self.regs[4] - size) & MASK32
            self.write(SS, sp, size, v)
            self.regs[4] = sp
        else:
            sp = (self.regs[4] - size) & 0xFFFF
            self.write(SS, sp, size, v)
            self.regs[4] = (self.regs[4] & KEEP_HIGH16) | sp
        return 0

    def pop(self, size):
        sp: cython.uint
        v: cython.uint
        if self.stack32:
            sp = self.regs[4]
            v = self.read(SS, sp, size)
            self.regs[4] = (sp + size) & MASK32
        else:
            sp = self.regs[4] & 0xFFFF
            v = self.read(SS, sp, size)
            self.regs[4] = (self.regs[4] & KEEP_HIGH16) | ((sp + size) & 0xFFFF)
        return v

    # ------------------------------------------------------------------------------------
    # Execute: one branch per opcode (Bochs-style), compiled to a C switch
    # ------------------------------------------------------------------------------------
    def execute(self):
        op: cython.int = self.cur.op
        size: cython.int
        osz: cython.int = self.cur.opsize
        a: cython.uint
        b: cython.uint
        v: cython.uint
        lin: cython.uint
        r: cython.int
        if op < 0x40 and (op & 7) < 6:
            # ADD OR ADC SBB AND SUB XOR CMP in their six classic forms
            form: cython.int = op & 7
            aop: cython.int = op >> 3
            size = osz if form & 1 else 1
            if form < 2:                               # Eb,Gb / Ev,Gv
                b = self.get_reg(size, self.cur.reg)
                if self.cur.mod == 3:
                    a = self.get_reg(size, self.cur.rm)
                    v = self.alu(aop, a, b, size)
                    if aop != 7:
                        self.set_reg(size, self.cur.rm, v)
                else:
                    lin = self.seg_check(self.cur.ea_seg, self.ea(), size, aop != 7)
                    a = self.lin_read_rmw(lin, size) if aop != 7 else self.lin_read(lin, size)
                    v = self.alu(aop, a, b, size)
                    if aop != 7:
                        self.lin_write(lin, size, v)
            elif form < 4:                             # Gb,Eb / Gv,Ev
                v = self.alu(aop, self.get_reg(size, self.cur.reg), self.read_rm(size), size)
                if aop != 7:
                    self.set_reg(size, self.cur.reg, v)
            else:                                      # AL,Ib / eAX,Iz
                v = self.alu(aop, self.get_reg(size, 0), self.cur.imm, size)
                if aop != 7:
                    self.set_reg(size, 0, v)
            return 0
        if op >= 0x100:
            return self.execute_0f()

        if op in (0x80, 0x81, 0x82, 0x83):              # group 1: ALU r/m, imm
            size = osz if op & 1 else 1
            b = self.cur.imm
            if op == 0x83:
                b = sext(b, 1) & size_mask(size)
            aop = self.cur.reg
            if self.cur.mod == 3:
                v = self.alu(aop, self.get_reg(size, self.cur.rm), b, size)
                if aop != 7:
                    self.set_reg(size, self.cur.rm, v)
            else:
                lin = self.seg_check(self.cur.ea_seg, self.ea(), size, aop != 7)
                v = self.alu(aop, (self.lin_read_rmw(lin, size) if aop != 7 else self.lin_read(lin, size)), b, size)
                if aop != 7:
                    self.lin_write(lin, size, v)
        elif op in (0x84, 0x85):                        # TEST r/m, r
            size = osz if op & 1 else 1
            self.alu(4, self.read_rm(size), self.get_reg(size, self.cur.reg), size)
        elif op in (0xA8, 0xA9):                        # TEST AL/eAX, imm
            size = osz if op & 1 else 1
            self.alu(4, self.get_reg(size, 0), self.cur.imm, size)
        elif op in (0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x4B, 0x4C, 0x4D, 0x4E, 0x4F):
            # INC/DEC r
            r = op & 7
            self.set_reg(osz, r, self.incdec(self.get_reg(osz, r), osz, op >= 0x48))
        elif op in (0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57):
            # PUSH r (PUSH ESP pushes the old ESP)
            self.push(osz, self.get_reg(osz, op & 7))
        elif op in (0x58, 0x59, 0x5A, 0x5B, 0x5C, 0x5D, 0x5E, 0x5F):
            # POP r
            v = self.pop(osz)
            self.set_reg(osz, op & 7, v)
        elif op == 0x89 or op == 0x88:                  # MOV Ev,Gv / Eb,Gb
            size = osz if op & 1 else 1
            self.write_rm(size, self.get_reg(size, self.cur.reg))
        elif op == 0x8B or op == 0x8A:                  # MOV Gv,Ev / Gb,Eb
            size = osz if op & 1 else 1
            self.set_reg(size, self.cur.reg, self.read_rm(size))
        elif op in (0xB8, 0xB9, 0xBA, 0xBB, 0xBC, 0xBD, 0xBE, 0xBF):
            # MOV r, imm
            self.set_reg(osz, op & 7, self.cur.imm)
        elif op in (0xB0, 0xB1, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7):
            self.set_reg(1, op & 7, self.cur.imm)
        elif op == 0xC6 or op == 0xC7:                  # MOV r/m, imm
            self.write_rm(osz if op & 1 else 1, self.cur.imm)
        elif op in (0xA0, 0xA1, 0xA2, 0xA3):            # MOV AL/eAX <-> moffs
            size = osz if op & 1 else 1
            r = self.cur.seg if self.cur.seg >= 0 else DS
            if op < 0xA2:
                self.set_reg(size, 0, self.read(r, self.cur.imm, size))
            else:
                self.write(r, self.cur.imm, size, self.get_reg(size, 0))
        elif op == 0x8D:                                # LEA
            self.set_reg(osz, self.cur.reg, self.ea())
        elif op in (0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x7B, 0x7C, 0x7D, 0x7E, 0x7F):
            # Jcc rel8
            if self.cond(op & 0xF):
                self.jump_near(self.eip + sext(self.cur.imm, 1))
        elif op == 0xEB:                                # JMP rel8
            self.jump_near(self.eip + sext(self.cur.imm, 1))
        elif op == 0xE9:                                # JMP rel16/32
            self.jump_near(self.eip + self.cur.imm)
        elif op == 0xE8:                                # CALL rel16/32
            v = self.eip
            self.jump_near(v + self.cur.imm)
            self.push(osz, v)
        elif op == 0xC3:                                # RET
            self.jump_near(self.pop(osz))
        elif op == 0xC2:                                # RET imm16
            self.jump_near(self.pop(osz))
            if self.stack32:
                self.regs[4] = (self.regs[4] + self.cur.imm) & MASK32
            else:
                self.regs[4] = (self.regs[4] & KEEP_HIGH16) | ((self.regs[4] + self.cur.imm) & 0xFFFF)
        else:
            return self.execute_other(op)
        return 0

    def execute_other(self, op):
        """The less frequent one-byte opcodes (kept apart so that execute() stays small)."""
        size: cython.int
        osz: cython.int = self.cur.opsize
        a: cython.uint
        b: cython.uint
        v: cython.uint
        lin: cython.uint
        r: cython.int
        if op in (0xC0, 0xC1, 0xD0, 0xD1, 0xD2, 0xD3):     # group 2: shifts and rotates
            size = osz if op & 1 else 1
            if op <= 0xC1:
                b = self.cur.imm
            elif op <= 0xD1:
                b = 1
            else:
                b = self.regs[1] & 0xFF
            self.exec_group2(size, b)
        elif op == 0xF6 or op == 0xF7:
            self.exec_group3(osz if op & 1 else 1)
        elif op == 0x69 or op == 0x6B:                  # IMUL Gv, Ev, imm
            b = self.cur.imm if op == 0x69 else sext(self.cur.imm, 1) & size_mask(osz)
            self.exec_imul2(self.read_rm(osz), b)
        elif op == 0xFE:                                # INC/DEC Eb
            lin = 0
            if self.cur.mod == 3:
                self.set_reg(1, self.cur.rm, self.incdec(self.get_reg(1, self.cur.rm), 1, self.cur.reg == 1))
            else:
                lin = self.seg_check(self.cur.ea_seg, self.ea(), 1, True)
                self.lin_write(lin, 1, self.incdec(self.lin_read_rmw(lin, 1), 1, self.cur.reg == 1))
        elif op == 0xFF:
            self.exec_group5()
        elif op == 0x86 or op == 0x87:                  # XCHG r/m, r
            size = osz if op & 1 else 1
            if self.cur.mod == 3:
                a = self.get_reg(size, self.cur.rm)
                self.set_reg(size, self.cur.rm, self.get_reg(size, self.cur.reg))
                self.set_reg(size, self.cur.reg, a)
            else:
                lin = self.seg_check(self.cur.ea_seg, self.ea(), size, True)
                a = self.lin_read_rmw(lin, size)
                self.lin_write(lin, size, self.get_reg(size, self.cur.reg))
                self.set_reg(size, self.cur.reg, a)
        elif op in (0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97):
            # XCHG eAX, r
            a = self.get_reg(osz, 0)
            self.set_reg(osz, 0, self.get_reg(osz, op & 7))
            self.set_reg(osz, op & 7, a)
        elif op == 0x90:                                # NOP (and PAUSE)
            pass
        elif op == 0x68:                                # PUSH imm
            self.push(osz, self.cur.imm)
        elif op == 0x6A:
            self.push(osz, sext(self.cur.imm, 1) & size_mask(osz))
        elif op == 0x8F:                                # POP Ev: address computed after ESP moves
            v = self.pop(osz)
            self.write_rm(osz, v)
        elif op == 0x60:                                # PUSHA/PUSHAD
            a = self.regs[4]
            for r in range(8):
                self.push(osz, a if r == 4 else self.get_reg(osz, r))
        elif op == 0x61:                                # POPA/POPAD (ESP's slot is skipped)
            self.exec_popa(osz)
        elif op == 0x9C:                                # PUSHF/PUSHFD: VM and RF read as 0
            self.push(osz, self.get_eflags() & 0xFCFFFF & size_mask(osz))
        elif op == 0x9D:                                # POPF/POPFD
            v = self.pop(osz)
            b = POPF_MASK
            if self.cpl > 0:
                b &= ~F_IOPL
            if self.cpl > ((self.eflags >> 12) & 3):
                b &= ~F_IF
            self.set_eflags(v, b & size_mask(osz))
            self.eflags &= ~F_RF
        elif op == 0xC8:
            self.exec_enter()
        elif op == 0xC9:                                # LEAVE
            if self.stack32:
                self.regs[4] = self.regs[5]
            else:
                self.regs[4] = (self.regs[4] & KEEP_HIGH16) | (self.regs[5] & 0xFFFF)
            v = self.pop(osz)
            self.set_reg(osz, 5, v)
        elif op == 0x98:                                # CBW / CWDE
            if osz == 2:
                self.set_reg(2, 0, sext(self.regs[0], 1))
            else:
                self.regs[0] = sext(self.regs[0], 2) & MASK32
        elif op == 0x99:                                # CWD / CDQ
            v = MASK32 if self.regs[0] & sign_bit(osz) else 0
            self.set_reg(osz, 2, v)
        elif op == 0x9E:                                # SAHF
            self.set_eflags((self.regs[0] >> 8) & 0xFF, F_SF | F_ZF | F_AF | F_PF | F_CF)
        elif op == 0x9F:                                # LAHF
            self.set_reg(1, 4, (self.get_eflags() & 0xD5) | 0x2)
        elif op == 0xD7:                                # XLAT
            r = self.cur.seg if self.cur.seg >= 0 else DS
            a = (self.regs[3] + (self.regs[0] & 0xFF)) & (MASK32 if self.cur.adsize == 4 else 0xFFFF)
            self.set_reg(1, 0, self.read(r, a, 1))
        elif op in (0x27, 0x2F, 0x37, 0x3F, 0xD4, 0xD5):
            self.exec_bcd(op)
        elif op in (0xE0, 0xE1, 0xE2, 0xE3):            # LOOPNE LOOPE LOOP JECXZ
            b = MASK32 if self.cur.adsize == 4 else 0xFFFF
            a = self.regs[1] & b
            if op == 0xE3:
                if a == 0:
                    self.jump_near(self.eip + sext(self.cur.imm, 1))
            else:
                a = (a - 1) & b
                self.regs[1] = (self.regs[1] & ~b) | a
                # LOOPE continues while ZF=1 (cc 4), LOOPNE while ZF=0 (cc 5)
                if a != 0 and (op == 0xE2 or self.cond(4 if op == 0xE1 else 5)):
                    self.jump_near(self.eip + sext(self.cur.imm, 1))
        elif op in (0xA4, 0xA5, 0xA6, 0xA7, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF):
            self.exec_string(op)
        elif op in (0x6C, 0x6D, 0x6E, 0x6F, 0xE4, 0xE5, 0xE6, 0xE7, 0xEC, 0xED, 0xEE, 0xEF):
            self.exec_io(op)
        elif op == 0xF8:                                # CLC
            self.set_eflags(0, F_CF)
        elif op == 0xF9:                                # STC
            self.set_eflags(F_CF, F_CF)
        elif op == 0xF5:                                # CMC
            self.set_eflags(self.get_eflags() ^ F_CF, F_CF)
        elif op == 0xFC:                                # CLD
            self.eflags &= ~F_DF
        elif op == 0xFD:                                # STD
            self.eflags |= F_DF
        elif op == 0xFA or op == 0xFB:                  # CLI / STI: IOPL-sensitive
            if self.cpl > ((self.eflags >> 12) & 3):
                self.fault(GP, 0)
            if op == 0xFA:
                self.eflags &= ~F_IF
            else:
                if not self.eflags & F_IF:
                    self.inhibit_at = self.icount + 1   # the next instruction runs first
                self.eflags |= F_IF
        elif op == 0xF4:                                # HLT
            if self.cpl != 0:
                self.fault(GP, 0)
            if self.vm_controls & CTL_HLT:
                self.vm_exit(VMX_HLT, 0, self.cur.len)
            self.set_halted(True)
            self.exit_request = EXIT_HLT
        elif op == 0xCC:                                # INT3: a trap, saved EIP is the next one
            self.soft_exception(BP)
        elif op == 0xCD:                                # INT n
            self.soft_vector = self.cur.imm
            self.deliver(self.cur.imm, -1, True)
            self.soft_vector = -1
        elif op == 0xCE:                                # INTO
            if self.get_eflags() & F_OF:
                self.soft_exception(OF_)
        elif op == 0xCF:
            self.iret(osz)
        elif op == 0x62:                                # BOUND: #BR if outside [lower, upper]
            lin = self.ea()
            a = self.read(self.cur.ea_seg, lin, osz)
            b = self.read(self.cur.ea_seg, (lin + osz) & MASK32, osz)
            v = self.get_reg(osz, self.cur.reg)
            if sext(v, osz) < sext(a, osz) or sext(v, osz) > sext(b, osz):
                self.fault(BR, -1)
        elif op == 0x9B:                                # WAIT: #NM when CR0.TS and CR0.MP
            if (self.cr0 & 0xA) == 0xA:
                self.fault(NM, -1)
        elif op in (0x06, 0x0E, 0x16, 0x1E):            # PUSH ES/CS/SS/DS
            self.push(osz, self.seg_sel[op >> 3])
        elif op in (0x07, 0x17, 0x1F):                  # POP ES/SS/DS
            v = self.pop(osz)
            self.load_data_seg(op >> 3, v & 0xFFFF)
            if op == 0x17:
                self.inhibit_at = self.icount + 1
        elif op == 0x8C:                                # MOV Ev, Sreg
            if self.cur.reg > 5:
                self.fault(UD, -1)
            # To a register: zero-extended to the operand size; to memory: always 16 bits.
            self.write_rm(osz if self.cur.mod == 3 else 2, self.seg_sel[self.cur.reg])
        elif op == 0xC4 or op == 0xC5:                  # LES / LDS
            self.exec_load_far_pointer(ES if op == 0xC4 else DS)
        elif op == 0x8E:                                # MOV Sreg, Ew
            if self.cur.reg > 5 or self.cur.reg == CS:
                self.fault(UD, -1)
            self.load_data_seg(self.cur.reg, self.read_rm(2))
            if self.cur.reg == SS:
                self.inhibit_at = self.icount + 1       # so that MOV ESP can follow MOV SS
        elif op == 0xEA:                                # JMP ptr16:16/32
            self.far_jump(self.cur.imm2, self.cur.imm, False, osz)
        elif op == 0x9A:                                # CALL ptr16:16/32
            self.far_jump(self.cur.imm2, self.cur.imm, True, osz)
        elif op == 0xCB:                                # RETF
            self.far_return(osz, 0)
        elif op == 0xCA:                                # RETF imm16
            self.far_return(osz, self.cur.imm)
        else:
            self.fault(UD, -1)      # the decoder table and this switch disagree
        return 0

    def execute_0f(self):
        op: cython.int = self.cur.op & 0xFF
        osz: cython.int = self.cur.opsize
        a: cython.uint
        b: cython.uint
        v: cython.uint
        lin: cython.uint
        if op in (0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F):
            # Jcc rel16/32
            if self.cond(op & 0xF):
                self.jump_near(self.eip + self.cur.imm)
        elif op in (0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x4B, 0x4C, 0x4D, 0x4E, 0x4F):
            # CMOVcc: the source is always read
            v = self.read_rm(osz)
            if self.cond(op & 0xF):
                self.set_reg(osz, self.cur.reg, v)
        elif op in (0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F):
            # SETcc
            self.write_rm(1, 1 if self.cond(op & 0xF) else 0)
        elif op == 0xB6 or op == 0xB7:                  # MOVZX
            self.set_reg(osz, self.cur.reg, self.read_rm(1 if op == 0xB6 else 2))
        elif op == 0xBE or op == 0xBF:                  # MOVSX
            b = 1 if op == 0xBE else 2
            self.set_reg(osz, self.cur.reg, sext(self.read_rm(b), b) & size_mask(osz))
        elif op == 0xAF:                                # IMUL Gv, Ev
            self.exec_imul2(self.get_reg(osz, self.cur.reg), self.read_rm(osz))
        elif op in (0xA3, 0xAB, 0xB3, 0xBB):            # BT BTS BTR BTC Ev, Gv
            self.exec_bit((op >> 3) & 3, osz, sext(self.get_reg(osz, self.cur.reg), osz))
        elif op == 0xBA:                                # BT BTS BTR BTC Ev, Ib
            self.exec_bit(self.cur.reg & 3, osz, self.cur.imm & (osz * 8 - 1))
        elif op == 0xBC or op == 0xBD:                  # BSF / BSR
            v = self.read_rm(osz)
            self.materialize()
            if v == 0:
                self.eflags |= F_ZF                     # destination left unchanged
            else:
                self.eflags &= ~F_ZF
                if op == 0xBC:
                    a = 0
                    while not (v >> a) & 1:
                        a += 1
                else:
                    a = osz * 8 - 1
                    while not (v >> a) & 1:
                        a -= 1
                self.set_reg(osz, self.cur.reg, a)
        elif op in (0xA4, 0xA5, 0xAC, 0xAD):            # SHLD / SHRD
            self.exec_shld(op >= 0xAC, self.cur.imm if (op & 1) == 0 else self.regs[1] & 0xFF)
        elif op == 0xB0 or op == 0xB1:                  # CMPXCHG
            self.exec_cmpxchg(osz if op & 1 else 1)
        elif op == 0xC0 or op == 0xC1:                  # XADD
            self.exec_xadd(osz if op & 1 else 1)
        elif op == 0xC7:                                # CMPXCHG8B m64
            self.exec_cmpxchg8b()
        elif op in (0xC8, 0xC9, 0xCA, 0xCB, 0xCC, 0xCD, 0xCE, 0xCF):
            # BSWAP r32
            v = self.regs[op & 7]
            self.regs[op & 7] = ((v >> 24) | ((v >> 8) & 0xFF00) | ((v & 0xFF00) << 8)
                                 | ((v & 0xFF) << 24)) & MASK32
        elif op == 0x1F:                                # multi-byte NOP: decodes, does nothing
            pass
        elif op == 0xB2 or op == 0xB4 or op == 0xB5:    # LSS / LFS / LGS
            self.exec_load_far_pointer(SS if op == 0xB2 else (FS if op == 0xB4 else GS))
        elif op == 0xA2:
            if self.guest_mode:
                self.vm_exit(VMX_CPUID, 0, self.cur.len)
            if self.cpuid_faulting and self.cpl > 0:
                self.fault(GP, 0)           # Intel's CPUID faulting: a VMM answers instead
            self.exec_cpuid()
        elif op == 0x31:                                # RDTSC: time is the instruction count
            if self.cr4 & 0x4 and self.cpl > 0:
                self.fault(GP, 0)                       # CR4.TSD
            if self.vm_controls & CTL_RDTSC:
                self.vm_exit(VMX_RDTSC, 0, self.cur.len)
            tsc: cython.ulonglong = self.icount + self.tsc_offset
            self.regs[0] = tsc & MASK32
            self.regs[2] = (tsc >> 32) & MASK32
        elif op == 0x32 or op == 0x30:                  # RDMSR / WRMSR
            if self.vm_controls & CTL_MSR and self.cpl == 0:
                self.vm_exit(VMX_WRMSR if op == 0x30 else VMX_RDMSR, 0, self.cur.len)
            self.exec_msr(op == 0x30)
        elif op == 0xA0 or op == 0xA8:                  # PUSH FS / GS
            self.push(osz, self.seg_sel[FS if op == 0xA0 else GS])
        elif op == 0xA1 or op == 0xA9:                  # POP FS / GS
            v = self.pop(osz)
            self.load_data_seg(FS if op == 0xA1 else GS, v & 0xFFFF)
        elif op == 0x01:
            self.exec_system_0f01()
        elif op == 0x00:
            self.exec_system_0f00()
        elif op == 0x02 or op == 0x03:                  # LAR / LSL
            self.exec_lar_lsl(op == 0x03)
        elif op in (0x20, 0x21, 0x22, 0x23):              # MOV r32, CRn/DRn and back
            self.exec_mov_control(op)
        elif op == 0x06:                                # CLTS
            if self.cpl != 0:
                self.fault(GP, 0)
            if self.cr0_mask & CR0_TS:                  # the VMM owns TS (guest mode)
                if self.cr0_read_shadow & CR0_TS:
                    self.vm_exit(VMX_CR_ACCESS, 0x20, self.cur.len)
                return 0
            self.cr0 &= ~CR0_TS
        elif op == 0x08 or op == 0x09:                  # INVD, WBINVD: no caches to write back
            if self.cpl != 0:
                self.fault(GP, 0)
        else:
            self.fault(UD, -1)                          # includes UD2
        return 0

    # -- arithmetic ---------------------------------------------------------------------------
    def alu(self, op, a, b, size):
        """ADD OR ADC SBB AND SUB XOR CMP (op = ModRM.reg numbering) with lazy flags."""
        m: cython.uint = size_mask(size)
        r: cython.uint
        c: cython.uint
        a &= m
        b &= m
        if op == 0:
            r = (a + b) & m
            self.cc_op = CC_ADD
        elif op == 5 or op == 7:
            r = (a - b) & m
            self.cc_op = CC_SUB
        elif op == 4:
            r = a & b
            self.cc_op = CC_LOGIC
        elif op == 1:
            r = a | b
            self.cc_op = CC_LOGIC
        elif op == 6:
            r = a ^ b
            self.cc_op = CC_LOGIC
        elif op == 2:
            c = self.flag_cf()
            r = (a + b + c) & m
            self.cc_op = CC_ADC
        else:
            c = self.flag_cf()
            r = (a - b - c) & m
            self.cc_op = CC_SBB
        self.cc_a = a
        self.cc_b = b
        self.cc_res = r
        self.cc_size = size
        return r

    def incdec(self, a, size, dec):
        """INC/DEC: flags as ADD/SUB 1, but CF is left as it was."""
        m: cython.uint = size_mask(size)
        r: cython.uint
        self.cc_cf = self.flag_cf()
        a &= m
        if dec:
            r = (a - 1) & m
            self.cc_op = CC_DEC
        else:
            r = (a + 1) & m
            self.cc_op = CC_INC
        self.cc_a = a
        self.cc_b = 1
        self.cc_res = r
        self.cc_size = size
        return r

    def exec_cmpxchg(self, size):
        acc: cython.uint = self.get_reg(size, 0)
        src: cython.uint = self.get_reg(size, self.cur.reg)
        dest: cython.uint
        lin: cython.uint = 0
        if self.cur.mod == 3:
            dest = self.get_reg(size, self.cur.rm)
        else:
            lin = self.seg_check(self.cur.ea_seg, self.ea(), size, True)
            dest = self.lin_read_rmw(lin, size)
        self.alu(7, acc, dest, size)
        if acc == dest:
            if self.cur.mod == 3:
                self.set_reg(size, self.cur.rm, src)
            else:
                self.lin_write(lin, size, src)
        else:
            if self.cur.mod != 3:
                self.lin_write(lin, size, dest)     # the processor always writes back
            self.set_reg(size, 0, dest)
        return 0

    def exec_xadd(self, size):
        src: cython.uint = self.get_reg(size, self.cur.reg)
        dest: cython.uint
        r: cython.uint
        lin: cython.uint
        if self.cur.mod == 3:
            dest = self.get_reg(size, self.cur.rm)
            r = self.alu(0, dest, src, size)
            self.set_reg(size, self.cur.reg, dest)
            self.set_reg(size, self.cur.rm, r)
        else:
            lin = self.seg_check(self.cur.ea_seg, self.ea(), size, True)
            dest = self.lin_read_rmw(lin, size)
            r = self.alu(0, dest, src, size)
            self.lin_write(lin, size, r)
            self.set_reg(size, self.cur.reg, dest)
        return 0

    def exec_cmpxchg8b(self):
        lin: cython.uint = self.seg_check(self.cur.ea_seg, self.ea(), 8, True)
        lo: cython.uint = self.lin_read_rmw(lin, 4)
        hi: cython.uint = self.lin_read_rmw((lin + 4) & MASK32, 4)
        self.materialize()
        if lo == self.regs[0] and hi == self.regs[2]:
            self.lin_write(lin, 4, self.regs[3])
            self.lin_write((lin + 4) & MASK32, 4, self.regs[1])
            self.eflags |= F_ZF
        else:
            self.lin_write(lin, 4, lo)
            self.lin_write((lin + 4) & MASK32, 4, hi)
            self.regs[0] = lo
            self.regs[2] = hi
            self.eflags &= ~F_ZF
        return 0

    def exec_group2(self, size, count):
        """ROL ROR RCL RCR SHL SHR SAL SAR on r/m by `count` (masked to 5 bits)."""
        lin: cython.uint = 0
        v: cython.uint
        count &= 0x1F
        if self.cur.mod == 3:
            v = self.get_reg(size, self.cur.rm)
        else:
            lin = self.seg_check(self.cur.ea_seg, self.ea(), size, True)
            v = self.lin_read(lin, size)
        if count == 0:
            return 0                    # no flags change, nothing is written
        if self.cur.mod != 3:
            self.probe_write(lin, size)     # a fault leaves the flags as they were
        v = self.shift(self.cur.reg, v, count, size)
        if self.cur.mod == 3:
            self.set_reg(size, self.cur.rm, v)
        else:
            self.lin_write(lin, size, v)
        return 0

    def shift(self, op, v, count, size):
        bits: cython.int = size * 8
        m: cython.uint = size_mask(size)
        sb: cython.uint = sign_bit(size)
        wide: cython.ulonglong
        r: cython.uint
        cf: cython.uint
        of: cython.uint
        c: cython.int
        self.materialize()
        f: cython.uint = self.eflags
        if op < 4:
            # Rotates write only CF and OF (OF defined for a count of 1).
            if op == 0:                                 # ROL
                c = count % bits
                r = ((v << c) | (v >> (bits - c))) & m if c else v
                cf = r & 1
                of = (1 if r & sb else 0) ^ cf
            elif op == 1:                               # ROR
                c = count % bits
                r = ((v >> c) | (v << (bits - c))) & m if c else v
                cf = 1 if r & sb else 0
                of = cf ^ (1 if r & (sb >> 1) else 0)
            else:
                c = count % (bits + 1) if bits < 32 else count
                if c == 0:
                    return v                            # RCL/RCR by a multiple of size+1
                wide = (cython.cast(cython.ulonglong, f & 1) << bits) | v
                if op == 2:                             # RCL through CF
                    wide = ((wide << c) | (wide >> (bits + 1 - c))) & ((cython.cast(cython.ulonglong, 1) << (bits + 1)) - 1)
                    r = wide & m
                    cf = (wide >> bits) & 1
                    of = (1 if r & sb else 0) ^ cf
                else:                                   # RCR: OF from the operand before
                    of = (1 if v & sb else 0) ^ (f & 1)
                    wide = ((wide >> c) | (wide << (bits + 1 - c))) & ((cython.cast(cython.ulonglong, 1) << (bits + 1)) - 1)
                    r = wide & m
                    cf = (wide >> bits) & 1
            self.eflags = (f & ~(F_CF | F_OF)) | cf | (of << 11)
            return r
        if op == 4 or op == 6:                          # SHL/SAL
            wide = cython.cast(cython.ulonglong, v) << count
            r = wide & m
            cf = (wide >> bits) & 1
            of = (1 if r & sb else 0) ^ cf
        elif op == 5:                                   # SHR
            r = (v >> count) & m if count < 32 else 0
            cf = (v >> (count - 1)) & 1
            of = 1 if v & sb else 0
        else:                                           # SAR
            r = (sext(v, size) >> count) & m
            cf = (sext(v, size) >> (count - 1)) & 1
            of = 0
        f = (f & ~(F_CF | F_OF | F_AF)) | cf | (of << 11)
        self.eflags = f
        self.set_szp(r, size)
        return r

    def exec_shld(self, right, count):
        """SHLD/SHRD Ev, Gv, count: shift in bits from the register operand."""
        size: cython.int = self.cur.opsize
        bits: cython.int = size * 8
        m: cython.uint = size_mask(size)
        sb: cython.uint = sign_bit(size)
        src: cython.uint = self.get_reg(size, self.cur.reg)
        dest: cython.uint
        lin: cython.uint = 0
        wide: cython.ulonglong
        r: cython.uint
        cf: cython.uint
        count &= 0x1F
        if self.cur.mod == 3:
            dest = self.get_reg(size, self.cur.rm)
        else:
            lin = self.seg_check(self.cur.ea_seg, self.ea(), size, True)
            dest = self.lin_read(lin, size)
        if count == 0:
            return 0
        if self.cur.mod != 3:
            self.probe_write(lin, size)
        if right:
            wide = (cython.cast(cython.ulonglong, src) << bits) | dest
            r = (wide >> count) & m
            cf = (wide >> (count - 1)) & 1
        else:
            wide = (cython.cast(cython.ulonglong, dest) << bits) | src
            r = ((wide << count) >> bits) & m
            cf = (wide >> (2 * bits - count)) & 1
        self.materialize()
        self.eflags = (self.eflags & ~(F_CF | F_OF | F_AF)) | cf
        if (r ^ dest) & sb:
            self.eflags |= F_OF
        self.set_szp(r, size)
        if self.cur.mod == 3:
            self.set_reg(size, self.cur.rm, r)
        else:
            self.lin_write(lin, size, r)
        return 0

    def exec_bit(self, op, size, offset):
        """BT BTS BTR BTC (op 0-3). A register offset into a memory operand may reach any
        operand-sized word at ea + (offset DIV bits) * size, signed (SDM "Bit(BitBase, BitOffset)")."""
        bits: cython.int = size * 8
        bit: cython.uint
        v: cython.uint
        lin: cython.uint = 0
        off: cython.uint
        if self.cur.mod == 3:
            bit = offset & (bits - 1)
            v = self.get_reg(size, self.cur.rm)
        else:
            bit = offset & (bits - 1)
            # floor division by the operand width, then scaled back to bytes
            off = (self.ea() + cython.cast(cython.uint, ((offset - bit) // bits) * size)) & MASK32
            if self.cur.adsize == 2:
                off &= 0xFFFF
            lin = self.seg_check(self.cur.ea_seg, off, size, op != 0)
            v = self.lin_read_rmw(lin, size) if op != 0 else self.lin_read(lin, size)
        self.materialize()
        self.eflags = (self.eflags & ~F_CF) | ((v >> bit) & 1)
        if op == 0:
            return 0
        if op == 1:
            v |= cython.cast(cython.uint, 1) << bit
        elif op == 2:
            v &= ~(cython.cast(cython.uint, 1) << bit)
        else:
            v ^= cython.cast(cython.uint, 1) << bit
        if self.cur.mod == 3:
            self.set_reg(size, self.cur.rm, v)
        else:
            self.lin_write(lin, size, v)
        return 0

    def exec_popa(self, size):
        sp: cython.uint = self.regs[4]
        r: cython.int
        v: cython.uint
        spmask: cython.uint = MASK32 if self.stack32 else 0xFFFF
        # Read all eight slots before changing any register: a fault leaves them intact.
        out: cython.uint[8]
        if not cython.compiled:
            out = [0] * 8
        for r in range(7, -1, -1):
            out[r] = self.read(SS, (sp + (7 - r) * size) & spmask, size)
        for r in range(8):
            if r != 4:
                self.set_reg(size, r, out[r])
        self.regs[4] = (self.regs[4] & ~spmask) | ((sp + 8 * size) & spmask)
        return 0

    def imul_flags(self, full, size):
        """CF = OF = 1 when the signed product does not fit the destination size."""
        lo: cython.longlong = sext(cython.cast(cython.uint, full & size_mask(size)), size)
        self.materialize()
        f: cython.uint = self.eflags & ~(F_CF | F_OF | F_AF)
        if lo != full:
            f |= F_CF | F_OF
        self.eflags = f
        self.set_szp(cython.cast(cython.uint, full & size_mask(size)), size)
        return 0

    def exec_imul2(self, a, b):
        """IMUL Gv, Ev (0F AF) and IMUL Gv, Ev, imm (69, 6B): truncated signed product."""
        size: cython.int = self.cur.opsize
        full: cython.longlong = sext(a, size) * sext(b, size)
        self.imul_flags(full, size)
        self.set_reg(size, self.cur.reg, cython.cast(cython.uint, full & size_mask(size)))
        return 0

    def exec_group3(self, size):
        """TEST NOT NEG MUL IMUL DIV IDIV on r/m (F6/F7)."""
        op: cython.int = self.cur.reg
        v: cython.uint
        lin: cython.uint = 0
        if op < 2:
            self.alu(4, self.read_rm(size), self.cur.imm, size)
            return 0
        if op >= 4:
            return self.exec_muldiv(op, size, self.read_rm(size))
        if self.cur.mod == 3:
            v = self.get_reg(size, self.cur.rm)
        else:
            lin = self.seg_check(self.cur.ea_seg, self.ea(), size, True)
            v = self.lin_read_rmw(lin, size)
        if op == 2:                                     # NOT: no flags
            v = ~v & size_mask(size)
        else:                                           # NEG = 0 - v; CF = (v != 0)
            v = self.alu(5, 0, v, size)
        if self.cur.mod == 3:
            self.set_reg(size, self.cur.rm, v)
        else:
            self.lin_write(lin, size, v)
        return 0

    def exec_muldiv(self, op, size, src):
        bits: cython.int = size * 8
        m: cython.uint = size_mask(size)
        a: cython.ulonglong
        p: cython.ulonglong
        q: cython.ulonglong
        rem: cython.ulonglong
        sp: cython.longlong
        sn: cython.longlong
        sd: cython.longlong
        un: cython.ulonglong
        ud: cython.ulonglong
        # The dividend / product live in AX, DX:AX or EDX:EAX.
        if size == 1:
            a = self.regs[0] & 0xFFFF
        else:
            a = (cython.cast(cython.ulonglong, self.regs[2] & m) << bits) | (self.regs[0] & m)
        if op == 4:                                     # MUL
            p = (a & m) * src
            self.write_double(size, p)
            self.materialize()
            f: cython.uint = self.eflags & ~(F_CF | F_OF | F_AF)
            if p >> bits:
                f |= F_CF | F_OF
            self.eflags = f
            self.set_szp(cython.cast(cython.uint, p & m), size)
        elif op == 5:                                   # IMUL (one operand): full product
            sp = sext(cython.cast(cython.uint, a & m), size) * sext(src, size)
            self.write_double(size, cython.cast(cython.ulonglong, sp))
            self.imul_flags(sp, size)
        elif op == 6:                                   # DIV
            if src == 0:
                self.fault(DE, -1)
            q = a // src
            rem = a % src
            if q > m:
                self.fault(DE, -1)
            self.write_quot_rem(size, cython.cast(cython.uint, q), cython.cast(cython.uint, rem))
        else:                                           # IDIV: quotient truncated toward 0
            if src == 0:
                self.fault(DE, -1)
            if size == 1:
                sn = sext(cython.cast(cython.uint, a), 2)
            elif size == 2:
                sn = sext(cython.cast(cython.uint, a), 4)
            else:
                # EDX:EAX as signed: the xor/subtract is the identity mod 2^64 once compiled
                # (the cast reinterprets), and the sign extension when uncompiled.
                sn = cython.cast(cython.longlong, (a ^ SIGN64) - SIGN64)
            sd = sext(src, size)
            un = (cython.cast(cython.ulonglong, 0) - cython.cast(cython.ulonglong, sn)) if sn < 0 else cython.cast(cython.ulonglong, sn)
            ud = (cython.cast(cython.ulonglong, 0) - cython.cast(cython.ulonglong, sd)) if sd < 0 else cython.cast(cython.ulonglong, sd)
            q = un // ud
            rem = un % ud
            if (sn < 0) != (sd < 0):
                if q > (cython.cast(cython.ulonglong, 1) << (bits - 1)):
                    self.fault(DE, -1)
                q = cython.cast(cython.ulonglong, 0) - q
            elif q >= (cython.cast(cython.ulonglong, 1) << (bits - 1)):
                self.fault(DE, -1)
            if sn < 0:
                rem = cython.cast(cython.ulonglong, 0) - rem
            self.write_quot_rem(size, cython.cast(cython.uint, q & m), cython.cast(cython.uint, rem & m))
        return 0

    def write_double(self, size, p):
        """A double-width product into AX, DX:AX or EDX:EAX."""
        if size == 1:
            self.set_reg(2, 0, p & 0xFFFF)
        else:
            m: cython.uint = size_mask(size)
            self.set_reg(size, 0, p & m)
            self.set_reg(size, 2, (p >> (size * 8)) & m)

    def write_quot_rem(self, size, q, rem):
        if size == 1:
            self.set_reg(2, 0, (q & 0xFF) | ((rem & 0xFF) << 8))
        else:
            self.set_reg(size, 0, q)
            self.set_reg(size, 2, rem)

    def exec_group5(self):
        """INC DEC CALL CALLF JMP JMPF PUSH on Ev (FF)."""
        op: cython.int = self.cur.reg
        osz: cython.int = self.cur.opsize
        v: cython.uint
        lin: cython.uint
        sel: cython.uint
        if op < 2:
            if self.cur.mod == 3:
                self.set_reg(osz, self.cur.rm, self.incdec(self.get_reg(osz, self.cur.rm), osz, op == 1))
            else:
                lin = self.seg_check(self.cur.ea_seg, self.ea(), osz, True)
                self.lin_write(lin, osz, self.incdec(self.lin_read_rmw(lin, osz), osz, op == 1))
        elif op == 2:                                   # CALL near r/m
            v = self.read_rm(osz)
            lin = self.eip
            self.jump_near(v)
            self.push(osz, lin)
        elif op == 4:                                   # JMP near r/m
            self.jump_near(self.read_rm(osz))
        elif op == 6:                                   # PUSH r/m
            self.push(osz, self.read_rm(osz))
        else:                                           # CALLF / JMPF m16:16/32
            lin = self.ea()
            v = self.read(self.cur.ea_seg, lin, osz)
            sel = self.read(self.cur.ea_seg, (lin + osz) & MASK32, 2)
            self.far_jump(sel, v, op == 3, osz)
        return 0

    def exec_bcd(self, op):
        """DAA DAS AAA AAS AAM AAD, following the SDM's pseudo-code line by line."""
        al: cython.uint = self.regs[0] & 0xFF
        ah: cython.uint = (self.regs[0] >> 8) & 0xFF
        self.materialize()
        cf: cython.uint = self.eflags & F_CF
        af: cython.uint = self.eflags & F_AF
        f: cython.uint = self.eflags & ~(F_CF | F_AF | F_OF)
        if op == 0x27 or op == 0x2F:                    # DAA / DAS
            old_al: cython.uint = al
            ncf: cython.uint = 0
            naf: cython.uint = 0
            if (al & 0xF) > 9 or af:
                if op == 0x27:
                    ncf = cf | (1 if al + 6 > 0xFF else 0)
                    al = (al + 6) & 0xFF
                else:
                    ncf = cf | (1 if al < 6 else 0)
                    al = (al - 6) & 0xFF
                naf = F_AF
            if old_al > 0x99 or cf:
                al = (al + 0x60 if op == 0x27 else al - 0x60) & 0xFF
                ncf = 1
            elif op == 0x27:
                ncf = 0         # DAA: "ELSE CF <- 0"; DAS keeps the borrow of the low step
            self.eflags = f | ncf | naf
            self.set_szp(al, 1)
            self.set_reg(1, 0, al)
        elif op == 0x37 or op == 0x3F:                  # AAA / AAS
            ax: cython.uint = self.regs[0] & 0xFFFF
            if (al & 0xF) > 9 or af:
                if op == 0x37:
                    ax = (ax + 0x106) & 0xFFFF
                else:
                    ax = (ax - 6) & 0xFFFF
                    ax = (ax - 0x100) & 0xFFFF
                f |= F_CF | F_AF
            ax &= 0xFF0F
            self.eflags = f
            self.set_szp(ax & 0xFF, 1)
            self.set_reg(2, 0, ax)
        elif op == 0xD4:                                # AAM imm8
            if self.cur.imm == 0:
                self.fault(DE, -1)
            ah = al // self.cur.imm
            al = al % self.cur.imm
            self.eflags = f
            self.set_szp(al, 1)
            self.set_reg(2, 0, (ah << 8) | al)
        else:                                           # AAD imm8
            al = (al + ah * self.cur.imm) & 0xFF
            self.eflags = f
            self.set_szp(al, 1)
            self.set_reg(2, 0, al)
        return 0

    # -- strings and I/O --------------------------------------------------------------------------
    def exec_string(self, op):
        """MOVS CMPS STOS LODS SCAS. With REP/REPE/REPNE each iteration is one step: EIP
        stays on the instruction until the count (or the ZF condition) ends it, so a long
        REP is interruptible and counted, exactly as the architecture allows."""
        size: cython.int = self.cur.opsize if op & 1 else 1
        amask: cython.uint = MASK32 if self.cur.adsize == 4 else 0xFFFF
        cnt: cython.uint
        if not self.cur.rep:
            return self.string_once(op, size)
        cnt = self.regs[1] & amask
        if cnt == 0:
            return 0
        self.string_once(op, size)
        cnt = (cnt - 1) & amask
        self.regs[1] = (self.regs[1] & ~amask) | cnt
        if cnt != 0:
            if op == 0xA6 or op == 0xA7 or op == 0xAE or op == 0xAF:
                # REPE stops on ZF=0, REPNE on ZF=1
                if self.cond(4) != (self.cur.rep == 1):
                    return 0
            self.eip = self.i_start
        return 0

    def string_once(self, op, size):
        amask: cython.uint = MASK32 if self.cur.adsize == 4 else 0xFFFF
        src: cython.int = self.cur.seg if self.cur.seg >= 0 else DS
        si: cython.uint = self.regs[6] & amask
        di: cython.uint = self.regs[7] & amask
        delta: cython.uint = (-size if self.eflags & F_DF else size) & MASK32
        v: cython.uint
        lin: cython.uint
        if op == 0xA4 or op == 0xA5:                    # MOVS
            v = self.read(src, si, size)
            self.write(ES, di, size, v)
            self.regs[6] = (self.regs[6] & ~amask) | ((si + delta) & amask)
            self.regs[7] = (self.regs[7] & ~amask) | ((di + delta) & amask)
        elif op == 0xAA or op == 0xAB:                  # STOS
            self.write(ES, di, size, self.get_reg(size, 0))
            self.regs[7] = (self.regs[7] & ~amask) | ((di + delta) & amask)
        elif op == 0xAC or op == 0xAD:                  # LODS
            v = self.read(src, si, size)
            self.set_reg(size, 0, v)
            self.regs[6] = (self.regs[6] & ~amask) | ((si + delta) & amask)
        elif op == 0xA6 or op == 0xA7:                  # CMPS: [src:eSI] - [ES:eDI]
            v = self.read(src, si, size)
            self.alu(7, v, self.read(ES, di, size), size)
            self.regs[6] = (self.regs[6] & ~amask) | ((si + delta) & amask)
            self.regs[7] = (self.regs[7] & ~amask) | ((di + delta) & amask)
        elif op == 0xAE or op == 0xAF:                  # SCAS: acc - [ES:eDI]
            self.alu(7, self.get_reg(size, 0), self.read(ES, di, size), size)
            self.regs[7] = (self.regs[7] & ~amask) | ((di + delta) & amask)
        elif op == 0x6C or op == 0x6D:                  # INS: check the destination first
            lin = self.seg_check(ES, di, size, True)
            self.lin_write(lin, size, self.port_in(self.regs[2] & 0xFFFF, size))
            self.regs[7] = (self.regs[7] & ~amask) | ((di + delta) & amask)
        else:                                           # OUTS
            v = self.read(src, si, size)
            self.port_out(self.regs[2] & 0xFFFF, size, v)
            self.regs[6] = (self.regs[6] & ~amask) | ((si + delta) & amask)
        return 0

    def io_allowed(self, port, size):
        """IN/OUT/INS/OUTS at CPL > IOPL: allowed only if the 32-bit TSS's I/O permission
        bitmap has a 0 for every byte of the port range (SDM Vol. 1 19.5.2); else #GP(0)."""
        base: cython.uint
        bits: cython.uint
        at: cython.uint
        if self.cpl <= ((self.eflags >> 12) & 3):
            return 0
        if (self.tr_sel & 0xFFFC) == 0 or not self.tr_attr & 0x800 or self.tr_limit < 0x67:
            self.fault(GP, 0)                           # no 32-bit TSS: no bitmap
        self.supervisor_access += 1
        try:
            base = self.lin_read((self.tr_base + 0x66) & MASK32, 2)
            at = base + (port >> 3)
            if at + 1 > self.tr_limit:                  # the two bytes holding the bits
                self.fault(GP, 0)
            bits = self.lin_read((self.tr_base + at) & MASK32, 2)
        finally:
            self.supervisor_access -= 1
        if (bits >> (port & 7)) & ((1 << size) - 1):
            self.fault(GP, 0)
        return 0

    def port_in(self, port, size):
        if self.io is None:
            return size_mask(size)      # nothing answers: the bus floats high
        return self.io.read(port, size) & size_mask(size)

    def port_out(self, port, size, value):
        if self.io is not None:
            self.io.write(port, size, value & size_mask(size))
        return 0

    def exec_io(self, op):
        size: cython.int = self.cur.opsize if op & 1 else 1
        port: cython.uint
        if op <= 0x6F:                                  # INS / OUTS, maybe with REP
            self.io_allowed(self.regs[2] & 0xFFFF, size)
            if self.vm_controls & CTL_IO:
                self.vm_exit(VMX_IO, (size - 1) | (8 if op <= 0x6D else 0) | 0x10 |
                             (0x20 if self.cur.rep else 0) | ((self.regs[2] & 0xFFFF) << 16),
                             self.cur.len)
            return self.exec_string(op)
        port = self.cur.imm & 0xFF if op <= 0xE7 else self.regs[2] & 0xFFFF
        self.io_allowed(port, size)
        if self.vm_controls & CTL_IO:
            # qualification (SDM table 28-5): size - 1, direction (1 = IN), string, REP,
            # immediate operand, port
            self.vm_exit(VMX_IO, (size - 1) | (8 if (op & 2) == 0 else 0) |
                         (0x40 if op <= 0xE7 else 0) | (port << 16), self.cur.len)
        if (op & 2) == 0:                               # IN
            self.set_reg(size, 0, self.port_in(port, size))
        else:                                           # OUT
            self.port_out(port, size, self.get_reg(size, 0))
        return 0

    # -- stack frames ----------------------------------------------------------------------------
    def exec_enter(self):
        """ENTER imm16, imm8 as in the SDM's pseudo-code (nesting level mod 32)."""
        osz: cython.int = self.cur.opsize
        alloc: cython.uint = self.cur.imm
        level: cython.int = self.cur.imm2 & 31
        spmask: cython.uint = MASK32 if self.stack32 else 0xFFFF
        bp: cython.uint = self.regs[5]
        frame: cython.uint
        i: cython.int
        self.push(osz, self.get_reg(osz, 5))
        frame = self.regs[4] & spmask
        if level > 0:
            for i in range(1, level):
                bp = (bp & ~spmask) | ((bp - osz) & spmask)
                self.push(osz, self.read(SS, bp & spmask, osz))
            self.push(osz, frame)
        # EBP (or BP, by operand size) <- FrameTemp; then ESP (or SP, by stack size) -= size
        if osz == 4:
            self.regs[5] = frame
        else:
            self.regs[5] = (self.regs[5] & KEEP_HIGH16) | (frame & 0xFFFF)
        self.regs[4] = (self.regs[4] & ~spmask) | ((self.regs[4] - alloc) & spmask)
        return 0

    # -- system ------------------------------------------------------------------------------------
    def exec_system_0f01(self):
        """SGDT SIDT LGDT LIDT SMSW (0F 01 /0-/4)."""
        op: cython.int = self.cur.reg
        off: cython.uint
        base: cython.uint
        limit: cython.uint
        if op == 4:                                     # SMSW: r32 gets all of CR0
            self.write_rm(self.cur.opsize if self.cur.mod == 3 else 2, self.guest_cr0())
            return 0
        if op >= 6 and self.cpl != 0:
            self.fault(GP, 0)
        if op == 6:                                     # LMSW: PE MP EM TS; cannot clear PE
            v: cython.uint = self.read_rm(2)
            if self.cr0_mask & 0xF:
                # guest mode: an owned bit changed exits (qualification: type 3, the source
                # data in bits 16-31); clearing PE is no change, LMSW cannot
                diff: cython.uint = (v ^ self.cr0_read_shadow) & self.cr0_mask & 0xF
                if self.cr0_read_shadow & CR0_PE and not v & CR0_PE:
                    diff &= ~cython.cast(cython.uint, CR0_PE)
                if diff:
                    self.vm_exit(VMX_CR_ACCESS, 0x30 | ((v & 0xFFFF) << 16), self.cur.len)
                v = (v & ~self.cr0_mask) | (self.cr0 & self.cr0_mask)
            self.write_cr0((self.cr0 & ~cython.cast(cython.uint, 0xE)) | (v & 0xF) | (self.cr0 & CR0_PE))
            return 0
        if op == 7:                                     # INVLPG m
            if self.vm_controls & CTL_INVLPG:
                self.vm_exit(VMX_INVLPG, (self.seg_base[self.cur.ea_seg] + self.ea()) & MASK32,
                             self.cur.len)
            self.invlpg((self.seg_base[self.cur.ea_seg] + self.ea()) & MASK32)
            return 0
        off = self.ea()
        if op < 2:                                      # SGDT / SIDT: 16-bit limit, 32-bit base
            limit = self.gdtr_limit if op == 0 else self.idtr_limit
            base = self.gdtr_base if op == 0 else self.idtr_base
            self.seg_check(self.cur.ea_seg, off, 6, True)
            self.write(self.cur.ea_seg, off, 2, limit)
            self.write(self.cur.ea_seg, (off + 2) & MASK32, 4, base)
            return 0
        if self.cpl != 0:
            self.fault(GP, 0)
        limit = self.read(self.cur.ea_seg, off, 2)
        base = self.read(self.cur.ea_seg, (off + 2) & MASK32, 4)
        if self.cur.opsize == 2:
            base &= 0xFFFFFF                            # 24-bit base with a 16-bit operand
        if op == 2:
            self.gdtr_base = base
            self.gdtr_limit = limit
        else:
            self.idtr_base = base
            self.idtr_limit = limit
        return 0

    def exec_system_0f00(self):
        """SLDT STR LLDT LTR VERR VERW (0F 00 /0-/5): protected mode only."""
        op: cython.int = self.cur.reg
        sel: cython.uint
        hi: cython.uint
        typ: cython.uint
        if not self.protected:
            self.fault(UD, -1)
        if op < 2:                                      # SLDT / STR: any CPL
            sel = self.ldtr_sel if op == 0 else self.tr_sel
            self.write_rm(self.cur.opsize if self.cur.mod == 3 else 2, sel)
            return 0
        sel = self.read_rm(2)
        if op >= 4:                                     # VERR / VERW: ZF says, never faults
            ok: cython.bint = self.probe_descriptor(sel)
            if ok:
                hi = self.d_hi
                if op == 4:     # readable: data, or code with R
                    ok = (hi & 0x1000) != 0 and (hi & 0xA00) != 0x800
                else:           # writable data
                    ok = (hi & 0x1A00) == 0x1200
                if ok and (hi & 0xC00) != 0xC00:       # privilege, unless conforming code
                    ok = ((hi >> 13) & 3) >= self.cpl and ((hi >> 13) & 3) >= (sel & 3)
            self.materialize()
            self.eflags = (self.eflags | F_ZF) if ok else (self.eflags & ~F_ZF)
            return 0
        if self.cpl != 0:
            self.fault(GP, 0)
        if op == 2:                                     # LLDT
            if (sel & 0xFFFC) == 0:
                self.ldtr_sel = sel
                self.ldtr_base = self.ldtr_limit = 0
                return 0
            if sel & 4:
                self.fault(GP, sel & 0xFFFC)
            self.read_descriptor(sel, 0)
            hi = self.d_hi
            if (hi & 0x1F00) != 0x0200:                 # system descriptor, type 2 (LDT)
                self.fault(GP, sel & 0xFFFC)
            if not hi & 0x8000:
                self.fault(NP, sel & 0xFFFC)
            self.ldtr_sel = sel
            self.ldtr_base = ((self.d_lo >> 16) | ((hi & 0xFF) << 16) | (hi & TOP_BYTE)) & MASK32
            self.ldtr_limit = self.descriptor_limit(self.d_lo, hi)
            return 0
        # LTR: an available TSS in the GDT, which becomes busy
        if (sel & 0xFFFC) == 0:
            self.fault(GP, 0)
        if sel & 4:
            self.fault(GP, sel & 0xFFFC)
        self.read_descriptor(sel, 0)
        hi = self.d_hi
        typ = (hi >> 8) & 0x1F
        if typ != 0x01 and typ != 0x09:
            self.fault(GP, sel & 0xFFFC)
        if not hi & 0x8000:
            self.fault(NP, sel & 0xFFFC)
        hi |= 0x200                                     # busy
        self.supervisor_access += 1
        try:
            self.lin_write((self.d_addr + 4) & MASK32, 4, hi)
        finally:
            self.supervisor_access -= 1
        self.tr_sel = sel
        self.tr_base = ((self.d_lo >> 16) | ((hi & 0xFF) << 16) | (hi & TOP_BYTE)) & MASK32
        self.tr_limit = self.descriptor_limit(self.d_lo, hi)
        self.tr_attr = hi & 0x00F0FF00
        return 0

    def exec_lar_lsl(self, lsl):
        """LAR / LSL Gv, Ew: access rights or limit of a descriptor the CPL may see; ZF says."""
        if not self.protected:
            self.fault(UD, -1)
        sel: cython.uint = self.read_rm(2)
        hi: cython.uint
        typ: cython.uint
        ok: cython.bint = self.probe_descriptor(sel)
        if ok:
            hi = self.d_hi
            typ = (hi >> 8) & 0x1F
            if not typ & 0x10:                          # system: which types each accepts
                if lsl:             # TSS (16/32, available or busy) and LDT have a limit
                    ok = typ in (1, 2, 3, 9, 11)
                else:               # ... and call and task gates have access rights too
                    ok = typ in (1, 2, 3, 4, 5, 9, 11, 12)
            if ok and (typ & 0x1C) != 0x1C:             # privilege, unless conforming code
                ok = ((hi >> 13) & 3) >= self.cpl and ((hi >> 13) & 3) >= (sel & 3)
        self.materialize()
        if not ok:
            self.eflags &= ~F_ZF
            return 0
        self.eflags |= F_ZF
        if lsl:
            self.set_reg(self.cur.opsize, self.cur.reg, self.descriptor_limit(self.d_lo, self.d_hi))
        else:
            self.set_reg(self.cur.opsize, self.cur.reg, self.d_hi & 0x00F0FF00)
        return 0

    def probe_descriptor(self, sel):
        """read_descriptor for LAR, LSL, VERR, VERW: False (no fault) for a null selector or
        one outside its table."""
        index: cython.uint = sel & 0xFFF8
        limit: cython.uint = self.gdtr_limit
        if (sel & 0xFFFC) == 0:
            return False
        if sel & 4:
            if (self.ldtr_sel & 0xFFFC) == 0:
                return False
            limit = self.ldtr_limit
        if index + 7 > limit:
            return False
        self.read_descriptor(sel, 0)
        return True

    def descriptor_limit(self, lo, hi):
        limit: cython.uint = (lo & 0xFFFF) | (hi & 0xF0000)
        if hi & 0x800000:
            limit = (limit << 12) | 0xFFF
        return limit

    def exec_mov_control(self, op):
        """MOV to and from CR0, CR2, CR3, CR4 and DR0-DR7 (0F 20-23). The ModRM mod field is
        ignored: the operand is always a general register."""
        n: cython.int = self.cur.reg
        v: cython.uint
        if self.cpl != 0:
            self.fault(GP, 0)
        if op == 0x21 or op == 0x23:
            if (n == 4 or n == 5) and self.cr4 & CR4_DE:
                self.fault(UD, -1)                      # DR4/DR5 exist only as aliases
            if self.vm_controls & CTL_MOV_DR:           # qualification: DR, direction, GPR
                self.vm_exit(VMX_MOV_DR, n | (0x10 if op == 0x21 else 0) | (self.cur.rm << 8),
                             self.cur.len)
            if n == 4 or n == 5:
                n += 2                                  # ... of DR6 and DR7
            if op == 0x21:
                self.regs[self.cur.rm] = (self.dr0, self.dr1, self.dr2, self.dr3, 0, 0,
                                          self.dr6, self.dr7)[n]
            else:
                v = self.regs[self.cur.rm]
                if n == 0:
                    self.dr0 = v
                elif n == 1:
                    self.dr1 = v
                elif n == 2:
                    self.dr2 = v
                elif n == 3:
                    self.dr3 = v
                elif n == 6:
                    self.dr6 = (v & 0xE00F) | 0xFFFF0FF0
                else:
                    self.dr7 = (v & 0xFFFF2BFF) | 0x400
            return 0
        if n == 1 or n > 4:
            self.fault(UD, -1)
        if n == 3 and self.vm_controls & (CTL_CR3_STORE if op == 0x20 else CTL_CR3_LOAD):
            # qualification: CR number, access type (0 MOV to CR, 1 MOV from CR), GPR
            self.vm_exit(VMX_CR_ACCESS, 3 | (0x10 if op == 0x20 else 0) | (self.cur.rm << 8),
                         self.cur.len)
        if op == 0x20:
            self.regs[self.cur.rm] = (self.guest_cr0(), 0, self.cr2, self.cr3,
                                      (self.cr4 & ~self.cr4_mask) | (self.cr4_read_shadow & self.cr4_mask))[n]
            return 0
        v = self.regs[self.cur.rm]
        if n == 0 or n == 4:
            # guest mode: changing a bit the VMM owns exits; the owned bits keep their
            # real values otherwise (SDM 25.1.3, 25.6.6)
            if (v ^ (self.cr0_read_shadow if n == 0 else self.cr4_read_shadow)) & \
                    (self.cr0_mask if n == 0 else self.cr4_mask):
                self.vm_exit(VMX_CR_ACCESS, n | (self.cur.rm << 8), self.cur.len)
            if n == 0:
                v = (self.cr0 & self.cr0_mask) | (v & ~self.cr0_mask)
            else:
                v = (self.cr4 & self.cr4_mask) | (v & ~self.cr4_mask)
        if n == 0:
            self.write_cr0(v)
        elif n == 2:
            self.cr2 = v
        elif n == 3:
            self.cr3 = v & (PAGE_FRAME | 0x18)          # PWT, PCD kept; the rest is ignored
            self.cr3_loads += 1
            self.flush_tlb(True)                        # global pages survive a CR3 load
        else:
            if v & ~cython.cast(cython.uint, CR4_TSD | CR4_DE | CR4_PSE | CR4_PGE):
                self.fault(GP, 0)                       # a feature this CPU does not have
            if (v ^ self.cr4) & (CR4_PSE | CR4_PGE):
                self.flush_tlb(False)
            self.cr4 = v
        return 0

    def write_cr0(self, v):
        """Load CR0 (SDM MOV CRn): PG needs PE; NW needs CD; ET reads 1; reserved bits ignored."""
        if v & CR0_PG and not v & CR0_PE:
            self.fault(GP, 0)
        if v & 0x20000000 and not v & 0x40000000:
            self.fault(GP, 0)
        v = (v & (CR0_PG | 0x60000000 | 0x40000 | CR0_WP | 0x2F)) | 0x10
        if (v ^ self.cr0) & (CR0_PG | CR0_WP | CR0_PE):
            self.flush_tlb(False)
        self.cr0 = v
        self.paging = (v & CR0_PG) != 0 or self.nested
        if self.protected != ((v & CR0_PE) != 0):
            self.protected = (v & CR0_PE) != 0
            for seg in range(6):
                self.set_seg_access(seg)        # type checks apply in protected mode only
        return 0

    def exec_msr(self, write):
        """RDMSR / WRMSR (ECX = the MSR): the time-stamp counter (0x10) and IA32_APIC_BASE
        (0x1B); any other MSR is #GP(0), as on a processor that does not have it."""
        msr: cython.uint = self.regs[1]
        value: cython.ulonglong
        if self.cpl != 0:
            self.fault(GP, 0)
        if msr == 0x10:
            if write:
                value = (cython.cast(cython.ulonglong, self.regs[2]) << 32) | self.regs[0]
                self.tsc_offset = value - self.icount
            else:
                value = self.icount + self.tsc_offset
                self.regs[0] = value & MASK32
                self.regs[2] = (value >> 32) & MASK32
            return 0
        if msr == 0x1B and self.apic_present:
            if write:
                if (self.regs[0] & PAGE_FRAME) != (self.apic_base & PAGE_FRAME) or self.regs[2]:
                    raise Unsupported("moving the local APIC (IA32_APIC_BASE) is not implemented")
                self.apic_base = (self.apic_base & ~cython.cast(cython.uint, 0x800)) | (self.regs[0] & 0x800)
            else:
                self.regs[0] = self.apic_base
                self.regs[2] = 0
            return 0
        self.fault(GP, 0)
        return 0

    def exec_cpuid(self):
        leaf: cython.uint = self.regs[0]
        if leaf >= 0x40000000 and leaf <= 0x4FFFFFFF and self.hypervisor_leaf_ebx:
            # Reserved for a hypervisor to announce itself (as paravirt guests probe it).
            self.regs[0] = 0x40000000
            self.regs[3] = self.hypervisor_leaf_ebx
            self.regs[1] = self.hypervisor_leaf_ecx
            self.regs[2] = self.hypervisor_leaf_edx
            return 0
        if leaf >= SIGN32:
            self.regs[0] = SIGN32                       # 0x80000000: no extended leaves
            self.regs[3] = self.regs[1] = self.regs[2] = 0
            return 0
        if leaf == 0:
            self.regs[0] = 1                            # highest basic leaf
            self.regs[3] = 0x756E6547                   # "GenuinePyVMM" in EBX, EDX, ECX
            self.regs[2] = 0x50656E69
            self.regs[1] = 0x4D4D5679
            return 0
        # Leaf 1 (and, as on Intel, any basic leaf above the highest): family 5 model 2.
        self.regs[0] = 0x00000521
        self.regs[3] = 0
        self.regs[1] = SIGN32 if self.hypervisor_leaf_ebx else 0        # "hypervisor present"
        self.regs[2] = (1 << 2) | (1 << 3) | (1 << 4) | (1 << 8) | (1 << 13) | (1 << 15)
        # DE (debug extensions), PSE (4 MiB pages), TSC, CMPXCHG8B, PGE (global pages), CMOV
        self.regs[2] |= 1 << 5                          # MSR (RDMSR/WRMSR)
        if self.apic_present:
            self.regs[2] |= 1 << 9                      # the machine has a local APIC
        return 0

    def jump_near(self, target):
        target &= MASK32                # uncompiled, EIP + a negative displacement
        if self.cur.opsize == 2:
            target &= 0xFFFF
        if target > self.seg_hi[CS] or target < self.seg_lo[CS]:
            self.fault(GP, 0)
        self.eip = target
        return 0

    # ------------------------------------------------------------------------------------
    # Segments and descriptor tables (SDM Vol. 3 ch. 3 and 5)
    # ------------------------------------------------------------------------------------
    def load_seg_cache(self, seg, sel, lo, hi):
        """Fill a segment register's hidden part from descriptor dwords lo/hi."""
        limit: cython.uint = (lo & 0xFFFF) | (hi & 0xF0000)
        typ: cython.uint = (hi >> 8) & 0xF
        if hi & 0x800000:                               # G: 4 KiB granularity
            limit = (limit << 12) | 0xFFF
        self.seg_sel[seg] = sel & 0xFFFF
        self.seg_base[seg] = ((lo >> 16) | ((hi & 0xFF) << 16) | (hi & TOP_BYTE)) & MASK32
        self.seg_limit[seg] = limit
        self.seg_attr[seg] = hi & 0x00F0FF00
        if typ & 0x8:                                   # code
            self.seg_lo[seg] = 0
            self.seg_hi[seg] = limit
        elif typ & 0x4:                                 # expand-down data: (limit, top]
            self.seg_lo[seg] = (limit + 1) & MASK32
            self.seg_hi[seg] = MASK32 if hi & 0x400000 else 0xFFFF
        else:
            self.seg_lo[seg] = 0
            self.seg_hi[seg] = limit
        self.set_seg_access(seg)
        if seg == CS:
            if self.code32 != ((hi & 0x400000) != 0):
                self.flush_decode_cache()       # decodes depend on the default operand size
            self.code32 = (hi & 0x400000) != 0
            # base 0, 4 GiB, expand-up: no limit check is needed to fetch anywhere
            self.cs_flat = self.seg_base[CS] == 0 and self.seg_lo[CS] == 0 and self.seg_hi[CS] == MASK32
        elif seg == SS:
            self.stack32 = (hi & 0x400000) != 0
        return 0

    def set_seg_access(self, seg):
        """Which accesses segment `seg` allows, from its cached attributes and the mode.
        Protected mode (SDM Vol. 3 5.4.1): a code segment is readable if R is set and never
        writable, a data segment is readable and writable if W is set. Real-address mode
        has no type checks (the protection mechanism is enabled by CR0.PE, SDM Vol. 3 5.1;
        the reset state of CS is 'Present, R/W' in Table 9-1): any present segment can be
        read and written, through CS too; only its limit still applies. An expand-down
        segment whose limit leaves no byte is empty in both modes."""
        attr: cython.uint = self.seg_attr[seg]
        typ: cython.uint = (attr >> 8) & 0xF
        present: cython.int = 1 if attr & 0x8000 else 0
        if not typ & 0x8 and typ & 0x4:
            if self.seg_lo[seg] == 0 or (self.seg_lo[seg] > 0xFFFF and not attr & 0x400000):
                present = 0                             # an empty expand-down segment
        if not self.protected:
            self.seg_rd[seg] = present
            self.seg_wr[seg] = present
        elif typ & 0x8:
            self.seg_rd[seg] = present if typ & 0x2 else 0
            self.seg_wr[seg] = 0
        else:
            self.seg_rd[seg] = present
            self.seg_wr[seg] = present if typ & 0x2 else 0
        return 0

    def load_null_seg(self, seg, sel):
        """A null selector in DS/ES/FS/GS: loading is fine, any use is #GP(0)."""
        self.seg_sel[seg] = sel & 0xFFFF
        self.seg_base[seg] = 0
        self.seg_limit[seg] = 0
        self.seg_attr[seg] = 0
        self.seg_rd[seg] = self.seg_wr[seg] = 0
        self.seg_lo[seg] = 1
        self.seg_hi[seg] = 0

    def read_descriptor(self, sel, ext):
        """Fetch the descriptor for `sel` into d_lo/d_hi; #GP(sel) when outside its table."""
        return self.read_descriptor_for(sel, ext, GP)

    def read_descriptor_for(self, sel, ext, vector):
        """read_descriptor, faulting with `vector` (#GP, or #TS for a task's stack)."""
        index: cython.uint = sel & 0xFFF8
        base: cython.uint = self.gdtr_base
        limit: cython.uint = self.gdtr_limit
        if sel & 4:
            if (self.ldtr_sel & 0xFFFC) == 0:
                self.fault(vector, (sel & 0xFFFC) | ext)
            base = self.ldtr_base
            limit = self.ldtr_limit
        if index + 7 > limit:
            self.fault(vector, (sel & 0xFFFC) | ext)
        self.d_addr = (base + index) & MASK32
        self.supervisor_access += 1
        try:
            self.d_lo = self.lin_read(self.d_addr, 4)
            self.d_hi = self.lin_read((self.d_addr + 4) & MASK32, 4)
        finally:
            self.supervisor_access -= 1
        return 0

    def set_accessed(self):
        """Set the accessed bit of the descriptor last read, as the processor does on a load."""
        if not self.d_hi & 0x100:
            self.d_hi |= 0x100
            self.supervisor_access += 1
            try:
                self.lin_write((self.d_addr + 4) & MASK32, 4, self.d_hi)
            finally:
                self.supervisor_access -= 1
        return 0

    def load_real_seg(self, seg, sel):
        """Real mode: the segment's base is selector * 16; its limit and attributes stay as
        they are (which is what makes "unreal mode" work). CS becomes 16-bit code."""
        self.seg_sel[seg] = sel & 0xFFFF
        self.seg_base[seg] = (sel & 0xFFFF) << 4
        if seg == CS:
            if self.code32:
                self.flush_decode_cache()
            self.code32 = False
            self.cs_flat = False
        return 0

    def exec_load_far_pointer(self, seg):
        """LDS/LES/LFS/LGS/LSS r, m16:16 or m16:32: the offset, then the selector above it.
        The segment is loaded (with all its checks) before the register is written, so a
        fault changes neither."""
        osz: cython.int = self.cur.opsize
        off: cython.uint = self.ea()
        v: cython.uint = self.read(self.cur.ea_seg, off, osz)
        nxt: cython.uint = (off + osz) & (MASK32 if self.cur.adsize == 4 else 0xFFFF)
        sel: cython.uint = self.read(self.cur.ea_seg, nxt, 2)
        self.load_data_seg(seg, sel)
        self.set_reg(osz, self.cur.reg, v)
        return 0

    def load_data_seg(self, seg, sel):
        """MOV/POP to SS, DS, ES, FS, GS with the protected-mode checks (SDM MOV, POP)."""
        if not self.protected:
            return self.load_real_seg(seg, sel)
        rpl: cython.int = sel & 3
        hi: cython.uint
        dpl: cython.int
        err: cython.uint = sel & 0xFFFC
        if err == 0:
            if seg == SS:
                self.fault(GP, 0)
            self.load_null_seg(seg, sel)
            return 0
        self.read_descriptor(sel, 0)
        hi = self.d_hi
        dpl = (hi >> 13) & 3
        if seg == SS:
            # a writable data segment with RPL = DPL = CPL
            if rpl != self.cpl or (hi & 0x1A00) != 0x1200 or dpl != self.cpl:
                self.fault(GP, err)
            if not hi & 0x8000:
                self.fault(SS_, err)
        else:
            if not hi & 0x1000 or (hi & 0xA00) == 0x800:    # system, or execute-only code
                self.fault(GP, err)
            if (hi & 0xC00) != 0xC00 and (rpl > dpl or self.cpl > dpl):   # not conforming code
                self.fault(GP, err)
            if not hi & 0x8000:
                self.fault(NP, err)
        self.set_accessed()
        self.load_seg_cache(seg, sel, self.d_lo, self.d_hi)
        return 0

    def code_descriptor_checks(self, sel, rpl_limit, ext):
        """Checks on a code-segment descriptor (already in d_lo/d_hi) as a far JMP/CALL
        target; returns its limit."""
        hi: cython.uint = self.d_hi
        err: cython.uint = (sel & 0xFFFC) | ext
        dpl: cython.int = (hi >> 13) & 3
        if (hi & 0x1800) != 0x1800:                     # must be a code segment (S=1, code)
            self.fault(GP, err)
        if hi & 0x400:                                  # conforming
            if dpl > self.cpl:
                self.fault(GP, err)
        elif (sel & 3) > rpl_limit or dpl != self.cpl:
            self.fault(GP, err)
        if not hi & 0x8000:
            self.fault(NP, err)
        limit: cython.uint = (self.d_lo & 0xFFFF) | (hi & 0xF0000)
        if hi & 0x800000:
            limit = (limit << 12) | 0xFFF
        return limit

    def far_jump(self, sel, offset, call, opsize):
        """JMP/CALL ptr16:16/32 and m16:16/32: to a code segment at the same privilege, or
        through a call gate (a CALL may then enter an inner ring on the TSS's stack).
        Task gates and TSS descriptors (task switches) are not implemented."""
        limit: cython.uint
        if not self.protected:
            if opsize == 2:
                offset &= 0xFFFF
            if offset > self.seg_limit[CS]:
                self.fault(GP, 0)
            if call:
                self.push(opsize, self.seg_sel[CS])
                self.push(opsize, self.eip)
            self.load_real_seg(CS, sel)
            self.eip = offset
            return 0
        if (sel & 0xFFFC) == 0:
            self.fault(GP, 0)
        self.read_descriptor(sel, 0)
        if not self.d_hi & 0x1000:
            typ: cython.uint = (self.d_hi >> 8) & 0xF
            if typ == 0x4 or typ == 0xC:
                return self.through_call_gate(sel, call)
            if typ == 0x5 or typ == 0x9 or typ == 0x1:
                raise Unsupported("a far jump or call to a task (task switching) is not implemented")
            self.fault(GP, sel & 0xFFFC)
        limit = self.code_descriptor_checks(sel, self.cpl, 0)
        if opsize == 2:
            offset &= 0xFFFF
        if offset > limit:
            self.fault(GP, 0)
        if call:
            self.push(opsize, self.seg_sel[CS])
            self.push(opsize, self.eip)
        self.set_accessed()
        self.load_seg_cache(CS, (sel & 0xFFFC) | self.cpl, self.d_lo, self.d_hi)
        self.eip = offset
        return 0

    def through_call_gate(self, gate_sel, call):
        """JMP/CALL through a call gate (SDM CALL: CALL-GATE, JMP: CALL-GATE). The gate's
        descriptor is in d_lo/d_hi."""
        glo: cython.uint = self.d_lo
        ghi: cython.uint = self.d_hi
        gsize: cython.int = 4 if ghi & 0x800 else 2
        gdpl: cython.int = (ghi >> 13) & 3
        cs_sel: cython.uint = glo >> 16
        offset: cython.uint = (ghi & 0xFFFF0000) | (glo & 0xFFFF) if gsize == 4 else glo & 0xFFFF
        dpl: cython.int
        limit: cython.uint
        count: cython.int = ghi & 0x1F
        i: cython.int
        if gdpl < self.cpl or gdpl < (gate_sel & 3):
            self.fault(GP, gate_sel & 0xFFFC)
        if not ghi & 0x8000:
            self.fault(NP, gate_sel & 0xFFFC)
        if (cs_sel & 0xFFFC) == 0:
            self.fault(GP, 0)
        self.read_descriptor(cs_sel, 0)
        dpl = (self.d_hi >> 13) & 3
        if (self.d_hi & 0x1800) != 0x1800 or dpl > self.cpl:
            self.fault(GP, cs_sel & 0xFFFC)
        if not call and not self.d_hi & 0x400 and dpl != self.cpl:
            self.fault(GP, cs_sel & 0xFFFC)            # a JMP never changes the ring
        if not self.d_hi & 0x8000:
            self.fault(NP, cs_sel & 0xFFFC)
        limit = self.descriptor_limit(self.d_lo, self.d_hi)
        if offset > limit:
            self.fault(GP, 0)
        cs_lo: cython.uint = self.d_lo
        cs_hi: cython.uint = self.d_hi
        cs_addr: cython.uint = self.d_addr
        new_cpl: cython.int = self.cpl
        if call and not cs_hi & 0x400 and dpl < self.cpl:
            # More privileged: new stack from the TSS; the gate's parameter count words or
            # dwords are copied from the caller's stack.
            old_ss: cython.uint = self.seg_sel[SS]
            old_esp: cython.uint = self.regs[4]
            old_cpl: cython.int = self.cpl
            params = []
            for i in range(count):
                params.append(self.read(SS, (old_esp + i * gsize) & (MASK32 if self.stack32 else 0xFFFF), gsize))
            ss_cache = self.enter_inner_stack(dpl, 0)
            try:
                self.push(gsize, old_ss)
                self.push(gsize, old_esp)
                for i in range(count - 1, -1, -1):
                    self.push(gsize, params[i])
                self.push(gsize, self.seg_sel[CS])
                self.push(gsize, self.eip)
            except CPUFault:
                self.restore_segment(SS, ss_cache)
                self.set_cpl(old_cpl)
                raise
            new_cpl = dpl
        elif call:
            self.push(gsize, self.seg_sel[CS])
            self.push(gsize, self.eip)
        self.d_lo = cs_lo
        self.d_hi = cs_hi
        self.d_addr = cs_addr
        self.set_accessed()
        self.load_seg_cache(CS, (cs_sel & 0xFFFC) | new_cpl, cs_lo, cs_hi)
        self.eip = offset
        return 0

    def far_return(self, opsize, extra):
        """RETF (imm16): to the same privilege level, or to an outer one (then SS:ESP are
        popped too and the data segment registers the outer ring may not use are nulled)."""
        new_eip: cython.uint = self.pop(opsize)
        sel: cython.uint = self.pop(opsize) & 0xFFFF
        self.release_stack(extra)
        if not self.protected:
            if new_eip > self.seg_limit[CS]:
                self.fault(GP, 0)
            self.load_real_seg(CS, sel)
            self.eip = new_eip
            return 0
        self.return_to(sel, new_eip, opsize, extra)
        return 0

    def iret(self, opsize):
        """IRET/IRETD (SDM IRET): RETURN-TO-SAME-PRIVILEGE-LEVEL and -OUTER-PRIVILEGE-LEVEL."""
        new_eip: cython.uint
        sel: cython.uint
        flags: cython.uint
        mask: cython.uint
        old_cpl: cython.int = self.cpl
        if not self.protected:                          # real mode: IP, CS, FLAGS
            new_eip = self.pop(opsize)
            sel = self.pop(opsize) & 0xFFFF
            flags = self.pop(opsize)
            if new_eip > self.seg_limit[CS]:
                self.fault(GP, 0)
            self.load_real_seg(CS, sel)
            self.eip = new_eip
            self.set_eflags(flags, (0x257FD5 if opsize == 4 else 0x7FD5))
            return 0
        if self.eflags & F_NT:
            raise Unsupported("IRET with EFLAGS.NT (a return to another task) is not implemented")
        new_eip = self.pop(opsize)
        sel = self.pop(opsize) & 0xFFFF
        flags = self.pop(opsize)
        if opsize == 4 and flags & F_VM and old_cpl == 0:
            raise Unsupported("IRET to virtual-8086 mode (EFLAGS.VM = 1) is not implemented")
        self.return_to(sel, new_eip, opsize, 0)
        # CF PF AF ZF SF TF DF OF NT (+ RF AC ID for 32 bits); IF if CPL <= IOPL; IOPL at
        # CPL 0 -- the CPL before the return decides.
        mask = 0x4DD5
        if opsize == 4:
            mask |= 0x250000
        if old_cpl <= ((self.eflags >> 12) & 3):
            mask |= F_IF
        if old_cpl == 0:
            mask |= F_IOPL
        self.set_eflags(flags, mask)
        return 0

    def release_stack(self, count):
        """ESP += count (SP for a 16-bit stack): RET imm16's release of parameters."""
        if self.stack32:
            self.regs[4] = (self.regs[4] + count) & MASK32
        else:
            self.regs[4] = (self.regs[4] & KEEP_HIGH16) | ((self.regs[4] + count) & 0xFFFF)

    def return_to(self, sel, new_eip, opsize, extra):
        """The common part of RETF and IRET once CS:EIP are popped: checks on the code
        segment, and for an outer ring the SS:ESP pop and the stack switch."""
        rpl: cython.int = sel & 3
        dpl: cython.int
        hi: cython.uint
        limit: cython.uint
        cs_lo: cython.uint
        cs_hi: cython.uint
        cs_addr: cython.uint
        new_esp: cython.uint
        ss_sel: cython.uint
        if (sel & 0xFFFC) == 0:
            self.fault(GP, 0)
        if rpl < self.cpl:
            self.fault(GP, sel & 0xFFFC)                # no return to an inner ring
        self.read_descriptor(sel, 0)
        hi = self.d_hi
        dpl = (hi >> 13) & 3
        if (hi & 0x1800) != 0x1800:
            self.fault(GP, sel & 0xFFFC)
        if (hi & 0x400 and dpl > rpl) or (not hi & 0x400 and dpl != rpl):
            self.fault(GP, sel & 0xFFFC)
        if not hi & 0x8000:
            self.fault(NP, sel & 0xFFFC)
        limit = (self.d_lo & 0xFFFF) | (hi & 0xF0000)
        if hi & 0x800000:
            limit = (limit << 12) | 0xFFF
        if opsize == 2:
            new_eip &= 0xFFFF
        if new_eip > limit:
            self.fault(GP, 0)
        if rpl == self.cpl:
            self.set_accessed()
            self.load_seg_cache(CS, sel, self.d_lo, self.d_hi)
            self.eip = new_eip
            return 0
        # Outer privilege level: SS:ESP of the outer ring are on the stack too.
        cs_lo = self.d_lo
        cs_hi = self.d_hi
        cs_addr = self.d_addr
        new_esp = self.pop(opsize)
        ss_sel = self.pop(opsize) & 0xFFFF
        if (ss_sel & 0xFFFC) == 0:
            self.fault(GP, 0)
        self.read_descriptor(ss_sel, 0)
        if (ss_sel & 3) != rpl or (self.d_hi & 0x1A00) != 0x1200 or ((self.d_hi >> 13) & 3) != rpl:
            self.fault(GP, ss_sel & 0xFFFC)
        if not self.d_hi & 0x8000:
            self.fault(SS_, ss_sel & 0xFFFC)
        self.set_accessed()
        self.load_seg_cache(SS, ss_sel, self.d_lo, self.d_hi)
        self.d_lo = cs_lo
        self.d_hi = cs_hi
        self.d_addr = cs_addr
        self.set_accessed()
        self.load_seg_cache(CS, sel, cs_lo, cs_hi)
        self.set_cpl(rpl)
        self.eip = new_eip
        if self.stack32:
            self.regs[4] = new_esp
        else:
            self.regs[4] = (self.regs[4] & KEEP_HIGH16) | (new_esp & 0xFFFF)
        self.release_stack(extra)
        # A data segment the outer ring may not use (DPL < CPL, not conforming code) is nulled.
        seg: cython.int
        for seg in (ES, FS, GS, DS):
            if self.seg_attr[seg] & 0x8000 and (self.seg_attr[seg] & 0xC00) != 0xC00 and \
                    ((self.seg_attr[seg] >> 13) & 3) < rpl:
                self.load_null_seg(seg, 0)
        return 0

    def set_cpl(self, cpl):
        """A new current privilege level: code fetches are checked anew (U/S pages)."""
        self.cpl = cpl
        self.fetch_page = 0

    # ------------------------------------------------------------------------------------
    # Exceptions and interrupts (SDM Vol. 3 ch. 6)
    # ------------------------------------------------------------------------------------
    def deliver(self, vector, error_code, software):
        """Enter the handler for `vector` through the IDT at the current privilege level.

        `software`: INT n / INT3 / INTO, which check the gate's DPL and are not external
        (EXT = 0 in error codes). EIP must already be the address the exception saves."""
        ext: cython.uint = 0 if software else 1
        idx: cython.uint = (vector & 0xFF) * 8
        if not self.protected:
            return self.deliver_real(vector)
        lo: cython.uint
        hi: cython.uint
        typ: cython.uint
        sel: cython.uint
        offset: cython.uint
        limit: cython.uint
        psize: cython.int
        flags: cython.uint
        if idx + 7 > self.idtr_limit:
            self.fault(GP, idx | 2 | ext)
        self.supervisor_access += 1
        try:
            lo = self.lin_read((self.idtr_base + idx) & MASK32, 4)
            hi = self.lin_read((self.idtr_base + idx + 4) & MASK32, 4)
        finally:
            self.supervisor_access -= 1
        typ = (hi >> 8) & 0x1F
        if typ != 0xE and typ != 0xF and typ != 0x6 and typ != 0x7:
            # Task gates (type 5) need task switching, not yet supported: #GP like a bad type.
            self.fault(GP, idx | 2 | ext)
        if software and ((hi >> 13) & 3) < self.cpl:
            self.fault(GP, idx | 2)
        if not hi & 0x8000:
            self.fault(NP, idx | 2 | ext)
        sel = lo >> 16
        offset = (hi & KEEP_HIGH16) | (lo & 0xFFFF) if typ >= 0xE else lo & 0xFFFF
        psize = 4 if typ >= 0xE else 2
        if (sel & 0xFFFC) == 0:
            self.fault(GP, ext)
        self.read_descriptor(sel, ext)
        if (self.d_hi & 0x1800) != 0x1800 or ((self.d_hi >> 13) & 3) > self.cpl:
            self.fault(GP, (sel & 0xFFFC) | ext)
        if not self.d_hi & 0x8000:
            self.fault(NP, (sel & 0xFFFC) | ext)
        limit = (self.d_lo & 0xFFFF) | (self.d_hi & 0xF0000)
        if self.d_hi & 0x800000:
            limit = (limit << 12) | 0xFFF
        if offset > limit:
            self.fault(GP, ext)
        flags = self.get_eflags()
        new_cpl: cython.int = self.cpl
        if not self.d_hi & 0x400 and ((self.d_hi >> 13) & 3) < self.cpl:
            # A more privileged handler: switch to its stack, SS:ESP from the TSS.
            new_cpl = (self.d_hi >> 13) & 3
            self.switch_stack_inward(new_cpl, ext, psize, flags)
        else:
            self.push(psize, flags)
            self.push(psize, self.seg_sel[CS])
            self.push(psize, self.eip)
        if error_code >= 0:
            self.push(psize, error_code)
        self.set_accessed()
        self.load_seg_cache(CS, (sel & 0xFFFC) | new_cpl, self.d_lo, self.d_hi)
        self.eip = offset
        flags &= ~(F_TF | F_NT | F_RF | F_VM)
        if (typ & 1) == 0:                              # interrupt gate: IF cleared
            flags &= ~F_IF
        self.eflags = flags
        self.set_halted(False)
        self.entered_handler = True
        return 0

    def switch_stack_inward(self, new_cpl, ext, psize, flags):
        """Interrupt to an inner ring (SDM INT n, INTER-PRIVILEGE-LEVEL-INTERRUPT): switch to
        the TSS's stack for `new_cpl` and push the old SS, ESP, EFLAGS, CS and EIP there. The
        code segment descriptor is in d_lo/d_hi and is kept there."""
        cs_lo: cython.uint = self.d_lo
        cs_hi: cython.uint = self.d_hi
        cs_addr: cython.uint = self.d_addr
        old_ss: cython.uint = self.seg_sel[SS]
        old_esp: cython.uint = self.regs[4]
        old_cpl: cython.int = self.cpl
        if flags & F_VM:
            raise Unsupported("an interrupt from virtual-8086 mode is not implemented")
        ss_cache = self.enter_inner_stack(new_cpl, ext)
        try:
            self.push(psize, old_ss)
            self.push(psize, old_esp)
            self.push(psize, flags)
            self.push(psize, self.seg_sel[CS])
            self.push(psize, self.eip)
        except CPUFault:
            self.restore_segment(SS, ss_cache)
            self.set_cpl(old_cpl)
            raise
        self.d_lo = cs_lo
        self.d_hi = cs_hi
        self.d_addr = cs_addr
        return 0

    def enter_inner_stack(self, new_cpl, ext):
        """Load SS:ESP for ring `new_cpl` from the TSS, with the SDM's #TS/#SS checks, and
        switch to it (CPL too). Returns what restore_segment needs to undo the switch."""
        at: cython.uint
        new_ss: cython.uint
        new_esp: cython.uint
        wide: cython.bint = (self.tr_attr & 0x800) != 0      # 32-bit TSS (type 9 or 11)
        at = (new_cpl << 3) + 4 if wide else (new_cpl << 2) + 2
        if (self.tr_sel & 0xFFFC) == 0 or at + (5 if wide else 3) > self.tr_limit:
            self.fault(TS, (self.tr_sel & 0xFFFC) | ext)
        self.supervisor_access += 1         # TSS and descriptor reads are supervisor accesses
        try:
            if wide:
                new_esp = self.lin_read((self.tr_base + at) & MASK32, 4)
                new_ss = self.lin_read((self.tr_base + at + 4) & MASK32, 2)
            else:
                new_esp = self.lin_read((self.tr_base + at) & MASK32, 2)
                new_ss = self.lin_read((self.tr_base + at + 2) & MASK32, 2)
            if (new_ss & 0xFFFC) == 0:
                self.fault(TS, ext)
            self.read_descriptor_for(new_ss, ext, TS)
        finally:
            self.supervisor_access -= 1
        if (new_ss & 3) != new_cpl or (self.d_hi & 0x1A00) != 0x1200 or \
                ((self.d_hi >> 13) & 3) != new_cpl:
            self.fault(TS, (new_ss & 0xFFFC) | ext)
        if not self.d_hi & 0x8000:
            self.fault(SS_, (new_ss & 0xFFFC) | ext)
        ss_cache = self.save_segment(SS)
        self.set_accessed()
        self.load_seg_cache(SS, new_ss, self.d_lo, self.d_hi)
        self.set_cpl(new_cpl)
        self.regs[4] = new_esp if self.stack32 else (self.regs[4] & KEEP_HIGH16) | (new_esp & 0xFFFF)
        return ss_cache

    def save_segment(self, seg):
        return (self.seg_sel[seg], self.seg_base[seg], self.seg_limit[seg], self.seg_attr[seg],
                self.seg_lo[seg], self.seg_hi[seg], self.seg_rd[seg], self.seg_wr[seg],
                self.stack32, self.code32, self.cs_flat)

    def restore_segment(self, seg, saved):
        (self.seg_sel[seg], self.seg_base[seg], self.seg_limit[seg], self.seg_attr[seg],
         self.seg_lo[seg], self.seg_hi[seg], self.seg_rd[seg], self.seg_wr[seg],
         self.stack32, self.code32, self.cs_flat) = saved

    def deliver_real(self, vector):
        """Real mode (SDM 20.1.4): the interrupt vector table at IDTR.base holds offset:segment
        pairs; push FLAGS, CS, IP and clear IF, TF and AC. No error code is pushed."""
        at: cython.uint = (vector & 0xFF) * 4
        offset: cython.uint
        sel: cython.uint
        flags: cython.uint
        if at + 3 > self.idtr_limit:
            self.fault(GP, (vector & 0xFF) * 8 + 2)
        offset = self.lin_read((self.idtr_base + at) & MASK32, 2)
        sel = self.lin_read((self.idtr_base + at + 2) & MASK32, 2)
        flags = self.get_eflags()
        self.push(2, flags)
        self.push(2, self.seg_sel[CS])
        self.push(2, self.eip)
        self.load_real_seg(CS, sel)
        self.eip = offset
        self.eflags = flags & ~(F_IF | F_TF | 0x40000)
        self.set_halted(False)
        self.entered_handler = True
        return 0

    def soft_exception(self, vector):
        """INT3 / INTO: exceptions raised by an instruction as a trap (EIP already next)."""
        if (self.exception_intercept >> vector) & 1:
            self.last_exit = ExceptionExit(vector, -1, self.eip, True)
            self.exit_request = EXIT_EXCEPTION
            return 0
        self.soft_vector = vector       # if delivery faults, the report starts here
        self.deliver(vector, -1, True)
        self.soft_vector = -1
        return 0

    def interrupt_window(self):
        """Between two instructions: take an external interrupt if INTR is up, IF is set
        and no STI / MOV SS shadow covers the next instruction (SDM 6.8.3); a halted CPU
        stays halted until then."""
        vector: cython.int
        esp: cython.uint
        if self.vm_controls & CTL_INTR_WINDOW and self.eflags & F_IF and \
                self.icount != self.inhibit_at:
            self.exit_reason = VMX_INTR_WINDOW  # the guest can take an interrupt now
            self.idt_vectoring = -1
            self.exit_qualification = self.exit_instruction_length = 0
            return EXIT_VMEXIT
        if self.intr_pending and self.eflags & F_IF and self.icount != self.inhibit_at:
            if self.interrupt_exiting:
                return EXIT_INTERRUPT   # a VMM takes it (acknowledges and injects) itself
            vector = self.intr_acknowledge() & 0xFF     # the INTA cycle: the PIC names it
            esp = self.regs[4]
            self.i_start = self.eip
            self.i_esp = esp
            self.interrupts += 1
            try:
                self.deliver(vector, -1, False)
            except CPUFault as f:
                self.regs[4] = esp
                return self.raise_exception(f.vector, f.error_code)
            except VMExitSignal:
                self.regs[4] = esp
                self.eip = self.i_start
                self.idt_vectoring = vector     # taken from the PIC, to be injected again
                return EXIT_VMEXIT
            self.icount += 1            # the delivery is a step of guest time
            return 0
        if self.is_halted:
            return EXIT_HLT
        return 0

    def single_step_trap(self):
        if self.entered_handler:
            return 0            # INT n/INT3/INTO: the handler runs with TF clear
        self.dr6 |= 0x4000                              # DR6.BS
        return self.raise_exception(DB, -1)

    def raise_exception(self, vector, error_code):
        """Deliver an exception raised by an instruction, escalating a fault during
        delivery to #DF and a fault while delivering #DF to a triple fault (SDM table 6-5).

        Returns 0 once a handler is entered, or an EXIT_* code."""
        chain = [(vector, error_code)]
        saved_eip = self.eip
        saved_esp = self.regs[4]
        root_eip = saved_eip
        if self.soft_vector >= 0:
            # INT n / INT3 / INTO whose own delivery faulted: name it first in reports.
            chain.insert(0, (self.soft_vector, -1))
            root_eip = (self.i_start + self.cur.len) & MASK32
            self.soft_vector = -1
        while True:
            if vector < 32 and (self.exception_intercept >> vector) & 1:
                self.last_exit = ExceptionExit(vector, error_code, saved_eip, False)
                return EXIT_EXCEPTION
            try:
                self.deliver(vector, error_code if vector in ERROR_CODE_VECTORS else -1, False)
                self.icount += 1        # a delivery is a step of guest time: loops terminate
                return 0
            except CPUFault as f:
                self.eip = saved_eip
                self.regs[4] = saved_esp
                if vector == DF_:
                    chain.append((f.vector, f.error_code))
                    first, err = chain[0]
                    self.last_exit = TripleFault(first, err, root_eip, chain, self.instruction_bytes(),
                                                 "the guest has no usable handler (triple fault)")
                    # The processor is shut down; EIP is left where the first exception
                    # would have returned to, as the report says.
                    self.eip = root_eip
                    return EXIT_TRIPLE_FAULT
                if (vector in CONTRIBUTORY and f.vector in CONTRIBUTORY) or \
                        (vector == PF and (f.vector == PF or f.vector in CONTRIBUTORY)):
                    vector, error_code = DF_, 0
                else:
                    vector, error_code = f.vector, f.error_code
                chain.append((vector, error_code))

    def instruction_bytes(self):
        """The bytes of the instruction at i_start, for error messages (never faults):
        as many as capstone says the instruction has, else as many as were decoded."""
        out = bytearray()
        for i in range(15):
            lin = (self.seg_base[CS] + self.i_start + i) & MASK32
            if not self.mem.is_mapped(lin):
                break
            out += self.mem.read(lin, 1)
        length = instruction_length(bytes(out)) or max(self.cur.len, 1)
        return bytes(out[:length])

    # ------------------------------------------------------------------------------------
    # The run loop
    # ------------------------------------------------------------------------------------
    def run_inner(self, limit):
        if self.pending_debug and self.icount < limit:
            # The single-step trap of the last instruction of the previous run, which
            # stopped between the instruction and its trap (VT-x keeps such a trap in the
            # VMCS's pending debug exceptions): delivered before anything else (SDM table
            # 6-2: traps on the previous instruction come before external interrupts).
            self.pending_debug = False
            self.i_start = self.eip
            self.i_esp = self.regs[4]
            self.entered_handler = False
            r = self.single_step_trap()
            if r:
                return r
        while self.icount < limit:
            if self.attention:
                r = self.interrupt_window()
                if r:
                    return r
            if self.eip == self.until:
                return EXIT_UNTIL
            self.i_esp = self.regs[4]
            tf = self.eflags & F_TF
            if tf:
                self.entered_handler = False
            self.decode()
            self.execute()
            self.icount += 1
            if tf and not self.entered_handler:
                # Single-step: a #DB trap after an instruction that began with TF set
                # (unless it entered an interrupt handler, which cleared TF). Its delivery
                # is a step of guest time: at the end of the budget it waits for the next
                # run, so that a run never goes past its stop.
                if self.icount >= limit:
                    self.pending_debug = True
                    return EXIT_COUNT
                r = self.single_step_trap()
                if r:
                    return r
            if self.exit_request:
                r = self.exit_request
                self.exit_request = 0
                return r
        return EXIT_COUNT

    def run(self, max_instructions):
        """Run until `icount` reaches `max_instructions` or something stops the CPU.

        Returns an EXIT_* code; details of the stop are in `last_exit`. A faulting
        instruction is rolled back (EIP and ESP) and its exception delivered here."""
        r: cython.int
        while True:
            try:
                return self.run_inner(max_instructions)
            except CPUFault as f:
                vector = f.vector
                err = f.error_code
            except UnmappedMemory as u:
                self.eip = self.i_start
                self.regs[4] = self.i_esp
                u.eip = self.i_start
                self.last_exit = u
                return EXIT_UNMAPPED
            except Unsupported as u:
                self.eip = self.i_start
                self.regs[4] = self.i_esp
                u.eip = self.i_start
                self.last_exit = u
                return EXIT_UNSUPPORTED
            except VMExitSignal:
                self.eip = self.i_start         # the instruction did not execute
                self.regs[4] = self.i_esp
                return EXIT_VMEXIT
            self.eip = self.i_start
            self.regs[4] = self.i_esp
            try:
                r = self.raise_exception(vector, err)
            except VMExitSignal:
                # a VM exit (nested paging) while delivering the exception: the event is
                # reported for the VMM to inject again (VT-x's IDT-vectoring information)
                self.eip = self.i_start
                self.regs[4] = self.i_esp
                self.idt_vectoring = vector
                return EXIT_VMEXIT
            except UnmappedMemory as u:
                # the delivery itself reached memory that is not there (a descriptor table
                # or the stack beyond RAM): the machine stops, as for the instruction's own
                self.eip = self.i_start
                self.regs[4] = self.i_esp
                u.eip = self.i_start
                self.last_exit = u
                return EXIT_UNMAPPED
            except Unsupported as u:
                self.eip = self.i_start
                self.regs[4] = self.i_esp
                u.eip = self.i_start
                self.last_exit = u
                return EXIT_UNSUPPORTED
            if r:
                return r


# 8- and 16-bit register names for reg_read/reg_write: (register, size, shift)
_SMALL_REGS = {}
for _i, _n in enumerate(("a", "c", "d", "b")):
    _SMALL_REGS[_n + "l"] = (_i, 1, 0)
    _SMALL_REGS[_n + "h"] = (_i, 1, 8)
    _SMALL_REGS[_n + "x"] = (_i, 2, 0)
for _i, _n in enumerate(("sp", "bp", "si", "di")):
    _SMALL_REGS[_n] = (_i + 4, 2, 0)
