"""Hardware-assisted virtualization, in the style of Intel VT-x (2005).

The processor gains a *guest mode* (VMX non-root operation): the guest kernel runs
unmodified at its own ring 0, on its own GDT, IDT and page tables, and the processor itself
leaves guest mode — a *VM exit* — on the events the VMM selected in the VM-execution
controls, reporting an exit reason and an exit qualification numbered as in the Intel SDM
(Vol. 3, appendix C and table 28-5) so they can be looked up there:

    HLT exiting (12)                  the guest idles: the VMM waits for its next interrupt
    unconditional I/O exiting (30)    every IN/OUT/INS/OUTS reaches the machine's devices
                                      through the VMM; the qualification names port, size
                                      and direction, so nothing needs decoding
    CPUID (10, always)                the VMM answers, and says a hypervisor is present
    VMCALL (18, always)               no hypercalls in this mode: the guest gets #UD
    external interrupt (1)            a device interrupt the guest can take now
    interrupt window (7)              the guest has just become able to take one

The VMM injects interrupts at VM entry (event injection): the processor delivers them
through the guest's own IDT, with no frame built in software. Nothing else exits: system
calls, exceptions, CLI/STI/POPF, segment loads, MOV CR3 and INVLPG all run at full speed
in guest mode, and the sensitive instructions that defeat trap-and-emulate behave as on
bare metal because the guest really is at ring 0.

Memory: nested paging (nested_paging.py, EPT): the processor translates every
guest-physical address through the VMM's nested tables, which map the guest's RAM and
devices and nothing else; an access anywhere else is an EPT violation (48) that stops the
VM with the address named.
"""
from .. import ExitReason
from .._core.exits import VMControl, VMExitReason
from .base import VMM
from .decoder import decode, segment_of
from .faults import VirtualFault
from .guest_memory import GuestMemory, GuestPhysicalError
from .nested_paging import NestedPageTables
from .stats import Timer

MASK32 = 0xFFFFFFFF
F_IF, F_DF = 0x200, 0x400
UD = 6
SIGNATURE = b"PyVMM PyVMM "          # CPUID leaf 0x40000000: EBX, ECX, EDX

EXIT_NAMES = {
    VMExitReason.EXCEPTION_OR_NMI: "exception", VMExitReason.EXTERNAL_INTERRUPT: "external interrupt",
    VMExitReason.TRIPLE_FAULT: "triple fault", VMExitReason.INTERRUPT_WINDOW: "interrupt window",
    VMExitReason.CPUID: "CPUID", VMExitReason.HLT: "HLT", VMExitReason.INVLPG: "INVLPG",
    VMExitReason.RDTSC: "RDTSC", VMExitReason.VMCALL: "VMCALL",
    VMExitReason.CR_ACCESS: "control-register access", VMExitReason.MOV_DR: "MOV DR",
    VMExitReason.IO_INSTRUCTION: "I/O instruction", VMExitReason.RDMSR: "RDMSR",
    VMExitReason.WRMSR: "WRMSR", VMExitReason.EPT_VIOLATION: "EPT violation",
}


def hypervisor_cpuid(cpu, leaf, subleaf, abi_version):
    """What a VMM answers for CPUID: the processor's own values with "hypervisor present"
    (leaf 1 ECX bit 31), and the hypervisor leaves: 0x40000000 the highest one and the
    signature, 0x40000001 the hypercall ABI version (0: none)."""
    if leaf == 0x40000000:
        return (0x40000001,) + tuple(int.from_bytes(SIGNATURE[i:i + 4], "little") for i in (0, 4, 8))
    if 0x40000001 <= leaf <= 0x4FFFFFFF:
        return (abi_version if leaf == 0x40000001 else 0, 0, 0, 0)
    eax, ebx, ecx, edx = cpu.cpuid_values(leaf, subleaf)
    return eax, ebx, ecx | 0x80000000 if leaf == 1 else ecx, edx


def exit_label(reason):
    return f"{EXIT_NAMES.get(reason, 'exit')} ({int(reason)})"


class _GuestView:
    """The guest's paging state is the processor's own in guest mode."""

    def __init__(self, cpu):
        self.cpu = cpu

    cr0 = property(lambda self: self.cpu.cr0)
    cr3 = property(lambda self: self.cpu.cr3)
    cr4 = property(lambda self: self.cpu.cr4)
    cpl = property(lambda self: self.cpu.cpl)


class HardwareAssist(VMM):
    mode = "hw"
    CONTROLS = VMControl.HLT_EXITING | VMControl.UNCONDITIONAL_IO_EXITING

    PAGING = ("nested",)

    def __init__(self, pc, paging="nested"):
        super().__init__(pc)
        if paging not in self.PAGING:
            raise ValueError(f"hw mode's memory virtualization is one of {', '.join(self.PAGING)}, "
                             f"not {paging!r}")
        self.paging = paging
        self.mem = GuestMemory(self.cpu, pc.memory_size, _GuestView(self.cpu), pc.mmio_ranges())
        self.nested = None
        self.halted = False
        self.handlers = {
            VMExitReason.HLT: self.exit_hlt,
            VMExitReason.IO_INSTRUCTION: self.exit_io,
            VMExitReason.CPUID: self.exit_cpuid,
            VMExitReason.VMCALL: self.exit_vmcall,
            VMExitReason.INTERRUPT_WINDOW: self.exit_interrupt_window,
            VMExitReason.EPT_VIOLATION: self.exit_ept_violation,
            VMExitReason.EPT_MISCONFIG: self.exit_ept_violation,
        }

    def attach(self):
        cpu = self.cpu
        cpu.guest_mode = True
        cpu.vm_controls = int(self.CONTROLS)
        cpu.interrupt_exiting = True
        cpu.exception_intercept = 0             # the exception bitmap: nothing
        from . import hypervisor_memory
        base, size = hypervisor_memory(self.mode)
        if not cpu.mem.is_mapped(base):
            cpu.mem_map(base, size)             # (cheaper if the PC was made with it)
        self.nested = NestedPageTables(cpu, self.pc.memory_size, self.pc.mmio_ranges(), base, size)
        self.nested.enable()
        # (CPUID always exits in guest mode: the VMM answers it, hypervisor_cpuid)

    def interrupts_enabled(self):
        return bool(self.cpu.reg_read("eflags") & F_IF)

    # -- the run loop ----------------------------------------------------------------------
    def run(self, stop):
        cpu = self.cpu
        while True:
            if cpu.intr_line:
                if cpu.reg_read("eflags") & F_IF and cpu.icount != cpu.inhibit_at:
                    with Timer(self.stats, "interrupt injection (VM entry)"):
                        cpu.vm_controls &= ~VMControl.INTERRUPT_WINDOW_EXITING
                        vector = self.pc.acknowledge_interrupt() & 0xFF
                        cpu.interrupts += 1
                        self.halted = False
                        r = cpu.inject_event(vector)
                    if r:
                        return ExitReason(r)
                elif not self.halted:
                    # not now: ask the processor to exit as soon as the guest can take it
                    cpu.vm_controls |= VMControl.INTERRUPT_WINDOW_EXITING
            if self.halted:
                return ExitReason.HLT
            reason = ExitReason(cpu.run(stop))
            if reason == ExitReason.VMEXIT:
                exit_reason = VMExitReason(cpu.exit_reason)
                with Timer(self.stats, exit_label(exit_reason)):
                    self.handlers[exit_reason]()
                if cpu.exit_request:
                    r, cpu.exit_request = cpu.exit_request, 0
                    return ExitReason(r)
                continue
            if reason == ExitReason.INTERRUPT:
                self.stats.add(exit_label(VMExitReason.EXTERNAL_INTERRUPT), 0.0)
                continue
            return reason

    def resume_after(self):
        """The exiting instruction is done: step over it (its length is in the exit info)."""
        self.cpu.eip = (self.cpu.eip + self.cpu.exit_instruction_length) & MASK32
        self.cpu.icount += 1

    # -- exit handlers ---------------------------------------------------------------------
    def exit_hlt(self):
        self.resume_after()
        self.halted = True

    def exit_interrupt_window(self):
        self.cpu.vm_controls &= ~VMControl.INTERRUPT_WINDOW_EXITING

    def exit_cpuid(self):
        cpu = self.cpu
        values = hypervisor_cpuid(cpu, cpu.reg_read("eax"), cpu.reg_read("ecx"), 0)
        for reg, value in zip(("eax", "ebx", "ecx", "edx"), values):
            cpu.reg_write(reg, value)
        self.resume_after()

    def exit_ept_violation(self):
        """The guest reached a guest-physical address that is not its memory: a real VMM
        would emulate a device there or give up; this machine has no such device, so the
        VM stops with the address and the access named."""
        self.stop_message = NestedPageTables.describe_violation(self.cpu)
        self.cpu.last_exit = self.stop_message
        self.cpu.exit_request = int(ExitReason.UNSUPPORTED)

    def exit_vmcall(self):
        # no hypercall interface in this mode: VMCALL is an invalid opcode to the guest
        r = self.cpu.inject_event(UD)
        if r:
            self.cpu.exit_request = r

    def exit_io(self):
        cpu = self.cpu
        q = cpu.exit_qualification
        size, is_in, string, rep = (q & 7) + 1, bool(q & 8), bool(q & 0x10), bool(q & 0x20)
        port = q >> 16
        if not string:
            if is_in:
                value = self.pc.ports.read(port, size)
                cpu.reg_write({1: "al", 2: "ax", 4: "eax"}[size], value)
            else:
                self.pc.ports.write(port, size, cpu.reg_read("eax") & ((1 << 8 * size) - 1))
            self.resume_after()
            return
        self.string_io(port, size, is_in, rep)

    def string_io(self, port, size, is_in, rep):
        """INS/OUTS: the VMM moves the data between the port and the guest's memory."""
        cpu = self.cpu
        step = -size if cpu.reg_read("eflags") & F_DF else size
        count = cpu.reg_read("ecx") if rep else 1
        seg = "es"
        if not is_in:
            code = self.mem.read((cpu.get_segment("cs")[1] + cpu.eip) & MASK32,
                                 cpu.exit_instruction_length)
            insn = decode(code, cpu.eip)
            seg = next((segment_of(op) for op in insn.operands if op.type == 3), "ds")
        base = cpu.get_segment(seg)[1]
        done = 0
        try:
            while count:
                if is_in:
                    di = cpu.reg_read("edi")
                    value = self.pc.ports.read(port, size)
                    self.mem.write((base + di) & MASK32, value.to_bytes(size, "little"))
                    cpu.reg_write("edi", di + step)
                else:
                    si = cpu.reg_read("esi")
                    data = self.mem.read((base + si) & MASK32, size)
                    self.pc.ports.write(port, size, int.from_bytes(data, "little"))
                    cpu.reg_write("esi", si + step)
                count -= 1
                done += 1
                if rep:
                    cpu.reg_write("ecx", count)
        except VirtualFault as f:
            # the guest's page fault in the middle: deliver it, the iterations done stay done
            cpu.icount += done
            if f.vector == 14:
                cpu.cr2 = f.lin
            cpu.inject_event(f.vector, f.error_code)
            return
        except GuestPhysicalError as e:
            self.stop_message = str(e)
            cpu.last_exit = e
            cpu.exit_request = int(ExitReason.UNSUPPORTED)
            return
        cpu.eip = (cpu.eip + cpu.exit_instruction_length) & MASK32
        cpu.icount += max(done, 1)
