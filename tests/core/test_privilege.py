"""Rings: IRET to ring 3, INT back to ring 0 through the TSS's SS0:ESP0, privileged
instructions at CPL 3, POPF's quiet rules, data segments nulled on the way out, and the
descriptor-probing instructions (LAR, LSL, VERR, VERW, STR, SLDT) that work at any CPL."""
import struct

import pytest

import pyvmm
from tests.core import test_system
from tests.core.test_system import CODE, descriptor, gate, machine

TSS = 0x6000
KSTACK = 0x7000         # SS0:ESP0
USTACK = 0x9000
HANDLER = 0x3000        # int 0x80 (DPL 3 gate)
GP_HANDLER = 0x3400     # #GP


@pytest.fixture(autouse=True, params=["compiled", "uncompiled"])
def core(request, monkeypatch):
    cls = pyvmm.CPU if request.param == "compiled" else pyvmm.load_pure().cpu.CPU
    monkeypatch.setattr(test_system, "CPU", cls)


GDT = [
    bytes(8),
    descriptor(0, 0xFFFFF, 0x9A),           # 0x08 ring-0 code
    descriptor(0, 0xFFFFF, 0x92),           # 0x10 ring-0 data
    descriptor(0, 0xFFFFF, 0xFA),           # 0x18 ring-3 code  (selector 0x1B)
    descriptor(0, 0xFFFFF, 0xF2),           # 0x20 ring-3 data  (selector 0x23)
    descriptor(TSS, 0x67, 0x89, 0x0),       # 0x28 32-bit TSS, available
]

TO_RING3 = f"""
    mov ax, 0x28
    ltr ax
    push 0x23
    push {USTACK}
    pushfd
    push 0x1B
    push offset user
    iretd
user:
"""


def ring3_machine(user_code, idt_extra=()):
    idt = [gate(0x08, GP_HANDLER)] * 32 + [gate(0x08, 0, present=False)] * (0x80 - 32) + \
        [gate(0x08, HANDLER, dpl=3)]
    cpu = machine(TO_RING3 + user_code, gdt=GDT, idt=idt)
    cpu.mem_write(TSS, struct.pack("<III", 0, KSTACK, 0x10))      # link, ESP0, SS0
    cpu.mem_write(TSS + 0x66, struct.pack("<H", 0x68))            # I/O map base: no map
    # int 0x80: record the frame the CPU pushed, then return to ring 3
    cpu.mem_write(HANDLER, test_system.assemble(
        "mov eax, [esp]\n mov ebx, [esp+4]\n mov ecx, [esp+12]\n mov edx, [esp+16]\n"
        "mov ebp, esp\n iretd", HANDLER))
    # #GP: record the error code and the saved CS, then stop
    cpu.mem_write(GP_HANDLER, test_system.assemble("mov esi, [esp]\n mov edi, [esp+8]\n hlt", GP_HANDLER))
    return cpu


def test_iret_to_ring3_then_int_enters_ring0_on_the_tss_stack():
    cpu = ring3_machine("mov esi, cs\n int 0x80\n mov edi, ss\n jmp .")
    cpu.emu_start(CODE, 0, count=200)
    assert cpu.reg_read("esi") == 0x1B                          # CPL 3 visible in CS
    # The handler saw: EIP after the INT, CS 0x1B, old ESP and SS, on the ring-0 stack
    assert cpu.reg_read("ebx") == 0x1B
    assert cpu.reg_read("ecx") == USTACK and cpu.reg_read("edx") == 0x23
    assert cpu.reg_read("ebp") == KSTACK - 20
    # ... and IRET took it back to ring 3, on the user stack
    assert cpu.reg_read("edi") == 0x23 and cpu.reg_read("cs") == 0x1B
    assert cpu.reg_read("esp") == USTACK and cpu.cpl == 3
    # the TSS descriptor is busy now
    assert (struct.unpack("<I", cpu.mem_read(test_system.GDT + 0x28 + 4, 4))[0] >> 8) & 0xF == 0xB


def test_data_segments_the_outer_ring_may_not_use_are_nulled():
    cpu = ring3_machine("mov esi, ds\n mov edi, es\n jmp .")
    cpu.reg_write("ds", 0x10)
    cpu.reg_write("es", 0x10)
    cpu.emu_start(CODE, 0, count=100)
    assert cpu.reg_read("esi") == 0 and cpu.reg_read("edi") == 0


@pytest.mark.parametrize("instruction", ["hlt", "cli", "mov eax, cr0", "lgdt [0]", "invlpg [0]",
                                         "mov cr3, eax", "clts", "wbinvd", "in al, 0x60"])
def test_privileged_instructions_fault_at_cpl3(instruction):
    cpu = ring3_machine(instruction + "\n jmp .")
    cpu.emu_start(CODE, 0, count=100)
    assert cpu.cpl == 0 and cpu.eip == GP_HANDLER + 8            # halted in the #GP handler
    assert cpu.reg_read("esi") == 0 and cpu.reg_read("edi") == 0x1B    # #GP(0) from CPL 3


def test_popf_at_cpl3_leaves_if_and_iopl_alone():
    cpu = ring3_machine("pushfd\n pop eax\n xor eax, 0x3200\n push eax\n popfd\n pushfd\n pop ebx\n jmp .")
    cpu.reg_write("eflags", 0x202)          # IF=1, IOPL=0 in ring 0, carried into ring 3
    cpu.emu_start(CODE, 0, count=100)
    assert cpu.reg_read("ebx") & 0x3200 == 0x200                 # unchanged, and no fault


def test_sensitive_but_unprivileged_instructions_work_at_cpl3():
    cpu = ring3_machine("sgdt [esp-8]\n smsw eax\n str ebx\n sldt ecx\n jmp .")
    cpu.emu_start(CODE, 0, count=100)
    assert cpu.reg_read("ebx") == 0x28 and cpu.reg_read("ecx") == 0
    assert cpu.reg_read("eax") & 1                               # PE: the guest sees ring 0's CR0
    limit, base = struct.unpack("<HI", cpu.mem_read(USTACK - 8, 6))
    assert base == test_system.GDT and limit == len(GDT) * 8 - 1


def test_lar_lsl_verr_verw():
    cpu = machine("""
        mov ax, 0x10
        lar ebx, ax
        lsl ecx, ax
        verr ax
        setz dl
        verw ax
        setz dh
        mov ax, 0x08
        verw ax
        setnz al
        mov si, 0x38
        lar edi, si
        setnz ah
        hlt
    """, gdt=GDT)
    cpu.emu_start(CODE, 0)
    # data (never loaded, so not accessed), G, D/B; bits 19:16 (the limit's) are undefined by
    # the SDM ("00FxFF00H"): pyvmm clears them, as QEMU does
    assert cpu.reg_read("ebx") == 0x00C09200
    assert cpu.reg_read("ecx") == 0xFFFFFFFF
    assert cpu.reg_read("dl") == 1 and cpu.reg_read("dh") == 1   # ring-0 data: readable, writable
    assert cpu.reg_read("al") == 1                               # code is not writable
    assert cpu.reg_read("ah") == 1                               # 0x38 is past the GDT: ZF=0


def test_lar_from_ring3_does_not_see_ring0_descriptors():
    cpu = ring3_machine("mov ax, 0x10\n lar ebx, ax\n setnz cl\n mov ax, 0x23\n lar edx, ax\n setz ch\n jmp .")
    cpu.emu_start(CODE, 0, count=100)
    assert cpu.reg_read("cl") == 1 and cpu.reg_read("ch") == 1


def test_ltr_checks_its_selector():
    # null -> #GP(0); a data segment -> #GP(selector); the TSS -> loaded and busy
    for source, error in (("xor eax, eax\n ltr ax", 0), ("mov ax, 0x10\n ltr ax", 0x10)):
        cpu = machine(source + "\n hlt", gdt=GDT, idt=[gate(0x08, GP_HANDLER)] * 32)
        cpu.mem_write(GP_HANDLER, test_system.assemble("mov esi, [esp]\n hlt", GP_HANDLER))
        cpu.emu_start(CODE, 0)
        assert cpu.eip == GP_HANDLER + 4 and cpu.reg_read("esi") == error


def test_io_permission_bitmap_at_cpl3():
    # TSS with an I/O map at 0x68: port 0x60 allowed (bit clear), 0x64 denied (bit set)
    gdt = GDT[:5] + [descriptor(TSS, 0x68 + 0x2000 // 8 + 1, 0x89, 0x0)]
    idt = [gate(0x08, GP_HANDLER)] * 32
    cpu = machine(TO_RING3 + "in al, 0x60\n mov ebx, 1\n in al, 0x64\n mov ecx, 1\n jmp .",
                  gdt=gdt, idt=idt)
    bitmap = bytearray(b"\xff" * (0x2000 // 8 + 1))
    bitmap[0x60 // 8] &= ~(1 << (0x60 % 8))
    cpu.mem_write(TSS, struct.pack("<III", 0, KSTACK, 0x10))
    cpu.mem_write(TSS + 0x66, struct.pack("<H", 0x68))
    cpu.mem_write(TSS + 0x68, bytes(bitmap))
    cpu.mem_write(GP_HANDLER, test_system.assemble("mov esi, [esp]\n hlt", GP_HANDLER))
    cpu.emu_start(CODE, 0, count=100)
    assert cpu.reg_read("ebx") == 1 and cpu.reg_read("ecx") == 0      # 0x60 ok, 0x64 #GP
    assert cpu.eip == GP_HANDLER + 4 and cpu.reg_read("esi") == 0


def call_gate(selector, offset, params=0, dpl=3, size32=True):
    lo = (offset & 0xFFFF) | (selector << 16)
    hi = (offset & 0xFFFF0000) | ((0x80 | (dpl << 5) | (0xC if size32 else 0x4)) << 8) | params
    return struct.pack("<II", lo, hi)


def test_call_gate_from_ring3_copies_parameters_and_retf_returns():
    # GDT entry 6 (0x30): a call gate to ring-0 code at GATE_TARGET with 2 dword parameters
    target = 0x3800
    gdt = GDT + [call_gate(0x08, target, params=2)]
    cpu = machine(TO_RING3 + "push 0x1111\n push 0x2222\n call 0x33:0\n mov edi, esp\n jmp .",
                  gdt=gdt, idt=[gate(0x08, GP_HANDLER)] * 32)
    cpu.mem_write(TSS, struct.pack("<III", 0, KSTACK, 0x10))
    cpu.mem_write(TSS + 0x66, struct.pack("<H", 0x68))
    # ring 0: record CPL (CS), the copied parameters and the saved SS:ESP, then RETF 8
    cpu.mem_write(target, test_system.assemble(
        "mov eax, cs\n mov ebx, [esp+8]\n mov ecx, [esp+12]\n mov edx, [esp+16]\n"
        "mov esi, [esp+20]\n retf 8", target))
    cpu.emu_start(CODE, 0, count=200)
    assert cpu.reg_read("eax") == 0x08                           # ran at ring 0
    assert cpu.reg_read("ebx") == 0x2222 and cpu.reg_read("ecx") == 0x1111   # parameters, in order
    assert cpu.reg_read("edx") == USTACK - 8 and cpu.reg_read("esi") == 0x23  # caller's ESP, SS
    assert cpu.cpl == 3 and cpu.reg_read("edi") == USTACK        # RETF 8 released them
