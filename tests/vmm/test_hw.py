"""Hardware assist (`--mode hw`): guest mode with VM exits numbered as in the Intel SDM;
the same guests, the same output and instruction counts, and only the selected exits."""
import io

import pytest

from pyvmm import CPU, ExitReason
from pyvmm._core.exits import VMControl, VMExitReason
from pyvmm.machine import PC
from pyvmm.vmm import create, hypervisor_memory
from tests.asm import assemble
from tests.guest_build import guests_build
from tests.vmm.test_trap import machine


def boot(name, mode):
    out = io.BytesIO()
    pc = PC(console=out, debugcon=io.BytesIO(), hypervisor_memory=hypervisor_memory(mode))
    pc.boot_multiboot(str(guests_build.build(name, "O2")))
    vmm = create(mode, pc)
    return out, pc.run(200_000_000), vmm


@pytest.mark.parametrize("name", ["hello", "exceptions", "interrupts", "paging", "usermode",
                                  "selftest", "popek-goldberg"])
def test_guest_runs_identically_in_guest_mode(name):
    bare_out, bare, _ = boot(name, "emulate")
    out, result, vmm = boot(name, "hw")
    assert out.getvalue() == bare_out.getvalue()     # popek-goldberg: every probe passes
    assert (result.reason, result.status) == (bare.reason, bare.status)
    if name == "popek-goldberg":
        # it looks for pyvmm's paravirtual ABI at boot: hw's CPUID shows the signature (ABI
        # version 0: the native path), which the kernel compares to the end and follows
        # with the version leaf, a few instructions more than bare, where none is shown
        assert vmm.stats.count["CPUID (10)"] == 2
        assert 0 < result.instructions - bare.instructions < 200
    else:
        assert result.instructions == bare.instructions
    assert set(vmm.stats.count) <= {"I/O instruction (30)", "HLT (12)", "CPUID (10)",
                                    "interrupt injection (VM entry)", "external interrupt (1)",
                                    "interrupt window (7)"}


def test_only_the_selected_instructions_exit():
    pc = machine("""
        .rept 10
        cli
        sti
        .endr
        mov eax, cr3
        mov cr3, eax
        push cs
        pop ebx
        mov eax, 0x40000000
        cpuid
        mov al, 5
        out 0xF4, al
    """)
    vmm = create("hw", pc)
    result = pc.run(100_000)
    assert result.reason == "exit" and result.status == 11
    assert dict(vmm.stats.count) == {"CPUID (10)": 1, "I/O instruction (30)": 1}
    cpu = pc.cpu
    assert cpu.reg_read("ebx") & 3 == 0                                 # really ring 0
    sig = b"".join(cpu.reg_read(r).to_bytes(4, "little") for r in ("ebx", "ecx", "edx"))
    assert sig == b"PyVMM PyVMM "


def raw_guest(source, controls):
    cpu = CPU()
    cpu.mem_map(0, 1 << 20)
    cpu.mem_write(0x1000, assemble(source, 0x1000))
    cpu.reg_write("esp", 0x8000)
    cpu.eip = 0x1000
    cpu.guest_mode = True
    cpu.vm_controls = int(controls)
    return cpu


def test_exit_qualifications_follow_the_sdm():
    cpu = raw_guest("""
        mov dx, 0x3f8
        out dx, al
        in ax, 0x60
        rep insd
        hlt
        invlpg [0x1234]
        mov cr3, eax
        mov ecx, cr3
    """, VMControl.UNCONDITIONAL_IO_EXITING | VMControl.HLT_EXITING |
        VMControl.INVLPG_EXITING | VMControl.CR3_LOAD_EXITING | VMControl.CR3_STORE_EXITING)
    seen = []
    for _ in range(7):
        assert ExitReason(cpu.run(cpu.icount + 100)) == ExitReason.VMEXIT
        seen.append((VMExitReason(cpu.exit_reason), cpu.exit_qualification, cpu.eip,
                     cpu.exit_instruction_length))
        cpu.eip += cpu.exit_instruction_length          # the VMM emulates and steps over it
    assert seen[0][:2] == (VMExitReason.IO_INSTRUCTION, 0x3F8 << 16)      # OUT, byte, DX
    assert seen[1][:2] == (VMExitReason.IO_INSTRUCTION, (0x60 << 16) | 0x40 | 0x8 | 1)
    assert seen[2][:2] == (VMExitReason.IO_INSTRUCTION, 3 | 0x8 | 0x10 | 0x20 | (0x3F8 << 16))
    assert seen[3][0] == VMExitReason.HLT and seen[3][3] == 1
    assert seen[4][:2] == (VMExitReason.INVLPG, 0x1234) and seen[4][3] == 7
    assert seen[5][:2] == (VMExitReason.CR_ACCESS, 3 | (0 << 8))          # MOV to CR3 from EAX
    assert seen[6][:2] == (VMExitReason.CR_ACCESS, 3 | 0x10 | (1 << 8))   # MOV from CR3 to ECX
    assert seen[0][2] == 0x1004 and cpu.icount == 1                        # exits do not execute


def test_vmcall_exits_in_guest_mode_and_is_invalid_outside():
    cpu = raw_guest("vmcall", 0)
    assert ExitReason(cpu.run(10)) == ExitReason.VMEXIT
    assert (cpu.exit_reason, cpu.exit_instruction_length) == (VMExitReason.VMCALL, 3)
    cpu.guest_mode = False
    cpu.exception_intercept = 1 << 6
    assert ExitReason(cpu.run(10)) == ExitReason.EXCEPTION and cpu.last_exit.vector == 6


def test_interrupt_window_exit_waits_for_if():
    cpu = raw_guest("""
        nop
        nop
        sti
        nop
        nop
    """, VMControl.INTERRUPT_WINDOW_EXITING)
    cpu.intr_line = True                 # attention: an interrupt is waiting
    assert ExitReason(cpu.run(100)) == ExitReason.VMEXIT
    # IF was clear until STI, and STI's shadow covers the NOP after it
    assert cpu.exit_reason == VMExitReason.INTERRUPT_WINDOW and cpu.eip == 0x1004


def test_nanobench_exits_per_operation():
    """Exact VMM entries per nanobench operation (N iterations each; each bracket also
    holds its opening marker's OUT, an I/O exit wherever I/O traps)."""
    per_mode = {}
    for mode in ("trap", "hw"):
        out, result, vmm = boot("nanobench", mode)
        assert result.reason == "exit"
        per_mode[mode] = {b.name: (b.iterations, b.exits) for b in vmm.brackets}
    n, trap = per_mode["trap"]["cli/sti"][0], per_mode["trap"]
    assert trap["cli/sti"][1] == {"cli": n, "sti": n, "out": 1}
    assert trap["in"][1] == {"in": n, "out": 1}
    assert trap["call/ret"][1] == {"out": 1}
    assert trap["divzero"][1] == {"exception #DE (reflected)": n, "iretd": n, "out": 1}
    assert trap["pgfault"][1] == {"exception #PF (reflected)": n, "iretd": n, "out": 1}
    # ptemod: the INVLPG traps, and the next read refills the shadow (a hidden fault)
    assert trap["ptemod"][1]["invlpg"] == n and trap["ptemod"][1]["page fault (hidden)"] >= n
    # syscall: INT 0x80 and IRET each trap, plus one of each to enter and leave ring 3
    assert trap["syscall"][1]["int"] == n + 1 and trap["syscall"][1]["iretd"] == n + 1
    io = "I/O instruction (30)"
    hw = per_mode["hw"]
    for op in ("syscall", "cli/sti", "call/ret", "pgfault", "divzero", "ptemod"):
        assert hw[op][1] == {io: 1}, op
    assert hw["in"][1] == {io: n + 1}
