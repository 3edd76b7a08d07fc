"""Protected-mode machinery at ring 0: descriptor tables, segment loads, far transfers,
exception and interrupt delivery through the IDT, and self-modifying code."""
import struct
import sys

import pytest

import pyvmm
from pyvmm import CPU, GuestFault, TripleFault
from tests.asm import assemble

CODE = 0x1000
GDT = 0x8000
IDT = 0x9000
STACK = 0x7000


@pytest.fixture(autouse=True, params=["compiled", "uncompiled"])
def core(request, monkeypatch):
    """Every test here runs on the compiled core and on the same source uncompiled."""
    cls = pyvmm.CPU if request.param == "compiled" else pyvmm.load_pure().cpu.CPU
    monkeypatch.setattr(sys.modules[__name__], "CPU", cls)
    return request.param


def descriptor(base, limit, access, flags=0xC):
    """An 8-byte segment descriptor (access byte: P DPL S type; flags: G D/B L AVL)."""
    lo = (limit & 0xFFFF) | ((base & 0xFFFF) << 16)
    hi = ((base >> 16) & 0xFF) | (access << 8) | (limit & 0xF0000) | (flags << 20) | (base & 0xFF000000)
    return struct.pack("<II", lo, hi)


def gate(selector, offset, type_=0xE, dpl=0, present=True):
    lo = (offset & 0xFFFF) | (selector << 16)
    hi = (offset & 0xFFFF0000) | ((0x80 if present else 0) | (dpl << 5) | type_) << 8
    return struct.pack("<II", lo, hi)


def machine(source, gdt=None, idt=None):
    cpu = CPU()
    cpu.mem_map(0, 0x20000)
    cpu.mem_write(CODE, assemble(source, CODE))
    gdt = gdt if gdt is not None else [
        bytes(8),
        descriptor(0, 0xFFFFF, 0x9A),       # 0x08 code
        descriptor(0, 0xFFFFF, 0x92),       # 0x10 data
        descriptor(0x10000, 0x0FFF, 0x92, 0x4),   # 0x18 data, base 64 KiB, 4 KiB limit, byte-granular
        descriptor(0, 0xFFFFF, 0x9A & ~0x2),  # 0x20 execute-only code
        descriptor(0, 0xFFFFF, 0x90),       # 0x28 read-only data
        descriptor(0, 0xFFFFF, 0x12),       # 0x30 not present data
    ]
    cpu.mem_write(GDT, b"".join(gdt))
    cpu.reg_write("gdtr_base", GDT)
    cpu.reg_write("gdtr_limit", len(gdt) * 8 - 1)
    if idt is not None:
        cpu.mem_write(IDT, b"".join(idt))
        cpu.reg_write("idtr_base", IDT)
        cpu.reg_write("idtr_limit", len(idt) * 8 - 1)
    cpu.reg_write("esp", STACK)
    cpu.reg_write("cs", 0x08)           # a real selector, loaded with every check
    return cpu


def test_far_jump_and_segment_loads():
    cpu = machine("""
        jmp 0x08:next
    next:
        mov ax, 0x18
        mov ds, ax
        mov dword ptr [0x10], 0x12345678
        mov ax, 0x10
        mov es, ax
        mov ebx, es:[0x10010]
        hlt
    """)
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("cs") == 0x08 and cpu.reg_read("ds") == 0x18
    assert cpu.reg_read("ebx") == 0x12345678
    # the accessed bit was set in the GDT entries that were loaded
    assert cpu.mem_read(GDT + 0x18 + 5, 1)[0] & 1


@pytest.mark.parametrize("source, vector, error", [
    ("mov ax, 0x30\n mov ds, ax", 11, 0x30),           # not present: #NP(sel)
    ("mov ax, 0x38\n mov ds, ax", 13, 0x38),           # beyond the GDT limit: #GP(sel)
    ("mov ax, 0x20\n mov ds, ax", 13, 0x20),           # execute-only code into DS: #GP(sel)
    ("mov ax, 0x28\n mov ss, ax", 13, 0x28),           # read-only data into SS: #GP(sel)
    ("xor eax, eax\n mov ss, ax", 13, 0),              # null SS: #GP(0)
    ("mov ax, 0x18\n mov ds, ax\n mov eax, [0xFFE]", 13, 0),   # beyond the 4 KiB limit
    ("mov ax, 0x28\n mov ds, ax\n mov [0], eax", 13, 0),       # write to read-only data
    ("xor eax, eax\n mov ds, ax\n mov eax, [0]", 13, 0),       # use of a null selector
    ("mov ax, 0x18\n mov ss, ax\n mov esp, 0x1000\n push eax\n mov eax, [esp+4]", 12, 0),  # #SS
])
def test_segment_faults_carry_the_sdm_error_code(source, vector, error):
    handler = 0x3000
    idt = [gate(0x08, handler + 0x10 * v, 0xE) for v in range(32)]
    cpu = machine(source + "\n hlt", idt=idt)
    for v in range(32):                               # each handler: hlt
        cpu.mem_write(handler + 0x10 * v, b"\xf4")
    cpu.emu_start(CODE, 0)
    assert cpu.eip == handler + 0x10 * vector + 1, hex(cpu.eip)
    esp = cpu.reg_read("esp") + (0x10000 if vector == 12 else 0)   # SS base of 0x18
    if vector in (8, 10, 11, 12, 13, 14):
        err, eip, cs = struct.unpack("<III", cpu.mem_read(esp, 12))
        assert err == error
    else:
        eip, cs = struct.unpack("<II", cpu.mem_read(esp, 8))
    # a fault saves the EIP of the faulting instruction itself
    assert CODE <= eip < CODE + 0x40 and cs == 0x08


def test_int_and_iret_through_trap_and_interrupt_gates():
    handler = 0x3000
    idt = [gate(0x08, 0, present=False)] * 0x40 + [gate(0x08, handler, 0xE), gate(0x08, handler + 0x20, 0xF)]
    cpu = machine("""
        sti
        int 0x40
        int 0x41
        hlt
    """, idt=idt)
    # handler 0x40 (interrupt gate): records EFLAGS, iret; 0x41 (trap gate) likewise
    cpu.mem_write(handler, assemble("pushfd\n pop ebx\n iretd", handler))
    cpu.mem_write(handler + 0x20, assemble("pushfd\n pop ecx\n iretd", handler + 0x20))
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("ebx") & 0x200 == 0       # interrupt gate clears IF
    assert cpu.reg_read("ecx") & 0x200            # trap gate keeps it
    assert cpu.reg_read("eflags") & 0x200         # IRET restored it
    assert cpu.reg_read("esp") == STACK


def test_int_n_checks_gate_dpl_for_software_interrupts():
    # INT n to a DPL 0 gate is fine at CPL 0; a gate that is not present gives #NP(vec*8+2)
    idt = [gate(0x08, 0x3000 + 0x10 * v) for v in range(32)] + [gate(0x08, 0x3400, present=False)]
    cpu = machine("int 32\n hlt", idt=idt)
    for v in range(32):
        cpu.mem_write(0x3000 + 0x10 * v, b"\xf4")
    cpu.emu_start(CODE, 0)
    assert cpu.eip == 0x3000 + 0x10 * 11 + 1
    err = struct.unpack("<I", cpu.mem_read(cpu.reg_read("esp"), 4))[0]
    assert err == 32 * 8 + 2


def test_fault_during_delivery_becomes_double_fault_then_triple():
    # #GP handler gate not present -> #NP while delivering #GP -> #DF; #DF gate absent -> triple
    absent = gate(0x08, 0, present=False)
    idt = [gate(0x08, 0x3000)] * 8 + [absent] + [gate(0x08, 0x3000)] * 4 + [absent]
    cpu = machine("mov ax, 0x38\n mov ds, ax\n hlt", idt=idt)
    with pytest.raises(TripleFault) as info:
        cpu.emu_start(CODE, 0)
    assert info.value.vector == 13 and info.value.error_code == 0x38
    assert [v for v, _ in info.value.chain] == [13, 8, 11]


def test_unhandled_exception_report_names_the_instruction():
    cpu = machine("nop\n ud2\n hlt")
    with pytest.raises(GuestFault) as info:
        cpu.emu_start(CODE, 0)
    text = str(info.value)
    assert info.value.vector == 6 and info.value.eip == CODE + 1
    assert "#UD" in text and "0f 0b" in text and "ud2" in text and "0x00001001" in text


def test_self_modifying_code_is_seen_by_the_next_execution():
    cpu = machine("""
        mov ecx, 3
    again:
    patch:
        inc eax
        mov byte ptr [patch], 0x42      /* inc eax -> inc edx */
        dec ecx
        jnz again
        hlt
    """)
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("eax") == 1 and cpu.reg_read("edx") == 2


def test_host_writes_invalidate_decoded_code():
    cpu = machine("inc eax\n hlt")
    cpu.emu_start(CODE, 0)
    cpu.mem_write(CODE, b"\x43")                    # inc ebx
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("eax") == 1 and cpu.reg_read("ebx") == 1


def test_rep_string_iterations_are_interruptible_steps():
    cpu = machine("mov ecx, 5\n mov edi, 0x5000\n mov eax, 0x41\n rep stosb\n hlt")
    cpu.emu_start(CODE, 0, count=5)                 # 3 movs + 2 iterations
    assert cpu.reg_read("ecx") == 3 and cpu.eip == CODE + 15
    cpu.emu_start(cpu.eip, 0)
    assert cpu.mem_read(0x5000, 6) == b"AAAAA\x00" and cpu.reg_read("ecx") == 0


def test_endless_loop_is_stopped_by_the_instruction_budget():
    cpu = machine("spin: jmp spin")
    cpu.emu_start(CODE, 0, count=10000)
    assert cpu.icount == 10000 and cpu.eip == CODE


def test_port_io_reaches_the_host_handler():
    class Ports:
        def __init__(self):
            self.log = []

        def read(self, port, size):
            self.log.append(("in", port, size))
            return 0x12345678

        def write(self, port, size, value):
            self.log.append(("out", port, size, value))

    cpu = machine("""
        mov dx, 0x3f8
        mov al, 0x41
        out dx, al
        in eax, 0x60
        mov esi, 0x5000
        mov dword ptr [esi], 0x00636261
        mov ecx, 3
        rep outsb
        hlt
    """)
    cpu.io = Ports()
    cpu.emu_start(CODE, 0)
    assert cpu.io.log[0] == ("out", 0x3F8, 1, 0x41)
    assert cpu.io.log[1] == ("in", 0x60, 4)
    assert cpu.io.log[2:] == [("out", 0x3F8, 1, c) for c in b"abc"]
    assert cpu.reg_read("eax") == 0x12345678


def test_cpuid_and_rdtsc():
    cpu = machine("xor eax, eax\n cpuid\n mov edi, edx\n rdtsc\n mov esi, eax\n rdtsc\n hlt")
    cpu.emu_start(CODE, 0)
    vendor = b"".join(cpu.reg_read(r).to_bytes(4, "little") for r in ("ebx", "edi", "ecx"))
    assert vendor == b"GenuinePyVMM"
    assert cpu.reg_read("eax") - cpu.reg_read("esi") == 2     # time counts instructions


def test_exception_intercept_stops_before_delivery():
    from pyvmm import ExitReason
    cpu = machine("xor ecx, ecx\n div ecx\n hlt")
    cpu.exception_intercept = 1 << 0
    reason = cpu.emu_start(CODE, 0)
    assert reason == ExitReason.EXCEPTION
    assert cpu.last_exit.vector == 0 and cpu.last_exit.eip == CODE + 2


@pytest.mark.parametrize("index, vector", [(5, None), (10, None), (11, 5), (4, 5)])
def test_bound_raises_br_outside_the_bounds(index, vector):
    idt = [gate(0x08, 0x3000 + 0x10 * v) for v in range(32)]
    cpu = machine(f"mov eax, {index}\n bound eax, [0x5000]\n mov ebx, 1\n hlt", idt=idt)
    for v in range(32):
        cpu.mem_write(0x3000 + 0x10 * v, b"\xf4")
    cpu.mem_write(0x5000, struct.pack("<ii", 5, 10))
    cpu.emu_start(CODE, 0)
    if vector is None:
        assert cpu.reg_read("ebx") == 1
    else:
        assert cpu.eip == 0x3000 + 0x10 * vector + 1 and cpu.reg_read("ebx") == 0


@pytest.mark.parametrize("cr0_bits, source, vector", [
    (0x4, "fld1", 7),           # CR0.EM: an x87 instruction is #NM (the OS may emulate it)
    (0x0, "fld1", 6),           # no FPU and no emulation: not an instruction
    (0xA, "wait", 7),           # CR0.TS and CR0.MP: WAIT is #NM
    (0x8, "wait", None),        # TS without MP: WAIT does nothing
])
def test_fpu_escapes_and_wait(cr0_bits, source, vector):
    idt = [gate(0x08, 0x3000 + 0x10 * v) for v in range(32)]
    cpu = machine(f"mov eax, cr0\n or eax, {cr0_bits}\n mov cr0, eax\n {source}\n mov ebx, 1\n hlt", idt=idt)
    for v in range(32):
        cpu.mem_write(0x3000 + 0x10 * v, b"\xf4")
    cpu.emu_start(CODE, 0)
    if vector is None:
        assert cpu.reg_read("ebx") == 1
    else:
        assert cpu.eip == 0x3000 + 0x10 * vector + 1


def test_memory_mapped_io_reaches_the_device():
    class Registers:
        def __init__(self):
            self.log = []

        def mmio_read(self, address, size):
            self.log.append(("r", address, size))
            return 0x11223344

        def mmio_write(self, address, size, value):
            self.log.append(("w", address, size, value))

    cpu = machine("mov eax, [0xFEE00020]\n mov dword ptr [0xFEE000B0], 0\n mov bl, [0xFEE00031]\n hlt")
    dev = Registers()
    cpu.mmio_map(0xFEE00000, 0x1000, dev)
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("eax") == 0x11223344 and cpu.reg_read("bl") == 0x44
    assert dev.log == [("r", 0xFEE00020, 4), ("w", 0xFEE000B0, 4, 0), ("r", 0xFEE00031, 1)]


def test_msrs_tsc_and_apic_base():
    idt = [gate(0x08, 0x3000 + 0x10 * v) for v in range(32)]
    cpu = machine("""
        mov ecx, 0x10
        xor edx, edx
        mov eax, 1000
        wrmsr                   /* TSC := 1000 */
        rdtsc
        mov esi, eax
        mov ecx, 0x1B
        rdmsr
        mov edi, eax
        mov ecx, 0x12345
        rdmsr                   /* no such MSR: #GP(0) */
        hlt
    """, idt=idt)
    cpu.apic_present = True
    for v in range(32):
        cpu.mem_write(0x3000 + 0x10 * v, b"\xf4")
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("esi") == 1001              # one instruction later
    assert cpu.reg_read("edi") == 0xFEE00900
    assert cpu.eip == 0x3000 + 0x10 * 13 + 1


def single_stepping_machine():
    """TF set by POPFD, then three INCs under single-step; the #DB handler counts the
    traps in EDI and returns (IRETD restores TF)."""
    idt = [gate(0x08, 0x3000)] * 32
    cpu = machine("push 0x302\n popfd\n inc eax\n inc eax\n inc eax\n hlt", idt=idt)
    cpu.mem_write(0x3000, assemble("inc edi\n iretd", 0x3000))
    cpu.reg_write("eip", CODE)
    return cpu


def test_a_run_never_passes_its_stop_between_an_instruction_and_its_single_step_trap():
    """The #DB of a single-stepped instruction is a step of guest time of its own: a run
    whose stop falls between the two stops after the instruction, with the trap pending
    (as VT-x's pending debug exceptions hold it), and the next run delivers it first."""
    whole = single_stepping_machine()
    whole.run(1000)
    for stop in range(1, 25):
        cpu = single_stepping_machine()
        while cpu.icount < whole.icount:
            limit = min(cpu.icount + stop, whole.icount)
            cpu.run(limit)
            assert cpu.icount <= limit          # never past the stop
        assert (cpu.eip, cpu.icount) == (whole.eip, whole.icount)
        assert [cpu.reg_read(r) for r in ("eax", "edi", "esp", "eflags")] == \
            [whole.reg_read(r) for r in ("eax", "edi", "esp", "eflags")]
    assert whole.reg_read("eax") == 3 and whole.reg_read("edi") >= 3


def test_a_pending_single_step_trap_comes_before_an_interrupt():
    """SDM table 6-2: a trap on the previous instruction comes before an external
    interrupt that is up at the same boundary: the #DB handler is entered first."""
    cpu = single_stepping_machine()
    idt = [gate(0x08, 0x3000)] * 32 + [gate(0x08, 0x3100, type_=0xF)]
    cpu.mem_write(IDT, b"".join(idt))
    cpu.reg_write("idtr_limit", len(idt) * 8 - 1)
    cpu.mem_write(0x3100, assemble("inc esi\n iretd", 0x3100))
    cpu.reg_write("eflags", 0x202)
    cpu.run(3)                                  # push, popfd (sets TF), inc: trap pending
    assert cpu.pending_debug and cpu.icount == 3
    cpu.intr_acknowledge = lambda: 0x20
    cpu.intr_line = True
    cpu.run(4)
    assert not cpu.pending_debug and cpu.eip == 0x3000 and cpu.icount == 4
    assert cpu.reg_read("esi") == 0             # the #DB handler first
