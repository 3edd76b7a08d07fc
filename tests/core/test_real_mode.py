"""Real mode (SDM Vol. 3 ch. 20): 16-bit defaults, segment base = selector * 16, the
interrupt vector table, and the switch into protected mode as a boot sector makes it."""
import struct

import pytest

import pyvmm
from tests.asm import assemble

BOOT = 0x7C00


@pytest.fixture(params=["compiled", "uncompiled"])
def cpu(request):
    cls = pyvmm.CPU if request.param == "compiled" else pyvmm.load_pure().cpu.CPU
    cpu = cls()
    cpu.mem_map(0, 0x100000)
    return cpu


def boot(cpu, source):
    cpu.mem_write(BOOT, assemble(source, BOOT, bits=16))
    cpu.reset_real_mode(0, BOOT)
    cpu.emu_start(BOOT, 0, count=10_000)


def test_segments_are_selector_times_16(cpu):
    boot(cpu, """
        mov ax, 0x1000
        mov ds, ax
        mov word ptr [0x20], 0xBEEF
        mov ax, 0x1002
        mov es, ax
        mov bx, es:[0]
        hlt
    """)
    assert cpu.mem_read(0x10020, 2) == struct.pack("<H", 0xBEEF)
    assert cpu.reg_read("bx") == 0xBEEF                  # 0x1002:0 is 0x10020 too


def test_interrupt_vector_table_and_iret(cpu):
    boot(cpu, """
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x7000
        mov word ptr [0x80 * 4], offset handler
        mov word ptr [0x80 * 4 + 2], 0
        sti
        int 0x80
        mov cx, sp
        hlt
    handler:
        pushf
        pop dx                  /* FLAGS inside the handler: IF cleared */
        mov bx, 0x55
        iret
    """)
    assert cpu.reg_read("bx") == 0x55 and cpu.reg_read("cx") == 0x7000
    assert cpu.reg_read("dx") & 0x200 == 0
    assert cpu.reg_read("eflags") & 0x200                # IRET restored IF


def test_far_jump_loads_cs_as_a_paragraph(cpu):
    boot(cpu, """
        jmp 0x07C0:(there - 0x7C00)
    there:
        mov ax, cs
        call 0x0000:(far_routine)
        hlt
    far_routine:
        mov bx, cs
        retf
    """)
    assert cpu.reg_read("ax") == 0x07C0 and cpu.reg_read("bx") == 0


def test_boot_sector_enters_protected_mode(cpu):
    boot(cpu, """
        cli
        xor ax, ax
        mov ds, ax
        lgdt [gdtr]
        mov eax, cr0
        or al, 1
        mov cr0, eax
        jmp 0x08:pm
    .code32
    pm:
        mov ax, 0x10
        mov ds, ax
        mov ss, ax
        mov esp, 0x90000
        mov eax, 0x12345678
        push eax
        pop ebx
        hlt
    .align 8
    gdt:
        .quad 0
        .quad 0x00CF9A000000FFFF
        .quad 0x00CF92000000FFFF
    gdtr:
        .word 23
        .long gdt
    """)
    assert cpu.reg_read("cs") == 0x08 and cpu.reg_read("ebx") == 0x12345678
    assert cpu.reg_read("cr0") & 1


def test_protected_mode_only_instructions_are_ud_in_real_mode(cpu):
    boot(cpu, """
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x7000
        mov word ptr [6 * 4], offset ud
        mov word ptr [6 * 4 + 2], 0
        mov ax, 0x28
        ltr ax
        hlt
    ud:
        mov bx, 6
        hlt
    """)
    assert cpu.reg_read("bx") == 6


def test_writes_through_cs_in_real_mode(cpu):
    """Real mode has no segment type checks (SDM Vol. 3 5.1: CR0.PE enables the protection
    mechanism; Table 9-1 gives CS at reset as 'Present, R/W'): a CS override writes, as real-mode
    programs keeping their variables in the code segment expect. Only the limit applies."""
    boot(cpu, """
        mov ax, 0x1234
        mov word ptr cs:[0x7E00], ax
        add byte ptr cs:[0x7E01], 0x11
        mov bx, word ptr cs:[0x7E00]
        hlt
    """)
    assert cpu.reg_read("bx") == 0x2334
    assert cpu.mem_read(0x7E00, 2) == struct.pack("<H", 0x2334)


def test_write_through_code_segment_faults_again_in_protected_mode(cpu):
    """The same CS, once CR0.PE is set, is an execute/read code segment again: #GP(0)."""
    cpu.mem_write(BOOT, assemble("""
        mov ax, 0x1234
        mov word ptr cs:[0x7E00], ax
        hlt
    """, BOOT, bits=16))
    cpu.reset_real_mode(0, BOOT)
    cpu.reg_write("cr0", cpu.reg_read("cr0") | 1)       # PE with real-mode segment caches
    with pytest.raises(pyvmm.GuestFault) as e:
        cpu.emu_start(BOOT, 0, count=10)
    assert e.value.vector == 13


@pytest.mark.parametrize("source, vector", [
    ("mov ax, word ptr [bx]", 13),                      # DS:0xFFFF, 2 bytes: #GP(0)
    ("add dword ptr es:[bx - 2], eax", 13),             # ES:0xFFFD, 4 bytes
    ("mov al, byte ptr [bp + si]", 0),                  # one byte at SS:0xFFFF: fine
    ("inc word ptr [bp + si]", 12),                     # SS:0xFFFF, 2 bytes: #SS(0)
    ("mov ax, word ptr [ebx]", 13),                     # 0x67: offset 0x1FFFF > limit
])
def test_real_mode_segment_limit(cpu, source, vector):
    """An operand with a byte past offset 0xFFFF faults in real mode (SDM Vol. 2, Real-Address
    Mode Exceptions: '#GP If a memory operand effective address is outside the CS, DS, ES, FS,
    or GS segment limit. #SS If a memory operand effective address is outside the SS segment
    limit.'; Vol. 3 22.31: the 286 and later fault where the 8086 wrapped)."""
    boot(cpu, f"""
        xor ax, ax
        mov ds, ax
        mov word ptr [12 * 4], offset ss_fault
        mov word ptr [12 * 4 + 2], 0
        mov word ptr [13 * 4], offset gp_fault
        mov word ptr [13 * 4 + 2], 0
        mov ax, 0x2000
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov sp, 0x8000
        mov ebx, 0x1FFFF
        mov bp, 0xFFF0
        mov si, 0x000F
        xor dx, dx
        {source}
        hlt
    ss_fault:
        mov dx, 12
        hlt
    gp_fault:
        mov dx, 13
        hlt
    """)
    assert cpu.reg_read("dx") == vector
