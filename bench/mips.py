#!/usr/bin/env python
"""Guest MIPS of pyvmm's compiled core next to Unicorn (QEMU TCG, no hooks), same guest code.

    python bench/mips.py            # full sizes (~0.3-1 s per workload on pyvmm, best of 3)
    python bench/mips.py --quick    # small sizes, a smoke run for CI
    python bench/mips.py --pure     # also time the uncompiled (pure-Python) core, smaller sizes
    python bench/mips.py --json     # machine-readable results on stdout

Every workload is hand-assembled 32-bit code (bytes written here, each instruction checked
against capstone's disassembly of it at start-up), run on a fresh machine per run in flat
32-bit protected mode until EIP reaches the final HLT. Only emu_start() is timed. The
instruction count is pyvmm's `cpu.icount` (a REP string instruction counts one per
iteration) and is used for both engines, which run the same code. The final registers and
the workload's output memory must be identical on both engines, and must match a result
computed in Python where one is cheap; otherwise the row gets a cross and the run aborts.

This is a benchmark, not a test: it is not collected by pytest and asserts nothing beyond
the agreement of the two engines.
"""
import argparse
import gc
import hashlib
import json
import math
import os
import platform
import random
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))          # run from a checkout without installing

import pyvmm  # noqa: E402

MASK32 = 0xFFFFFFFF
GPRS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")

# Guest memory layout, the same for every workload and both engines.
CODE = 0x00010000          # code region (64 KiB), code starts here
CODE_SIZE = 0x10000
STACK = 0x00080000         # stack region (64 KiB)
STACK_SIZE = 0x10000
STACK_TOP = STACK + STACK_SIZE
DATA = 0x00100000          # data region (1 MiB)
DATA_SIZE = 0x100000
REGIONS = ((CODE, CODE_SIZE), (STACK, STACK_SIZE), (DATA, DATA_SIZE))
# For the paging variants: a page directory and one page table identity-mapping 0-4 MiB
# with 4 KiB pages, so every access goes through the TLB (and a walk on a TLB miss).
PAGE_TABLES = 0x00300000
CR0_PG = 0x80000000


def page_table_bytes():
    pd = struct.pack("<I", (PAGE_TABLES + 0x1000) | 0x7) + bytes(4092)
    pt = b"".join(struct.pack("<I", (page << 12) | 0x7) for page in range(1024))
    return pd + pt


def paged(prog):
    """The same program, run with paging on."""
    prog.paging = True
    return prog


# ------------------------------------------------------------------------------------------
# A tiny "assembler": hand-written bytes, labels and rel8/rel32 branches.
# Each instruction's text is written exactly as capstone prints it, and checked.
# ------------------------------------------------------------------------------------------
def imm(v):
    """An immediate as capstone prints it."""
    return str(v) if 0 <= v <= 9 else hex(v)


def d32(v):
    return struct.pack("<I", v & MASK32).hex()


class Asm:
    JCC8 = {"jo": 0x70, "jno": 0x71, "jb": 0x72, "jae": 0x73, "je": 0x74, "jne": 0x75,
            "jbe": 0x76, "ja": 0x77, "js": 0x78, "jns": 0x79, "jl": 0x7C, "jge": 0x7D,
            "jle": 0x7E, "jg": 0x7F, "jmp": 0xEB}

    def __init__(self, base):
        self.base = base
        self.items = []          # [offset, bytes or None, text, (kind, label) or None]
        self.labels = {}
        self.size = 0

    def label(self, name):
        self.labels[name] = self.base + self.size

    def op(self, hexbytes, text):
        code = bytes.fromhex(hexbytes.replace(" ", ""))
        self.items.append((self.size, code, text, None))
        self.size += len(code)

    def j(self, mnemonic, target):
        """Short (rel8) jump or conditional jump."""
        self.items.append((self.size, None, mnemonic, ("rel8", target)))
        self.size += 2

    def call(self, target):
        self.items.append((self.size, None, "call", ("rel32", target)))
        self.size += 5

    def link(self):
        """Machine code and a listing [(address, bytes, text)]."""
        out = bytearray()
        listing = []
        for offset, code, text, branch in self.items:
            addr = self.base + offset
            if branch is not None:
                kind, target = branch
                dest = self.labels[target]
                if kind == "rel8":
                    rel = dest - (addr + 2)
                    if not -128 <= rel <= 127:
                        raise ValueError(f"{text} {target}: rel8 out of range ({rel})")
                    code = bytes([self.JCC8[text], rel & 0xFF])
                else:
                    code = b"\xE8" + struct.pack("<i", dest - (addr + 5))
                text = f"{text} {hex(dest)}"
            out += code
            listing.append((addr, code, text))
        return bytes(out), listing


def check_listing(listing):
    """Every hand-assembled instruction must disassemble (capstone) to its written text."""
    try:
        import capstone
    except ImportError:
        return "capstone not installed: hand-assembled code NOT verified"
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    for addr, code, text in listing:
        insns = list(md.disasm(code, addr))
        got = f"{insns[0].mnemonic} {insns[0].op_str}".strip() if insns else "(invalid)"
        if len(insns) != 1 or insns[0].size != len(code) or got != text:
            raise SystemExit(f"bench/mips.py: hand-assembled {code.hex(' ')} at {addr:#x} is "
                             f"{got!r} to capstone, but written as {text!r}")
    return None


# ------------------------------------------------------------------------------------------
# Workloads
# ------------------------------------------------------------------------------------------
@dataclass
class Program:
    code: bytes
    listing: list
    end: int                                        # `until`: address of the final HLT
    regs: Dict[str, int]
    data: List[Tuple[int, bytes]] = field(default_factory=list)
    compare: List[Tuple[int, int]] = field(default_factory=list)   # memory compared
    # Independent check of the final state: returns a list of problems (empty when fine).
    expect: Optional[Callable[[dict, Callable[[int, int], bytes]], List[str]]] = None
    paging: bool = False                            # run with CR0.PG on (see PAGE_TABLES)


@dataclass
class Workload:
    name: str
    group: str
    what: str
    build: Callable[[int], Program]
    full: int                                       # size parameter for the normal run
    quick: int                                      # for --quick
    pure: int                                       # for the uncompiled core


def expect_regs(**want):
    def check(regs, read):
        return [f"{r} = {regs[r]:#x}, expected {v & MASK32:#x}"
                for r, v in want.items() if regs[r] != v & MASK32]
    return check


def build_mixed(n, data_addr):
    """The floor: loads, ALU ops, stores, inc/add/and/dec, one jnz per 12 instructions."""
    a = Asm(CODE)
    a.label("loop")
    a.op("8b 06", "mov eax, dword ptr [esi]")
    a.op("8b 5e 04", "mov ebx, dword ptr [esi + 4]")
    a.op("01 d8", "add eax, ebx")
    a.op("31 c8", "xor eax, ecx")
    a.op("81 e3 ff ff 00 00", "and ebx, 0xffff")
    a.op("89 46 04", "mov dword ptr [esi + 4], eax")
    a.op("01 fb", "add ebx, edi")
    a.op("89 1e", "mov dword ptr [esi], ebx")
    a.op("42", "inc edx")
    a.op("01 c7", "add edi, eax")
    a.op("49", "dec ecx")
    a.j("jne", "loop")
    a.label("end")
    a.op("f4", "hlt")
    code, listing = a.link()
    assert data_addr >= CODE + len(code)
    return Program(code, listing, a.labels["end"],
                   regs={"esi": data_addr, "ecx": n, "edi": 0x9E3779B9},
                   data=[(data_addr, struct.pack("<II", 0x01234567, 0x89ABCDEF))],
                   compare=[(data_addr, 8)],
                   expect=expect_regs(ecx=0, edx=n))


SIEVE_N = 8192


def build_sieve(reps):
    """Sieve of Eratosthenes over SIEVE_N bytes, `reps` times (memset by rep stosd)."""
    n = SIEVE_N
    a = Asm(CODE)
    a.label("outer")
    a.op("89 f7", "mov edi, esi")
    a.op("b9 " + d32(n // 4), f"mov ecx, {imm(n // 4)}")
    a.op("31 c0", "xor eax, eax")
    a.op("f3 ab", "rep stosd dword ptr es:[edi], eax")      # memset(sieve, 0, n)
    a.op("31 d2", "xor edx, edx")                           # count = 0
    a.op("bb 02 00 00 00", "mov ebx, 2")                    # i = 2
    a.label("i_loop")
    a.op("80 3c 1e 00", "cmp byte ptr [esi + ebx], 0")      # if composite[i]: next
    a.j("jne", "next_i")
    a.op("42", "inc edx")                                   # count++
    a.op("89 d8", "mov eax, ebx")
    a.op("0f af c3", "imul eax, ebx")                       # j = i*i
    a.op("3d " + d32(n), f"cmp eax, {imm(n)}")
    a.j("jae", "next_i")
    a.label("mark")
    a.op("c6 04 06 01", "mov byte ptr [esi + eax], 1")      # composite[j] = 1
    a.op("01 d8", "add eax, ebx")                           # j += i
    a.op("3d " + d32(n), f"cmp eax, {imm(n)}")
    a.j("jb", "mark")
    a.label("next_i")
    a.op("43", "inc ebx")
    a.op("81 fb " + d32(n), f"cmp ebx, {imm(n)}")
    a.j("jb", "i_loop")
    a.op("4d", "dec ebp")
    a.j("jne", "outer")
    a.label("end")
    a.op("f4", "hlt")
    code, listing = a.link()
    composite = bytearray(n)
    for i in range(2, n):
        if not composite[i]:
            composite[i * i:n:i] = b"\x01" * len(range(i * i, n, i))
    primes = sum(1 for i in range(2, n) if not composite[i])

    def expect(regs, read):
        problems = expect_regs(edx=primes, ebp=0)(regs, read)
        if read(DATA + 2, n - 2) != bytes(composite[2:]):
            problems.append("sieve bytes differ from Python's sieve")
        return problems
    return Program(code, listing, a.labels["end"], regs={"esi": DATA, "ebp": reps},
                   compare=[(DATA, n)], expect=expect)


CRC_LEN = 1024


def build_crc32(reps):
    """Bitwise (table-less, branch-free) CRC-32 of a CRC_LEN-byte buffer, `reps` times."""
    buf = random.Random(32).randbytes(CRC_LEN)
    a = Asm(CODE)
    a.op("31 db", "xor ebx, ebx")
    a.label("outer")
    a.op("b8 ff ff ff ff", "mov eax, 0xffffffff")           # crc = ~0
    a.op("be " + d32(DATA), f"mov esi, {imm(DATA)}")
    a.op("b9 " + d32(CRC_LEN), f"mov ecx, {imm(CRC_LEN)}")
    a.label("byte_loop")
    a.op("0f b6 16", "movzx edx, byte ptr [esi]")
    a.op("31 d0", "xor eax, edx")                           # crc ^= *p
    a.op("bf 08 00 00 00", "mov edi, 8")
    a.label("bit_loop")                                     # crc = crc>>1 ^ (-(crc&1) & POLY)
    a.op("89 c2", "mov edx, eax")
    a.op("83 e2 01", "and edx, 1")
    a.op("f7 da", "neg edx")
    a.op("81 e2 20 83 b8 ed", "and edx, 0xedb88320")
    a.op("d1 e8", "shr eax, 1")
    a.op("31 d0", "xor eax, edx")
    a.op("4f", "dec edi")
    a.j("jne", "bit_loop")
    a.op("46", "inc esi")
    a.op("49", "dec ecx")
    a.j("jne", "byte_loop")
    a.op("f7 d0", "not eax")
    a.op("01 c3", "add ebx, eax")                           # sum of the CRCs
    a.op("4d", "dec ebp")
    a.j("jne", "outer")
    a.label("end")
    a.op("f4", "hlt")
    code, listing = a.link()
    crc = zlib.crc32(buf)
    return Program(code, listing, a.labels["end"], regs={"ebp": reps}, data=[(DATA, buf)],
                   expect=expect_regs(eax=crc, ebx=crc * reps))


MEMCPY_BYTES = 64 * 1024


def build_memcpy(reps):
    """memcpy of MEMCPY_BYTES with rep movsd, `reps` times."""
    src, dst = DATA, DATA + 0x40000
    a = Asm(CODE)
    a.label("outer")
    a.op("be " + d32(src), f"mov esi, {imm(src)}")
    a.op("bf " + d32(dst), f"mov edi, {imm(dst)}")
    a.op("b9 " + d32(MEMCPY_BYTES // 4), f"mov ecx, {imm(MEMCPY_BYTES // 4)}")
    a.op("f3 a5", "rep movsd dword ptr es:[edi], dword ptr [esi]")
    a.op("4d", "dec ebp")
    a.j("jne", "outer")
    a.label("end")
    a.op("f4", "hlt")
    code, listing = a.link()
    payload = random.Random(4).randbytes(MEMCPY_BYTES)

    def expect(regs, read):
        problems = expect_regs(ecx=0, ebp=0, esi=src + MEMCPY_BYTES,
                               edi=dst + MEMCPY_BYTES)(regs, read)
        if read(dst, MEMCPY_BYTES) != payload:
            problems.append("destination differs from the source")
        return problems
    return Program(code, listing, a.labels["end"], regs={"ebp": reps}, data=[(src, payload)],
                   compare=[(dst, MEMCPY_BYTES)], expect=expect)


STR_LEN = 2000


def build_strings(reps):
    """strlen(A) and strcmp(A, B) as byte loops, `reps` times; B differs from A at the end."""
    sa, sb = DATA, DATA + 0x1000
    rng = random.Random(7)
    text_a = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz ") for _ in range(STR_LEN))
    text_b = text_a[:-1] + bytes([text_a[-1] + 1])
    a = Asm(CODE)
    a.op("31 db", "xor ebx, ebx")
    a.op("31 c9", "xor ecx, ecx")
    a.label("outer")
    a.op("bf " + d32(sa), f"mov edi, {imm(sa)}")           # strlen(A)
    a.op("89 f8", "mov eax, edi")
    a.label("len_loop")
    a.op("80 38 00", "cmp byte ptr [eax], 0")
    a.j("je", "len_done")
    a.op("40", "inc eax")
    a.j("jmp", "len_loop")
    a.label("len_done")
    a.op("29 f8", "sub eax, edi")
    a.op("01 c3", "add ebx, eax")                           # total length
    a.op("be " + d32(sa), f"mov esi, {imm(sa)}")           # strcmp(A, B)
    a.op("bf " + d32(sb), f"mov edi, {imm(sb)}")
    a.label("cmp_loop")
    a.op("8a 06", "mov al, byte ptr [esi]")
    a.op("8a 17", "mov dl, byte ptr [edi]")
    a.op("38 d0", "cmp al, dl")
    a.j("jne", "cmp_done")
    a.op("84 c0", "test al, al")
    a.j("je", "cmp_done")
    a.op("46", "inc esi")
    a.op("47", "inc edi")
    a.j("jmp", "cmp_loop")
    a.label("cmp_done")
    a.op("0f b6 c0", "movzx eax, al")
    a.op("0f b6 d2", "movzx edx, dl")
    a.op("29 d0", "sub eax, edx")
    a.op("01 c1", "add ecx, eax")                           # sum of the strcmp results
    a.op("4d", "dec ebp")
    a.j("jne", "outer")
    a.label("end")
    a.op("f4", "hlt")
    code, listing = a.link()
    return Program(code, listing, a.labels["end"], regs={"ebp": reps},
                   data=[(sa, text_a + b"\0"), (sb, text_b + b"\0")],
                   expect=expect_regs(ebx=STR_LEN * reps, ecx=-reps))


FIB_N = 20


def build_calls(reps):
    """Recursive fib(FIB_N), cdecl with a frame pointer: call/ret, push/pop, `reps` times."""
    a = Asm(CODE)
    a.op("31 db", "xor ebx, ebx")
    a.label("outer")
    a.op(f"6a {FIB_N:02x}", f"push {imm(FIB_N)}")
    a.call("fib")
    a.op("83 c4 04", "add esp, 4")
    a.op("01 c3", "add ebx, eax")                           # sum of the results
    a.op("4f", "dec edi")
    a.j("jne", "outer")
    a.label("end")
    a.op("f4", "hlt")
    a.label("fib")                                          # int fib(int n)
    a.op("55", "push ebp")
    a.op("89 e5", "mov ebp, esp")
    a.op("56", "push esi")
    a.op("8b 45 08", "mov eax, dword ptr [ebp + 8]")
    a.op("83 f8 02", "cmp eax, 2")
    a.j("jb", "fib_ret")                                    # n < 2: return n
    a.op("48", "dec eax")
    a.op("50", "push eax")
    a.call("fib")                                           # fib(n-1)
    a.op("83 c4 04", "add esp, 4")
    a.op("89 c6", "mov esi, eax")
    a.op("8b 45 08", "mov eax, dword ptr [ebp + 8]")
    a.op("83 e8 02", "sub eax, 2")
    a.op("50", "push eax")
    a.call("fib")                                           # fib(n-2)
    a.op("83 c4 04", "add esp, 4")
    a.op("01 f0", "add eax, esi")
    a.label("fib_ret")
    a.op("5e", "pop esi")
    a.op("5d", "pop ebp")
    a.op("c3", "ret")
    code, listing = a.link()
    f0, f1 = 0, 1
    for _ in range(FIB_N):
        f0, f1 = f1, f0 + f1
    return Program(code, listing, a.labels["end"], regs={"edi": reps},
                   expect=expect_regs(eax=f0, ebx=f0 * reps, esp=STACK_TOP))


WORKLOADS = [
    Workload("mixed", "floor",
             "load/ALU/store loop, 12 insns/iter, data on its own page",
             lambda n: build_mixed(n, DATA), 3_500_000, 100_000, 20_000),
    Workload("mixed-smc-page", "floor",
             "the same loop, stores into the code's own 4 KiB page",
             lambda n: build_mixed(n, CODE + 0x800), 3_500_000, 100_000, 20_000),
    Workload("mixed-paging", "floor",
             "the mixed loop with paging on (identity map, 4 KiB pages)",
             lambda n: paged(build_mixed(n, DATA)), 3_500_000, 100_000, 20_000),
    Workload("sieve", "realistic",
             f"sieve of Eratosthenes, {SIEVE_N} bytes, memset by rep stosd",
             build_sieve, 450, 12, 3),
    Workload("crc32", "realistic",
             f"bitwise branch-free CRC-32 of {CRC_LEN} bytes (checked against zlib)",
             build_crc32, 550, 16, 4),
    Workload("memcpy-rep-movsd", "realistic",
             f"memcpy of {MEMCPY_BYTES // 1024} KiB with rep movsd",
             build_memcpy, 1000, 40, 15),
    Workload("strlen-strcmp", "realistic",
             f"byte-wise strlen + strcmp of {STR_LEN}-byte strings",
             build_strings, 1300, 40, 10),
    Workload("calls-fib", "realistic",
             f"recursive fib({FIB_N}): call/ret, push/pop, frame pointer",
             build_calls, 110, 3, 1),
    Workload("sieve-paging", "realistic",
             "the sieve with paging on (identity map, 4 KiB pages)",
             lambda n: paged(build_sieve(n)), 450, 12, 3),
]


# ------------------------------------------------------------------------------------------
# Engines. Each run: a fresh machine, untimed set-up, timed emu_start, untimed read-back.
# ------------------------------------------------------------------------------------------
@dataclass
class Run:
    seconds: float
    icount: Optional[int]
    regs: Dict[str, int]
    memory: Dict[str, str]                  # "addr+size" -> sha1 of the bytes
    problems: List[str]                     # from Program.expect


def _finish(prog, regs, eip, read):
    problems = []
    if eip != prog.end:
        problems.append(f"stopped at EIP={eip:#x}, not at the final HLT {prog.end:#x}")
    if prog.expect is not None:
        problems += prog.expect(regs, read)
    memory = {f"{addr:#x}+{size:#x}": hashlib.sha1(read(addr, size)).hexdigest()
              for addr, size in prog.compare}
    return memory, problems


def run_pyvmm(cpu_cls, prog):
    cpu = cpu_cls()
    for addr, size in REGIONS:
        cpu.mem_map(addr, size)
    cpu.mem_write(CODE, prog.code)
    for addr, data in prog.data:
        cpu.mem_write(addr, data)
    cpu.reg_write("esp", STACK_TOP)
    for name, value in prog.regs.items():
        cpu.reg_write(name, value)
    if prog.paging:
        cpu.mem_map(PAGE_TABLES, 0x2000)
        cpu.mem_write(PAGE_TABLES, page_table_bytes())
        cpu.reg_write("cr3", PAGE_TABLES)
        cpu.reg_write("cr0", cpu.reg_read("cr0") | CR0_PG)
    gc.collect()
    t0 = time.perf_counter()
    cpu.emu_start(CODE, prog.end)
    seconds = time.perf_counter() - t0
    regs = {r: cpu.reg_read(r) for r in GPRS}
    memory, problems = _finish(prog, regs, cpu.reg_read("eip"),
                               lambda a, n: bytes(cpu.mem_read(a, n)))
    return Run(seconds, cpu.icount, regs, memory, problems)


def run_unicorn(prog):
    import unicorn
    from unicorn import x86_const as X
    ids = {r: getattr(X, "UC_X86_REG_" + r.upper()) for r in GPRS}
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    for addr, size in REGIONS:
        uc.mem_map(addr, size)
    uc.mem_write(CODE, prog.code)
    for addr, data in prog.data:
        uc.mem_write(addr, data)
    uc.reg_write(ids["esp"], STACK_TOP)
    for name, value in prog.regs.items():
        uc.reg_write(ids[name], value & MASK32)
    if prog.paging:
        uc.mem_map(PAGE_TABLES, 0x2000)
        uc.mem_write(PAGE_TABLES, page_table_bytes())
        uc.reg_write(X.UC_X86_REG_CR3, PAGE_TABLES)
        uc.reg_write(X.UC_X86_REG_CR0, uc.reg_read(X.UC_X86_REG_CR0) | CR0_PG)
    gc.collect()
    t0 = time.perf_counter()
    uc.emu_start(CODE, prog.end)            # no count= (it makes Unicorn ~18x slower)
    seconds = time.perf_counter() - t0
    regs = {r: uc.reg_read(ids[r]) for r in GPRS}
    memory, problems = _finish(prog, regs, uc.reg_read(X.UC_X86_REG_EIP),
                               lambda a, n: bytes(uc.mem_read(a, n)))
    return Run(seconds, None, regs, memory, problems)


def best_of(runs, fn):
    """Run `fn` `runs` times; the fastest run, and every run's problems and states."""
    results = [fn() for _ in range(runs)]
    return min(results, key=lambda r: r.seconds), results


def disagreements(a: Run, b: Run, a_name, b_name):
    out = [f"{r}: {a_name} {a.regs[r]:#010x}, {b_name} {b.regs[r]:#010x}"
           for r in GPRS if a.regs[r] != b.regs[r]]
    out += [f"memory {k}: contents differ" for k in a.memory if a.memory[k] != b.memory.get(k)]
    return out


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------
def machine_info():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    try:
        import unicorn
        uc_version = unicorn.__version__
    except ImportError:
        uc_version = None
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    return {"nproc": nproc, "cpu": model, "loadavg_1min": load, "python": platform.python_version(),
            "implementation": platform.python_implementation(), "platform": platform.platform(),
            "pyvmm_compiled": bool(pyvmm.COMPILED), "unicorn": uc_version}


def stale_build_note():
    """When the compiled core is older than its source, the numbers are for old code."""
    core = os.path.dirname(pyvmm._core.cpu.__file__)
    notes = []
    for mod in ("cpu", "memory"):
        src = os.path.join(core, mod + ".py")
        built = getattr(getattr(pyvmm._core, mod), "__file__", "")
        if pyvmm.COMPILED and built.endswith((".so", ".pyd")) and os.path.exists(src) \
                and os.path.getmtime(src) > os.path.getmtime(built):
            notes.append(f"{mod}.py")
    return notes


def fmt_ms(seconds):
    ms = seconds * 1e3
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 1 else f"{ms:.3f}"


def fmt_mips(x):
    return "-" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    p.add_argument("--pure", action="store_true",
                   help="also run the uncompiled core (much smaller sizes)")
    p.add_argument("--json", action="store_true", help="print JSON results instead of a table")
    p.add_argument("--runs", type=int, default=3, help="runs per engine, best taken (3)")
    p.add_argument("-w", "--workload", action="append", metavar="NAME",
                   help="run only this workload (repeatable)")
    args = p.parse_args(argv)

    from rich.console import Console
    from rich.table import Table
    out = Console()
    if not out.is_terminal:                  # piped or redirected: don't squeeze to 80
        out = Console(width=150)
    err = Console(stderr=True)
    if not err.is_terminal:
        err = Console(stderr=True, width=150)

    try:
        import unicorn  # noqa: F401
    except ImportError:
        raise SystemExit("bench/mips.py needs unicorn (pip install unicorn)")

    workloads = WORKLOADS
    if args.workload:
        unknown = set(args.workload) - {w.name for w in WORKLOADS}
        if unknown:
            raise SystemExit(f"unknown workload(s) {sorted(unknown)}; "
                             f"choose from {[w.name for w in WORKLOADS]}")
        workloads = [w for w in WORKLOADS if w.name in args.workload]

    compiled = bool(pyvmm.COMPILED)
    pure_cls = None
    if args.pure and compiled:
        pure_cls = pyvmm.load_pure().cpu.CPU
    info = machine_info()
    stale = stale_build_note()

    def pure_size_of(w):
        return max(1, w.pure // 10) if args.quick else w.pure

    def size_of(w):
        if not compiled:                     # pyvmm.CPU is the pure core: ~100x slower
            return pure_size_of(w)
        return w.quick if args.quick else w.full

    if not args.json:
        out.print(f"[bold]pyvmm guest MIPS vs Unicorn[/bold]  (best of {args.runs}; "
                  f"{'quick sizes' if args.quick else 'full sizes'})")
        out.print(f"machine: {info['cpu']}, nproc={info['nproc']}; "
                  f"{info['implementation']} {info['python']}; unicorn {info['unicorn']}; "
                  f"pyvmm.COMPILED={compiled}"
                  + (f"; load average {info['loadavg_1min']:.2f}"
                     if info["loadavg_1min"] is not None else ""))
        if info["loadavg_1min"] is not None and info["loadavg_1min"] > 0.5 * info["nproc"]:
            out.print("[yellow]note: the machine is busy: timings will be noisy.[/yellow]")
        if not compiled:
            out.print("[bold red]WARNING: pyvmm is NOT compiled: the pyvmm column is the "
                      "uncompiled pure-Python core (~100x slower), at reduced sizes. "
                      "Build the extension (pip install -e . / python setup.py build_ext "
                      "--inplace) to measure the compiled core.[/bold red]")
        if stale:
            out.print(f"[yellow]note: {', '.join('pyvmm/_core/' + f for f in stale)} "
                      f"{'is' if len(stale) == 1 else 'are'} newer than the compiled "
                      f"module(s): these numbers are for the last build.[/yellow]")

    # Check the hand-assembled code once (at the smallest size, the code is the same).
    capstone_note = None
    for w in workloads:
        capstone_note = check_listing(w.build(1).listing) or capstone_note
    if capstone_note and not args.json:
        out.print(f"[yellow]{capstone_note}[/yellow]")

    table = Table(show_lines=False)
    table.add_column("workload")
    table.add_column("guest insns", justify="right")
    table.add_column("pyvmm ms", justify="right")
    table.add_column("pyvmm MIPS" if compiled else "pyvmm (pure!) MIPS", justify="right")
    table.add_column("Unicorn ms", justify="right")
    table.add_column("Unicorn MIPS", justify="right")
    table.add_column("pyvmm/Unicorn", justify="right")
    if pure_cls is not None:
        table.add_column("pure MIPS", justify="right")
        table.add_column("compiled/pure", justify="right")
    table.add_column("ok", justify="center")

    results = []
    failure = None              # compiled core vs Unicorn: aborts the run
    pure_failures = []          # the uncompiled core (--pure): reported, run continues
    for w in workloads:
        n = size_of(w)
        prog = w.build(n)
        row = {"name": w.name, "group": w.group, "what": w.what, "size": n}
        with err.status(f"{w.name}: pyvmm ...", spinner="dots") if not args.json else _null():
            try:
                pv, pv_all = best_of(args.runs, lambda: run_pyvmm(pyvmm.CPU, prog))
            except Exception as e:                     # noqa: BLE001 (GuestFault, ...)
                failure = (w.name, [f"pyvmm raised {type(e).__name__}: {e}"])
                pv = None
        if pv is not None:
            with err.status(f"{w.name}: Unicorn ...", spinner="dots") if not args.json \
                    else _null():
                uc, uc_all = best_of(args.runs, lambda: run_unicorn(prog))
            icounts = {r.icount for r in pv_all}
            problems = []
            if len(icounts) != 1:
                problems.append(f"pyvmm icount differs between runs: {sorted(icounts)}")
            for r in pv_all:
                problems += [f"pyvmm: {m}" for m in r.problems]
                problems += disagreements(r, uc, "pyvmm", "Unicorn")
            for r in uc_all:
                problems += [f"Unicorn: {m}" for m in r.problems]
            problems = list(dict.fromkeys(problems))
            insns = pv.icount
            row.update(instructions=insns,
                       pyvmm={"seconds": pv.seconds, "mips": insns / pv.seconds / 1e6},
                       unicorn={"seconds": uc.seconds, "mips": insns / uc.seconds / 1e6},
                       ratio=uc.seconds / pv.seconds, pure=None, ok=not problems,
                       problems=problems)
            if problems:
                failure = (w.name, problems)
            elif pure_cls is not None:
                pn = pure_size_of(w)
                pprog = w.build(pn)
                with err.status(f"{w.name}: pure core ...", spinner="dots") \
                        if not args.json else _null():
                    try:
                        pu, pu_all = best_of(args.runs, lambda: run_pyvmm(pure_cls, pprog))
                        ucp = run_unicorn(pprog)
                        pprob = []
                        for r in pu_all:
                            pprob += [f"pure: {m}" for m in r.problems]
                            pprob += disagreements(r, ucp, "pure", "Unicorn")
                    except Exception as e:             # noqa: BLE001
                        pprob = [f"pure core raised {type(e).__name__}: {e}"]
                if pprob:                        # recorded; the compiled rows go on
                    pprob = list(dict.fromkeys(pprob))
                    pure_failures.append((w.name, pprob))
                    row["pure"] = {"size": pn, "ok": False, "problems": pprob}
                else:
                    pmips = pu.icount / pu.seconds / 1e6
                    row["pure"] = {"size": pn, "ok": True, "instructions": pu.icount,
                                   "seconds": pu.seconds, "mips": pmips,
                                   "compiled_speedup": row["pyvmm"]["mips"] / pmips}
        else:
            row.update(ok=False, problems=failure[1])
        results.append(row)

        cells = [w.name]
        if "instructions" in row:
            cells += [f"{row['instructions']:,}", fmt_ms(row['pyvmm']['seconds']),
                      fmt_mips(row["pyvmm"]["mips"]), fmt_ms(row['unicorn']['seconds']),
                      fmt_mips(row["unicorn"]["mips"]), f"{row['ratio']:.3f}x"]
        else:
            cells += ["-"] * 6
        if pure_cls is not None:
            pr = row.get("pure")
            if pr is None:
                cells += ["-", "-"]
            elif not pr["ok"]:
                cells += ["[bold red]✗[/bold red]", "-"]
            else:
                cells += [fmt_mips(pr["mips"]), f"{pr['compiled_speedup']:.0f}x"]
        cells.append("[green]✓[/green]" if row["ok"] else "[bold red]✗[/bold red]")
        table.add_row(*cells)
        if failure:
            break

    ok_rows = [r for r in results if r["ok"]]
    summary = {}
    if ok_rows:
        geo = math.exp(sum(math.log(r["ratio"]) for r in ok_rows) / len(ok_rows))
        slowest = min(ok_rows, key=lambda r: r["pyvmm"]["mips"])
        summary = {"geomean_ratio": geo, "workloads": len(ok_rows),
                   "pyvmm_mips_min": slowest["pyvmm"]["mips"], "pyvmm_mips_min_workload":
                   slowest["name"], "pyvmm_mips_max": max(r["pyvmm"]["mips"] for r in ok_rows)}
        pure_rows = [r for r in ok_rows if r.get("pure") and r["pure"]["ok"]]
        if pure_rows:
            summary["geomean_compiled_over_pure"] = math.exp(
                sum(math.log(r["pure"]["compiled_speedup"]) for r in pure_rows) / len(pure_rows))

    if args.json:
        print(json.dumps({"machine": info, "quick": args.quick, "runs": args.runs,
                          "stale_build": stale, "workloads": results, "summary": summary,
                          "ok": failure is None and not pure_failures}, indent=2))
    else:
        out.print(table)
        if summary:
            line = (f"pyvmm{'' if compiled else ' (PURE, uncompiled)'} runs at "
                    f"{summary['geomean_ratio']:.3f}x Unicorn's speed (geometric mean of "
                    f"{summary['workloads']} workloads), "
                    f"{fmt_mips(summary['pyvmm_mips_min'])}-"
                    f"{fmt_mips(summary['pyvmm_mips_max'])} guest MIPS")
            if "geomean_compiled_over_pure" in summary:
                line += (f"; compiled is {summary['geomean_compiled_over_pure']:.0f}x "
                         f"the pure core")
            out.print(line)
    for name, problems in pure_failures:
        err.print(f"[bold red]✗ {name}: the uncompiled core fails (its "
                  f"column shows ✗)[/bold red]")
        for m in problems[:20]:
            err.print(f"    {m}", highlight=False)
    if failure:
        name, problems = failure
        err.print(f"[bold red]✗ {name}: pyvmm and Unicorn (or the expected result) "
                  f"disagree — aborting[/bold red]")
        for m in problems[:20]:
            err.print(f"    {m}", highlight=False)
    return 1 if failure or pure_failures else 0


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    sys.exit(main())
