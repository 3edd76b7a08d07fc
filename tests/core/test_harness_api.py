"""The harness API (pyvmm.CPU, Unicorn's names) and the instructions the differential suite
cannot compare with Unicorn, checked against their expected (SDM) behaviour.

Covered here rather than in test_differential.py:
  * the API: reset state, mem_map/mem_write/mem_read, reg_read/reg_write, emu_start with
    `until` and `count`, step, icount, GuestFault / UnmappedMemory and their attributes;
  * exceptions without an IDT (int3, int n, into, ud2, #DE), HLT, CPUID, RDTSC,
    LGDT/SGDT/LIDT/SIDT, SMSW, far JMP/CALL/RETF, INT through an IDT gate and IRETD, IN/OUT;
  * every input the differential templates avoid because Unicorn gets it wrong
    (pyvmm.oracle.unicorn_runner.UNICORN_LIMITS): RET/ENTER imm16 >= 0x8000, invalid LOCK,
    writes through CS, null data segments, accesses past the 4 GiB limit.
"""
import struct

import pytest

import pyvmm
from pyvmm import GuestFault, UnmappedMemory
from pyvmm.oracle import disassemble

CODE = 0x1000
STACK = 0x8000
GDT, GDTR = 0x500, 0x900
IDT, IDTR = 0x600, 0x910

# flat descriptors: 0x08 code (execute/read), 0x10 data (read/write), 4 GiB, 32-bit
FLAT_CODE = struct.pack("<II", 0x0000FFFF, 0x00CF9A00)
FLAT_DATA = struct.pack("<II", 0x0000FFFF, 0x00CF9200)


def machine(cpu_class, code, regs=None, mem=None):
    cpu = cpu_class()
    cpu.mem_map(0, 0x20000)
    cpu.mem_write(CODE, code)
    cpu.reg_write("esp", STACK)
    for name, value in (regs or {}).items():
        cpu.reg_write(name, value)
    for addr, data in (mem or {}).items():
        cpu.mem_write(addr, data)
    return cpu


def run(cpu_class, code, regs=None, mem=None, until=None, count=0):
    cpu = machine(cpu_class, code, regs, mem)
    cpu.emu_start(CODE, CODE + len(code) if until is None else until, count=count)
    return cpu


def fault(cpu_class, code, regs=None, mem=None, until=None):
    cpu = machine(cpu_class, code, regs, mem)
    with pytest.raises(GuestFault) as info:
        cpu.emu_start(CODE, CODE + len(code) if until is None else until)
    return cpu, info.value


def with_gdt(code):
    """lgdt [GDTR]; jmp far 0x08:next; then `code` (CS = 0x08 from here on)."""
    head = bytes.fromhex("0f0115") + struct.pack("<I", GDTR)
    nxt = CODE + len(head) + 7
    return head + b"\xea" + struct.pack("<IH", nxt, 0x08) + code


GDT_MEM = {GDT: bytes(8) + FLAT_CODE + FLAT_DATA, GDTR: struct.pack("<HI", 0x17, GDT)}


# ------------------------------------------------------------------------------------------
# API
# ------------------------------------------------------------------------------------------
def test_reset_state(cpu_class):
    cpu = cpu_class()
    for name in ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip"):
        assert cpu.reg_read(name) == 0, name
    assert cpu.reg_read("eflags") == 0x2
    for name in ("cs", "ss", "ds", "es", "fs", "gs"):
        assert cpu.reg_read(name) == 0, name
    assert cpu.icount == 0


def test_memory_map_read_write(cpu_class):
    cpu = cpu_class()
    cpu.mem_map(0x1000, 0x1000)
    cpu.mem_map(0xC0000000, 0x100000)            # sparse: nothing allocated in between
    cpu.mem_write(0x1FFE, b"\x01\x02")
    cpu.mem_write(0xC00FFFFC, b"abcd")
    assert cpu.mem_read(0x1FFE, 2) == b"\x01\x02"
    assert cpu.mem_read(0xC00FFFFC, 4) == b"abcd"
    assert cpu.mem_read(0x1000, 4) == bytes(4)   # zero-filled
    with pytest.raises(UnmappedMemory) as info:
        cpu.mem_read(0x2000, 1)
    assert info.value.address == 0x2000
    with pytest.raises(UnmappedMemory):
        cpu.mem_write(0x1FFF, b"xy")              # crosses into unmapped memory
    with pytest.raises(ValueError):
        cpu.mem_map(0x3001, 0x1000)


def test_reg_write_read_roundtrip(cpu_class):
    cpu = cpu_class()
    for i, name in enumerate(("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip")):
        cpu.reg_write(name, 0x11111111 * (i + 1) & 0xFFFFFFFF)
        assert cpu.reg_read(name) == 0x11111111 * (i + 1) & 0xFFFFFFFF
    cpu.reg_write("eflags", 0x8D5 | 0x400 | 0x2)
    assert cpu.reg_read("eflags") == 0x8D5 | 0x400 | 0x2


def test_emu_start_until_and_icount(cpu_class):
    cpu = run(cpu_class, b"\x40\x40\x40")         # inc eax x3
    assert cpu.reg_read("eax") == 3
    assert cpu.reg_read("eip") == CODE + 3
    assert cpu.icount == 3


def test_emu_start_count(cpu_class):
    cpu = run(cpu_class, b"\x40\x40\x40\x40", count=2, until=0xFFFF0)
    assert cpu.reg_read("eax") == 2
    assert cpu.reg_read("eip") == CODE + 2
    assert cpu.icount == 2


def test_step(cpu_class):
    cpu = machine(cpu_class, b"\x40\x41")
    cpu.reg_write("eip", CODE)
    cpu.step()
    assert (cpu.reg_read("eax"), cpu.reg_read("ecx"), cpu.reg_read("eip")) == (1, 0, CODE + 1)
    cpu.step()
    assert (cpu.reg_read("ecx"), cpu.reg_read("eip"), cpu.icount) == (1, CODE + 2, 2)


def test_hlt_stops_the_run(cpu_class):
    cpu = run(cpu_class, b"\x40\xf4\x40", until=0xFFF0)   # inc eax; hlt; inc eax
    assert cpu.reg_read("eax") == 1
    assert cpu.reg_read("eip") == CODE + 2                # after the HLT


def test_load_pure_agrees(cpu_class):
    # sum 1..100 in a loop: mov ecx, 100; xor eax, eax; l: add eax, ecx; loop l
    code = bytes.fromhex("b964000000" "31c0" "01c8" "e2fc")
    pure = pyvmm.load_pure().cpu.CPU
    results = []
    for cls in (cpu_class, pure):
        cpu = run(cls, code)
        results.append([cpu.reg_read(r) for r in ("eax", "ecx", "eip", "eflags")] + [cpu.icount])
    assert results[0] == results[1]
    assert results[0][0] == 5050


def test_decode_length_matches_capstone(cpu_class):
    cpu = cpu_class()
    if not hasattr(cpu, "decode_length"):
        pytest.skip("no decode_length")
    cpu.mem_map(0, 0x20000)
    for hexcode in ("90", "6690", "0f1f00", "660f1f440000", "8b0424", "8b842400010000",
                    "678b00", "67668b4700", "f3a5", "c7050000000001000000", "66c7000100",
                    "69c001000000", "6bc001", "c8100001", "ea000000000800", "9a000010000800",
                    "a100100000", "67a10010", "0fbae005", "f00fc10e", "2e3e8b00"):
        code = bytes.fromhex(hexcode)
        cpu.mem_write(CODE, code + b"\xf4" * 15)
        _text, n = disassemble(code, CODE)
        assert cpu.decode_length(CODE) == n == len(code), hexcode


# ------------------------------------------------------------------------------------------
# Exceptions without an IDT
# ------------------------------------------------------------------------------------------
def test_int3_without_idt(cpu_class):
    cpu, e = fault(cpu_class, b"\x90\xcc\x90")
    assert e.vector == 3 and e.error_code is None
    assert e.eip == CODE + 2                      # a trap: the next instruction
    assert cpu.reg_read("eip") == e.eip


def test_int_n_without_idt(cpu_class):
    cpu, e = fault(cpu_class, b"\xcd\x80")
    assert e.vector == 0x80 and e.error_code is None
    assert e.eip == CODE + 2 == cpu.reg_read("eip")


def test_into(cpu_class):
    cpu = run(cpu_class, b"\xce", regs={"eflags": 0x2})          # OF=0: nothing happens
    assert cpu.reg_read("eip") == CODE + 1
    cpu, e = fault(cpu_class, b"\xce", regs={"eflags": 0x802})
    assert e.vector == 4 and e.eip == CODE + 1 == cpu.reg_read("eip")


def test_ud2(cpu_class):
    cpu, e = fault(cpu_class, b"\x90\x0f\x0b")
    assert e.vector == 6 and e.error_code is None
    assert e.eip == CODE + 1 == cpu.reg_read("eip")               # a fault: at the ud2


@pytest.mark.parametrize("code,regs", [
    ("f7f1", {"eax": 5, "edx": 0, "ecx": 0}),                      # div ecx, ecx = 0
    ("f7f9", {"eax": 0, "edx": 0x80000000, "ecx": 0xFFFFFFFF}),    # idiv: quotient overflow
    ("f6f1", {"eax": 0x1000, "ecx": 0x10}),                        # div cl: 0x1000/0x10 > 0xFF
    ("d400", {"eax": 0x1234}),                                     # aam 0
])
def test_divide_error(cpu_class, code, regs):
    cpu, e = fault(cpu_class, b"\x90" + bytes.fromhex(code), regs=regs)
    assert e.vector == 0 and e.error_code is None
    assert e.eip == CODE + 1 == cpu.reg_read("eip")
    for name, value in regs.items():
        assert cpu.reg_read(name) == value, name                   # nothing written


def test_fault_restores_esp(cpu_class):
    # push eax; div ecx (faults): ESP keeps the push, not anything of the div
    cpu, e = fault(cpu_class, b"\x50\xf7\xf1", regs={"ecx": 0})
    assert e.vector == 0 and cpu.reg_read("esp") == STACK - 4


# ------------------------------------------------------------------------------------------
# System instructions
# ------------------------------------------------------------------------------------------
def test_cpuid_vendor(cpu_class):
    cpu = run(cpu_class, b"\x0f\xa2", regs={"eax": 0})
    vendor = b"".join(struct.pack("<I", cpu.reg_read(r)) for r in ("ebx", "edx", "ecx"))
    assert len(vendor) == 12 and all(0x20 <= c < 0x7F for c in vendor), vendor
    assert cpu.reg_read("eax") >= 1                                # leaf 1 exists


def test_cpuid_leaf1_features(cpu_class):
    cpu = run(cpu_class, b"\x0f\xa2", regs={"eax": 1})
    edx = cpu.reg_read("edx")
    assert edx & (1 << 4)              # TSC: RDTSC is implemented
    assert edx & (1 << 8)              # CX8: CMPXCHG8B is implemented
    assert edx & (1 << 15)             # CMOV


def test_rdtsc_increases_with_icount(cpu_class):
    # rdtsc; mov ebx, eax; nop x10; rdtsc
    cpu = run(cpu_class, b"\x0f\x31\x89\xc3" + b"\x90" * 10 + b"\x0f\x31")
    first, second = cpu.reg_read("ebx"), cpu.reg_read("eax")
    assert second > first
    cpu2 = run(cpu_class, b"\x0f\x31\x89\xc3" + b"\x90" * 50 + b"\x0f\x31")
    assert cpu2.reg_read("eax") - cpu2.reg_read("ebx") > second - first


def test_lgdt_sgdt_lidt_sidt_roundtrip(cpu_class):
    code = (bytes.fromhex("0f0115") + struct.pack("<I", 0x900)      # lgdt [0x900]
            + bytes.fromhex("0f011d") + struct.pack("<I", 0x910)    # lidt [0x910]
            + bytes.fromhex("0f0105") + struct.pack("<I", 0x920)    # sgdt [0x920]
            + bytes.fromhex("0f010d") + struct.pack("<I", 0x930))   # sidt [0x930]
    mem = {0x900: struct.pack("<HI", 0x1234, 0x00ABCDEF), 0x910: struct.pack("<HI", 0x7FF, 0x3000)}
    cpu = run(cpu_class, code, mem=mem)
    assert cpu.mem_read(0x920, 6) == mem[0x900]
    assert cpu.mem_read(0x930, 6) == mem[0x910]


def test_smsw(cpu_class):
    cpu = run(cpu_class, b"\x66\x0f\x01\xe0", regs={"eax": 0xABCD0000})   # smsw ax
    assert cpu.reg_read("eax") & 1                       # PE: protected mode
    assert cpu.reg_read("eax") >> 16 == 0xABCD           # a 16-bit destination
    cpu = run(cpu_class, b"\x0f\x01\x20", regs={"eax": 0x100})            # smsw [eax]
    assert cpu.mem_read(0x100, 2)[0] & 1


def test_far_jmp_without_gdt_faults(cpu_class):
    cpu, e = fault(cpu_class, b"\xea" + struct.pack("<IH", 0x2000, 0x08))
    assert e.vector == 13 and e.error_code == 0x08       # selector beyond the GDT limit
    assert e.eip == CODE == cpu.reg_read("eip")


def test_far_jmp_call_retf(cpu_class):
    # after the far jmp: call far 0x08:0x3000; hlt   /  0x3000: inc eax; retf
    code = with_gdt(b"\x9a" + struct.pack("<IH", 0x3000, 0x08) + b"\xf4")
    mem = dict(GDT_MEM)
    mem[0x3000] = b"\x40\xcb"
    cpu = run(cpu_class, code, mem=mem, until=0xFFF0)
    assert cpu.reg_read("cs") == 0x08
    assert cpu.reg_read("eax") == 1
    assert cpu.reg_read("eip") == CODE + len(code)       # after the hlt
    assert cpu.reg_read("esp") == STACK
    ret_eip, ret_cs = struct.unpack("<II", cpu.mem_read(STACK - 8, 8))
    assert (ret_eip, ret_cs & 0xFFFF) == (CODE + len(code) - 1, 0x08)


def test_int_through_idt_and_iretd(cpu_class):
    # lidt [IDTR]; int 0x30; hlt   /   handler at 0x3000: inc eax; iretd
    code = with_gdt(bytes.fromhex("0f011d") + struct.pack("<I", IDTR) + b"\xcd\x30\xf4")
    mem = dict(GDT_MEM)
    handler = 0x3000
    gate = struct.pack("<II", (0x08 << 16) | (handler & 0xFFFF), (handler & 0xFFFF0000) | 0x8E00)
    mem[IDT] = bytes(0x30 * 8) + gate
    mem[IDTR] = struct.pack("<HI", 0x31 * 8 - 1, IDT)
    mem[handler] = b"\x40\xcf"
    cpu = run(cpu_class, code, mem=mem, until=0xFFF0, regs={"eflags": 0x202})
    assert cpu.reg_read("eax") == 1
    assert cpu.reg_read("eip") == CODE + len(code)
    assert cpu.reg_read("esp") == STACK
    assert cpu.reg_read("eflags") & 0x200                # IF restored by iretd
    eip, cs, eflags = struct.unpack("<III", cpu.mem_read(STACK - 12, 12))
    assert (eip, cs & 0xFFFF) == (CODE + len(code) - 1, 0x08) and eflags & 0x200


def test_in_out(cpu_class):
    class Bus:
        def __init__(self):
            self.writes = []

        def read(self, port, size):
            return 0x11223344 if port == 0x60 else 0xAB

        def write(self, port, size, value):
            self.writes.append((port, size, value))

    # in al, 0x60; mov ebx, eax; in eax, dx; out dx, al; out 0x80, eax
    code = bytes.fromhex("e460" "89c3" "ed" "ee" "e780")
    cpu = machine(cpu_class, code, regs={"eax": 0xFFFFFF00, "edx": 0x3F8})
    cpu.io = Bus()
    cpu.emu_start(CODE, CODE + len(code))
    assert cpu.reg_read("ebx") == 0xFFFFFF44               # 8-bit IN: AL only
    assert cpu.reg_read("eax") == 0xAB
    assert cpu.io.writes == [(0x3F8, 1, 0xAB), (0x80, 4, 0xAB)]


def test_in_without_device_reads_all_ones(cpu_class):
    cpu = run(cpu_class, b"\xec", regs={"eax": 0, "edx": 0x1234})     # in al, dx
    assert cpu.reg_read("eax") == 0xFF                      # a floating bus reads high


# ------------------------------------------------------------------------------------------
# Unmapped memory
# ------------------------------------------------------------------------------------------
def test_unmapped_data_access(cpu_class):
    cpu = machine(cpu_class, b"\x8b\x00", regs={"eax": 0x500000})     # mov eax, [eax]
    with pytest.raises(UnmappedMemory) as info:
        cpu.emu_start(CODE, CODE + 2)
    assert 0x500000 <= info.value.address < 0x500004


def test_unmapped_fetch(cpu_class):
    cpu = machine(cpu_class, b"\xe9" + struct.pack("<i", 0x400000 - (CODE + 5)))
    with pytest.raises(UnmappedMemory) as info:
        cpu.emu_start(CODE, 0xFFF0)
    assert 0x400000 <= info.value.address < 0x400010


# ------------------------------------------------------------------------------------------
# Inputs the differential suite avoids because Unicorn is wrong there (UNICORN_LIMITS)
# ------------------------------------------------------------------------------------------
def test_ret_imm16_is_unsigned(cpu_class):
    cpu = run(cpu_class, b"\xc2\x00\x80", count=1, until=0xFFF0,
              mem={STACK: struct.pack("<I", 0x3000)})
    assert cpu.reg_read("eip") == 0x3000
    assert cpu.reg_read("esp") == STACK + 4 + 0x8000


def test_enter_imm16_is_unsigned(cpu_class):
    cpu = run(cpu_class, b"\xc8\x00\x80\x00", regs={"ebp": 0x1234})
    assert cpu.reg_read("ebp") == STACK - 4
    assert cpu.reg_read("esp") == (STACK - 4 - 0x8000) & 0xFFFFFFFF


def test_enter_nesting_levels(cpu_class):
    # enter 0x20, 2 (SDM ENTER pseudo-code): push ebp; push [ebp-4]; push frame; esp -= 0x20
    cpu = run(cpu_class, b"\xc8\x20\x00\x02", regs={"ebp": 0x5000},
              mem={0x4FFC: struct.pack("<I", 0xCAFEBABE)})
    frame = STACK - 4
    assert cpu.reg_read("ebp") == frame
    assert cpu.reg_read("esp") == STACK - 12 - 0x20
    assert struct.unpack("<III", cpu.mem_read(STACK - 12, 12)) == (frame, 0xCAFEBABE, 0x5000)


@pytest.mark.parametrize("hexcode", [
    "f08900",        # lock mov [eax], eax: MOV is not lockable
    "f00fbae801",    # lock bts eax, 1: register destination
    "f00fabc8",      # lock bts eax, ecx
    "f087d8",        # lock xchg eax, ebx
    "f00fc1d8",      # lock xadd eax, ebx
    "f001d8",        # lock add eax, ebx
    "f090",          # lock nop
    "f08b00",        # lock mov eax, [eax]
])
def test_invalid_lock_is_ud(cpu_class, hexcode):
    cpu, e = fault(cpu_class, bytes.fromhex(hexcode), regs={"eax": 0x100})
    assert e.vector == 6 and e.eip == CODE
    assert cpu.mem_read(0x100, 4) == bytes(4)


def test_write_through_cs_faults(cpu_class):
    cpu, e = fault(cpu_class, b"\x2e\x89\x00", regs={"eax": 0x100})   # mov cs:[eax], eax
    assert e.vector == 13 and e.error_code == 0
    assert cpu.mem_read(0x100, 4) == bytes(4)
    cpu = run(cpu_class, b"\x2e\x8b\x00", regs={"eax": 0x100},        # reading is fine
              mem={0x100: b"\x78\x56\x34\x12"})
    assert cpu.reg_read("eax") == 0x12345678


def test_null_data_segment_faults_on_use(cpu_class):
    # mov ds, ax (ax = 0: a null selector is loadable); mov eax, [0]
    cpu, e = fault(cpu_class, b"\x8e\xd8\xa1\x00\x00\x00\x00", regs={"eax": 0})
    assert e.vector == 13 and e.error_code == 0
    assert e.eip == CODE + 2


def test_access_past_4gib_limit_faults(cpu_class):
    _cpu, e = fault(cpu_class, b"\x8b\x00", regs={"eax": 0xFFFFFFFE})  # 4 bytes from -2
    assert e.vector == 13 and e.error_code == 0
    _cpu, e = fault(cpu_class, b"\x8b\x04\x24", regs={"esp": 0xFFFFFFFD})   # via SS: #SS
    assert e.vector == 12 and e.error_code == 0


def test_test_alias_f6_reg1(cpu_class):
    cpu = run(cpu_class, b"\xf6\xc8\x0f", regs={"eax": 0xF0, "eflags": 0x8D7})  # test al, 0xf
    fl = cpu.reg_read("eflags")
    assert fl & 0x40 and not fl & (0x1 | 0x800 | 0x80)   # ZF=1, CF=OF=SF=0
    assert cpu.reg_read("eax") == 0xF0


def test_mov_ss_null_faults(cpu_class):
    _cpu, e = fault(cpu_class, b"\x8e\xd0", regs={"eax": 0})           # mov ss, ax (0)
    assert e.vector == 13 and e.error_code == 0


# ------------------------------------------------------------------------------------------
# What the KNOWN_DEVIATIONS masks hide from the Unicorn comparison, checked by the SDM
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hexcode,size", [("f0f718", 4), ("f066f718", 2), ("f0f618", 1)])
def test_lock_neg_flags_follow_the_result(cpu_class, hexcode, size):
    value = 0x42AF9FC3 & ((1 << (8 * size)) - 1)
    cpu = run(cpu_class, bytes.fromhex(hexcode), regs={"eax": 0x100, "eflags": 0x2},
              mem={0x100: value.to_bytes(size, "little")})
    result = (-value) & ((1 << (8 * size)) - 1)
    assert int.from_bytes(cpu.mem_read(0x100, size), "little") == result
    fl = cpu.reg_read("eflags")
    assert bool(fl & 0x80) == bool(result >> (8 * size - 1))          # SF from the result
    assert bool(fl & 0x4) == (bin(result & 0xFF).count("1") % 2 == 0)  # PF from the result
    assert fl & 0x1                                                    # CF: source != 0


def test_control_registers_and_clts(cpu_class):
    # mov eax, 0x19 (PE|TS|ET); mov cr0, eax; clts; mov ebx, cr0;
    # mov ecx, 0x12345678; mov cr2, ecx; mov edx, cr2
    code = bytes.fromhex("b819000000" "0f22c0" "0f06" "0f20c3"
                         "b978563412" "0f22d1" "0f20d2")
    cpu = run(cpu_class, code)
    assert cpu.reg_read("ebx") & 0x8 == 0            # CLTS clears CR0.TS
    assert cpu.reg_read("ebx") & 0x1                  # still protected mode
    assert cpu.reg_read("edx") == 0x12345678          # CR2 holds what was written


def test_mov_cr1_is_ud(cpu_class):
    _cpu, e = fault(cpu_class, b"\x0f\x20\xc8")         # mov eax, cr1
    assert e.vector == 6 and e.eip == CODE
