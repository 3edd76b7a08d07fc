"""External interrupts: the 8254 PIT ticking IRQ 0 through the 8259A PICs into the CPU, with
HLT waking on each tick, EOI, masks, and time counted in instructions (deterministic)."""
import io
import struct

import pytest

from pyvmm.machine import PC
from pyvmm.machine.clock import GUEST_HZ
from pyvmm.machine.devices.pit8254 import PIT_HZ
from pyvmm.machine.multiboot import GDT, GDT_ADDRESS
from tests.asm import assemble

BASE = 0x100000
PIT_RELOAD = 11932              # ~100 Hz


def gate(vector, label):
    """Assembly that points IDT entry `vector` (in the program's `idt`) at `label`."""
    return f"""
        mov eax, offset {label}
        mov word ptr [idt + {vector} * 8], ax
        mov word ptr [idt + {vector} * 8 + 2], 0x08
        mov word ptr [idt + {vector} * 8 + 4], 0x8E00
        shr eax, 16
        mov word ptr [idt + {vector} * 8 + 6], ax
"""


def program(ticks_wanted, body="hlt"):
    return f"""
        mov esp, 0x90000
        {gate(0x20, "irq0")}
        lidt [idtr]
        mov al, 0x11
        out 0x20, al            /* ICW1: edge, cascade, ICW4 follows */
        out 0xA0, al
        mov al, 0x20
        out 0x21, al            /* ICW2: master vectors 0x20-0x27 */
        mov al, 0x28
        out 0xA1, al            /* slave 0x28-0x2F */
        mov al, 4
        out 0x21, al            /* ICW3 */
        mov al, 2
        out 0xA1, al
        mov al, 1
        out 0x21, al            /* ICW4: 8086 mode */
        out 0xA1, al
        mov al, 0xFE
        out 0x21, al            /* unmask IRQ 0 only */
        mov al, 0xFF
        out 0xA1, al
        mov al, 0x34
        out 0x43, al            /* channel 0, LSB then MSB, mode 2 */
        mov ax, {PIT_RELOAD}
        out 0x40, al
        mov al, ah
        out 0x40, al
        sti
    wait:
        {body}
        cmp dword ptr [ticks], {ticks_wanted}
        jb wait
        mov eax, [ticks]
        out 0xF4, al            /* exit status (ticks << 1) | 1 */
    irq0:
        inc dword ptr [ticks]
        mov al, 0x20
        out 0x20, al            /* EOI */
        iretd
        .align 4
    ticks: .long 0
    idtr: .word 0x30 * 8 - 1
          .long idt
    idt:
        .rept 0x30
        .quad 0
        .endr
    """


def machine(source, realtime=False):
    pc = PC(console=io.BytesIO(), debugcon=io.BytesIO(), realtime=realtime)
    cpu = pc.cpu
    cpu.mem_write(BASE, assemble(source, BASE))
    cpu.mem_write(GDT_ADDRESS, GDT)
    cpu.reg_write("gdtr_base", GDT_ADDRESS)
    cpu.reg_write("gdtr_limit", len(GDT) - 1)
    cpu.reg_write("eip", BASE)
    cpu.reg_write("cs", 0x08)
    for seg in ("ds", "es", "ss"):
        cpu.reg_write(seg, 0x10)
    return pc


def test_pit_ticks_wake_a_halted_cpu():
    pc = machine(program(10))
    result = pc.run(max_instructions=100_000_000)
    assert result.reason == "exit" and result.status == (10 << 1) | 1
    assert pc.cpu.interrupts == 10
    # 10 ticks of ~100 Hz are ~0.1 s of guest time: ~10 million instructions at GUEST_HZ,
    # almost all of them spent halted
    expected = 10 * PIT_RELOAD * GUEST_HZ // PIT_HZ
    assert abs(pc.cpu.icount - expected) < 1000


def test_realtime_ties_the_timer_to_the_host_clock():
    # --realtime: 10 ticks of ~100 Hz take ~0.1 s of wall time, and a halted CPU waits for
    # them instead of skipping ahead, so far fewer instructions than the deterministic
    # run's ~10 million pass.
    import time
    pc = machine(program(10), realtime=True)
    t0 = time.perf_counter()
    result = pc.run(max_instructions=100_000_000)
    elapsed = time.perf_counter() - t0
    assert result.reason == "exit" and result.status == (10 << 1) | 1
    assert elapsed >= 10 * PIT_RELOAD / PIT_HZ * 0.95
    assert pc.cpu.icount < 1_000_000


def test_busy_loop_is_interrupted_too_and_runs_are_deterministic():
    counts = []
    for _ in range(2):
        pc = machine(program(3, body="nop"))
        result = pc.run(max_instructions=100_000_000)
        assert result.status == (3 << 1) | 1
        counts.append(pc.cpu.icount)
    assert counts[0] == counts[1]


def test_masked_irq_never_arrives_and_halt_ends_the_run():
    pc = machine(program(1).replace("mov al, 0xFE\n        out 0x21, al", "mov al, 0xFF\n        out 0x21, al"))
    result = pc.run(max_instructions=50_000_000)
    # the CPU halts with IF=1 but the only timer's IRQ is masked: it waits until the budget
    assert result.reason in ("halt", "budget") and pc.cpu.interrupts == 0


def test_sti_shadow_delays_the_interrupt_by_one_instruction():
    pc = machine("sti\n mov ebx, 1\n mov ecx, 2\n hlt")
    cpu = pc.cpu
    # vector 0x20 -> a HLT; the interrupt is pending before STI runs
    handler = BASE + 0x100
    cpu.mem_write(handler, b"\xf4")
    idt = bytearray(0x21 * 8)
    struct.pack_into("<HHHH", idt, 0x20 * 8, handler & 0xFFFF, 0x08, 0x8E00, handler >> 16)
    cpu.mem_write(0x3000, bytes(idt))
    cpu.reg_write("idtr_base", 0x3000)
    cpu.reg_write("idtr_limit", len(idt) - 1)
    cpu.reg_write("esp", 0x9000)
    cpu.intr_line = True
    cpu.intr_acknowledge = lambda: 0x20
    cpu.emu_start(BASE, 0)
    # STI's shadow lets `mov ebx, 1` run; then the interrupt is taken before `mov ecx, 2`
    assert cpu.reg_read("ebx") == 1 and cpu.reg_read("ecx") == 0
    assert cpu.eip == handler + 1
    assert struct.unpack("<I", cpu.mem_read(0x9000 - 12, 4))[0] == BASE + 6     # saved EIP


def test_cmos_clock_is_deterministic_bcd_and_advances_with_guest_time():
    from pyvmm.machine.clock import GUEST_HZ
    pc = PC(console=io.BytesIO(), debugcon=io.BytesIO())
    cmos, ports = pc.cmos, pc.ports

    def read(index):
        ports.write(0x70, 1, index)
        return ports.read(0x71, 1)
    assert (read(0x32), read(0x09), read(0x08), read(0x07)) == (0x20, 0x26, 0x01, 0x01)
    assert (read(0x04), read(0x02), read(0x00)) == (0, 0, 0)
    pc.cpu.icount = 75 * GUEST_HZ                   # 75 s of guest time later
    assert (read(0x02), read(0x00)) == (0x01, 0x15)  # 00:01:15 in BCD
    ports.write(0x70, 1, 0x0B)
    ports.write(0x71, 1, 0x06)                      # binary mode
    assert read(0x00) == 15
    assert read(0x15) | read(0x16) << 8 == 640      # base memory, KiB
    assert read(0x0D) == 0x80


LAPIC_PROGRAM = f"""
        mov esp, 0x90000
        {gate(0x40, "timer")}
        {gate(0x41, "ipi")}
        lidt [idtr]
        mov dword ptr [0xFEE000F0], 0x1FF       /* SVR: APIC on, spurious vector 0xFF */
        mov dword ptr [0xFEE00300], 0x00044041  /* ICR: fixed IPI to self, vector 0x41 */
        mov dword ptr [0xFEE003E0], 0xB         /* divide by 1 */
        mov dword ptr [0xFEE00320], 0x20040     /* LVT timer: periodic, vector 0x40 */
        mov dword ptr [0xFEE00380], 100000      /* initial count */
        sti
    wait:
        hlt
        cmp dword ptr [ticks], 5
        jb wait
        mov eax, [ticks]
        add eax, [ipis]
        out 0xF4, al                            /* exit status ((ticks + ipis) << 1) | 1 */
    timer:
        inc dword ptr [ticks]
        mov dword ptr [0xFEE000B0], 0           /* EOI */
        iretd
    ipi:
        inc dword ptr [ipis]
        mov dword ptr [0xFEE000B0], 0
        iretd
        .align 4
    ticks: .long 0
    ipis: .long 0
    idtr: .word 0x50 * 8 - 1
          .long idt
    idt:
        .rept 0x50
        .quad 0
        .endr
"""


def test_local_apic_timer_and_self_ipi():
    pc = machine(LAPIC_PROGRAM)
    result = pc.run(max_instructions=10_000_000)
    assert result.reason == "exit" and result.status == ((5 + 1) << 1) | 1
    assert abs(pc.cpu.icount - 5 * 100_000) < 200            # one tick per 100,000 instructions
    assert pc.lapic.isr == 0                                  # every interrupt was EOI'd


def test_mp_tables_describe_the_machine():
    pc = PC(console=io.BytesIO(), debugcon=io.BytesIO())
    pc.write_firmware_tables()
    read = pc.cpu.mem_read
    # the floating pointer: found by its signature on a 16-byte boundary, checksummed
    area = read(0xF0000, 0x10000)
    at = next(i for i in range(0, len(area), 16) if area[i:i + 4] == b"_MP_")
    floating = area[at:at + 16]
    assert sum(floating) % 256 == 0
    table_address = struct.unpack_from("<I", floating, 4)[0]
    header = read(table_address, 44)
    assert header[:4] == b"PCMP"
    length, count, lapic = struct.unpack_from("<H", header, 4)[0], struct.unpack_from("<H", header, 34)[0], \
        struct.unpack_from("<I", header, 36)[0]
    assert sum(read(table_address, length)) % 256 == 0 and lapic == 0xFEE00000
    entries = read(table_address + 44, length - 44)
    kinds, pins, pos = [], {}, 0
    for _ in range(count):
        kind = entries[pos]
        kinds.append(kind)
        if kind == 3:
            pins[entries[pos + 5]] = entries[pos + 7]
        pos += 20 if kind == 0 else 8
    assert kinds.count(0) == 1 and kinds.count(2) == 1
    assert pins[0] == 2 and pins[1] == 1 and pins[14] == 14     # IRQ 0 on pin 2


def test_io_apic_routes_the_pit_to_a_local_apic_vector():
    pc = machine(f"""
        {gate(0x30, "handler")}
        lidt [idtr]
        mov esp, 0x90000
        mov dword ptr [0xFEE000F0], 0x1FF       /* local APIC on */
        mov dword ptr [0xFEC00000], 0x14        /* I/O APIC: redirection entry 2, low */
        mov dword ptr [0xFEC00010], 0x30        /* vector 0x30, fixed, unmasked */
        mov al, 0x34                            /* PIT: mode 2; the 8259A stays masked */
        out 0x43, al
        mov ax, 1193
        out 0x40, al
        mov al, ah
        out 0x40, al
        sti
    wait:
        hlt
        cmp dword ptr [ticks], 3
        jb wait
        mov eax, [ticks]
        out 0xF4, al
    handler:
        inc dword ptr [ticks]
        mov dword ptr [0xFEE000B0], 0           /* EOI to the local APIC */
        iretd
        .align 4
    ticks: .long 0
    idtr: .word 0x40 * 8 - 1
          .long idt
    idt:
        .rept 0x40
        .quad 0
        .endr
    """)
    result = pc.run(max_instructions=10_000_000)
    assert result.status == (3 << 1) | 1
    assert pc.ioapic.mmio_read(0xFEC00000, 4) == 0x14
