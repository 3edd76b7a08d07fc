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

Memory, `--paging nested` (the default): nested paging (nested_paging.py, EPT): the
processor translates every guest-physical address through the VMM's nested tables, which
map the guest's RAM and devices and nothing else; an access anywhere else is an EPT
violation (48) that stops the VM with the address named.

Memory, `--paging shadow`: VT-x as it first shipped (2005), before EPT. The processor
walks shadow page tables (shadow_paging.py), so the VMM must see the guest's paging state
change: #PF is set in the exception bitmap (a hidden fault is the VMM's, a true one is
injected), MOV to and from CR3 and INVLPG exit, and the VMM owns CR0.PE/PG/WP and
CR4.PSE/PGE through the CR0/CR4 guest/host masks: the guest reads its own values from the
read shadows, and changing an owned bit exits (SDM 25.6.6). The guest-physical memory is
the machine's RAM as it is, with shadow entries only for the guest's RAM.
"""
import time

from .. import ExitReason
from .._core.exits import VMControl, VMExitReason
from .base import VMM
from .decoder import decode, segment_of
from .faults import VirtualFault, VMMUnsupported
from .guest_memory import GuestMemory, GuestPhysicalError
from .nested_paging import NestedPageTables
from .shadow_paging import PHYSICAL, STOPPING_FAULT, ShadowPageTables
from .stats import Timer

MASK32 = 0xFFFFFFFF
F_IF, F_DF = 0x200, 0x400
UD, GP, PF = 6, 13, 14
CR0_PE, CR0_TS, CR0_WP, CR0_PG = 0x1, 0x8, 0x10000, 0x80000000
CR4_PSE, CR4_PGE = 0x10, 0x80
GPRS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
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
    """The guest's paging state as the guest sees it: the processor's own, but for the
    bits the VMM owns (the read shadows) and, under shadow paging, CR3."""

    def __init__(self, vmm):
        self.vmm = vmm
        self.cpu = vmm.cpu

    @property
    def cr0(self):
        cpu = self.cpu
        return (cpu.cr0 & ~cpu.cr0_mask) | (cpu.cr0_read_shadow & cpu.cr0_mask)

    @property
    def cr4(self):
        cpu = self.cpu
        return (cpu.cr4 & ~cpu.cr4_mask) | (cpu.cr4_read_shadow & cpu.cr4_mask)

    @property
    def cr3(self):
        return self.vmm.guest_cr3 if self.vmm.shadow is not None else self.cpu.cr3

    cpl = property(lambda self: self.cpu.cpl)


class HardwareAssist(VMM):
    mode = "hw"
    CONTROLS = VMControl.HLT_EXITING | VMControl.UNCONDITIONAL_IO_EXITING

    PAGING = ("nested", "shadow")

    def __init__(self, pc, paging="nested"):
        super().__init__(pc)
        if paging not in self.PAGING:
            raise ValueError(f"hw mode's memory virtualization is one of {', '.join(self.PAGING)}, "
                             f"not {paging!r}")
        self.paging = paging
        self.mem = GuestMemory(self.cpu, pc.memory_size, _GuestView(self), pc.mmio_ranges())
        self.nested = None
        self.shadow = None
        self.guest_cr3 = 0
        self.cr3_loads = 0
        self.halted = False
        self.handlers = {
            VMExitReason.HLT: self.exit_hlt,
            VMExitReason.IO_INSTRUCTION: self.exit_io,
            VMExitReason.CPUID: self.exit_cpuid,
            VMExitReason.VMCALL: self.exit_vmcall,
            VMExitReason.INTERRUPT_WINDOW: self.exit_interrupt_window,
            VMExitReason.EPT_VIOLATION: self.exit_ept_violation,
            VMExitReason.EPT_MISCONFIG: self.exit_ept_violation,
            VMExitReason.CR_ACCESS: self.exit_cr_access,
            VMExitReason.INVLPG: self.exit_invlpg,
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
        if self.paging == "nested":
            self.nested = NestedPageTables(cpu, self.pc.memory_size, self.pc.mmio_ranges(), base, size)
            self.nested.enable()
        else:
            self.attach_shadow_paging(base, size)
        # (CPUID always exits in guest mode: the VMM answers it, hypervisor_cpuid)

    def attach_shadow_paging(self, base, size):
        cpu = self.cpu
        if not cpu.cr0 & CR0_PE:
            raise VMMUnsupported("hw mode with shadow paging runs protected-mode guests (as "
                                 "VT-x did before unrestricted guests): use --paging nested")
        cpu.vm_controls |= int(VMControl.CR3_LOAD_EXITING | VMControl.CR3_STORE_EXITING |
                               VMControl.INVLPG_EXITING)
        cpu.exception_intercept = 1 << PF       # the exception bitmap: page faults
        self.guest_cr3 = cpu.cr3
        cpu.cr0_mask, cpu.cr0_read_shadow = CR0_PE | CR0_WP | CR0_PG, cpu.cr0
        cpu.cr4_mask, cpu.cr4_read_shadow = CR4_PSE | CR4_PGE, cpu.cr4
        # (the VMM's region is not mapped into the shadows: the guest runs at ring 0)
        self.shadow = ShadowPageTables(cpu, self.mem, base, size, 0, self.stats, map_vmm=False)
        self.shadow_paging_on()

    def shadow_paging_on(self):
        """The processor always pages, through the shadow of the guest's address space
        (identity while the guest's paging is off), with WP so clean pages can trap."""
        cpu = self.cpu
        guest_cr0 = cpu.cr0_read_shadow
        cpu.reg_write("cr4", cpu.cr4 & ~(CR4_PSE | CR4_PGE))     # shadows: 4 KiB pages
        self.shadow.switch(self.guest_cr3 if guest_cr0 & CR0_PG else PHYSICAL)
        cpu.reg_write("cr0", cpu.cr0 | CR0_PE | CR0_PG | CR0_WP)

    def guest_cr3_loads(self):
        return self.cr3_loads if self.shadow is not None else self.cpu.cr3_loads

    def memory_stats(self):
        stats = super().memory_stats()
        if self.shadow is not None:
            shadow = self.shadow
            stats.update({"hidden faults": shadow.hidden_faults, "true faults": shadow.true_faults,
                          "PT-write traps": shadow.pt_write_traps,
                          "shadow pages": shadow.pages_in_use, "shadow reuses": shadow.reuses})
        return stats

    def interrupts_enabled(self):
        return bool(self.cpu.reg_read("eflags") & F_IF)

    # -- the run loop ----------------------------------------------------------------------
    def run(self, stop):
        cpu = self.cpu
        self.run_stop = stop
        while True:
            if cpu.intr_line:
                # (not before a single-step trap still due: it comes first, SDM table 6-2)
                if cpu.reg_read("eflags") & F_IF and cpu.icount != cpu.inhibit_at and \
                        not cpu.pending_debug:
                    with Timer(self.stats, "interrupt injection (VM entry)"):
                        cpu.vm_controls &= ~VMControl.INTERRUPT_WINDOW_EXITING
                        vector = self.pc.acknowledge_interrupt() & 0xFF
                        cpu.interrupts += 1
                        self.halted = False
                        r = self.inject_event(vector)
                    if r:
                        return ExitReason(r)
                elif not self.halted:
                    # not now: ask the processor to exit as soon as the guest can take it
                    cpu.vm_controls |= VMControl.INTERRUPT_WINDOW_EXITING
            if self.halted:
                return ExitReason.HLT
            stuck = self.stuck()
            if stuck:
                self.stop_message = stuck
                cpu.last_exit = VMMUnsupported(stuck)
                return ExitReason.UNSUPPORTED
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
            if reason == ExitReason.EXCEPTION and cpu.last_exit.vector == PF and self.shadow:
                # exit reason 0 with a #PF: the exception bitmap's (shadow paging)
                with Timer(self.stats, "page fault (hidden)") as t:
                    r = self.exit_page_fault(t)
                if r is not None:
                    return r
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
        self.stop(NestedPageTables.describe_violation(self.cpu))

    # -- shadow paging's exits ---------------------------------------------------------------
    def exit_page_fault(self, timer):
        """A #PF in guest mode (the instruction rolled back, CR2 untouched, the address in
        the exit qualification): the shadow's own fault, or the guest's to inject."""
        cpu = self.cpu
        lin, error = cpu.exit_qualification, cpu.last_exit.error_code or 0
        try:
            guest_error = self.shadow.page_fault(lin, error, bool(error & 4))
        except (VMMUnsupported, GuestPhysicalError) as e:
            timer.reason = STOPPING_FAULT           # not hidden: nothing was filled
            self.stop_message = str(e)
            cpu.last_exit = e
            return ExitReason.UNSUPPORTED
        if guest_error is None:
            if self.shadow.last_fault != "hidden":
                timer.reason = f"page fault ({self.shadow.last_fault})"
            return None
        timer.reason = "exception #PF (injected)"
        r = self.inject_event(PF, guest_error, cr2=lin)
        return ExitReason(r) if r else None

    def inject_event(self, vector, error_code=-1, cr2=None):
        """VM entry with an event to deliver. Under shadow paging the delivery itself
        (the IDT, the handler's stack) may meet a page the shadow has not filled yet: that
        exit is the VMM's own fault, after which the event is injected again (what VT-x
        reports as IDT-vectoring information); a true fault there makes it a #DF."""
        cpu = self.cpu
        for _ in range(16):
            if cr2 is not None:
                cpu.cr2 = cr2
            r = cpu.inject_event(vector, error_code)
            if not (r == ExitReason.EXCEPTION and self.shadow is not None and
                    cpu.last_exit.vector == PF):
                return r
            error = cpu.last_exit.error_code or 0
            t0 = time.perf_counter()
            try:
                guest_error = self.shadow.page_fault(cpu.exit_qualification, error, bool(error & 4))
            except (VMMUnsupported, GuestPhysicalError) as e:
                self.stop_message = str(e)
                cpu.last_exit = e
                return int(ExitReason.UNSUPPORTED)
            self.stats.add_nested("page fault (hidden, in delivery)", time.perf_counter() - t0)
            if guest_error is not None:
                if vector == 8:
                    return int(ExitReason.TRIPLE_FAULT)
                vector, error_code, cr2 = 8, 0, None        # a fault while delivering: #DF
        raise VMMUnsupported(f"cannot deliver vector {vector}: the shadow keeps faulting")

    def exit_cr_access(self):
        """MOV to/from CR3, and changes to the CR0/CR4 bits the VMM owns (qualification:
        bits 0-3 the register, 4-5 the access type, 8-11 the general register, 16-31 LMSW's
        operand; SDM table 28-3)."""
        cpu = self.cpu
        q = cpu.exit_qualification
        n, kind, gpr = q & 0xF, (q >> 4) & 3, GPRS[(q >> 8) & 0xF]
        if n == 3:
            if kind == 1:
                cpu.reg_write(gpr, self.guest_cr3)
            else:
                self.guest_cr3 = cpu.reg_read(gpr) & 0xFFFFF018
                self.cr3_loads += 1
                if cpu.cr0_read_shadow & CR0_PG:
                    self.shadow.switch(self.guest_cr3)
            self.resume_after()
            return
        old = cpu.cr0_read_shadow
        if n == 0:
            if kind == 0:
                value = cpu.reg_read(gpr)
            elif kind == 2:                                  # CLTS
                value = old & ~CR0_TS
            else:                                            # LMSW
                value = (old & ~0xE) | ((q >> 16) & 0xF) | (old & CR0_PE)
            if value & CR0_PG and not value & CR0_PE:
                self.inject(GP, 0)
                return
            if not value & CR0_PE:
                self.stop("hw mode with shadow paging cannot follow the guest out of "
                          "protected mode (use --paging nested)")
                return
            value = (value & 0xE005003F) | 0x10
            cpu.cr0_read_shadow = value
            mask = cpu.cr0_mask
            cpu.reg_write("cr0", (cpu.cr0 & mask) | (value & ~mask))
            if value & CR0_PG and old & CR0_PG and (value ^ old) & CR0_WP:
                self.shadow.flush()                          # new WP rights
            if (value ^ old) & (CR0_PG | CR0_WP):
                self.shadow_paging_on()
        else:
            value = cpu.reg_read(gpr)
            if value & ~(0x1 | 0x4 | 0x8 | CR4_PSE | CR4_PGE):
                self.inject(GP, 0)
                return
            changed = value ^ cpu.cr4_read_shadow
            cpu.cr4_read_shadow = value
            mask = cpu.cr4_mask
            cpu.reg_write("cr4", (cpu.cr4 & mask) | (value & ~mask))
            if changed & (CR4_PSE | CR4_PGE) and cpu.cr0_read_shadow & CR0_PG:
                self.shadow.flush()
        self.resume_after()

    def exit_invlpg(self):
        if self.cpu.cr0_read_shadow & CR0_PG:
            self.shadow.invalidate(self.cpu.exit_qualification)
        self.resume_after()

    def inject(self, vector, error_code=-1):
        r = self.inject_event(vector, error_code)
        if r:
            self.cpu.exit_request = r

    def stop(self, message):
        self.stop_message = message
        self.cpu.last_exit = message
        self.cpu.exit_request = int(ExitReason.UNSUPPORTED)

    def exit_vmcall(self):
        # no hypercall interface in this mode: VMCALL is an invalid opcode to the guest
        r = self.inject_event(UD)
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
        done, allowed = 0, self.string_io_iterations()
        try:
            while count:
                if done == allowed:
                    cpu.icount += done          # interrupted: the rest at the next exit
                    return
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
            self.inject_event(f.vector, f.error_code)
            return
        except GuestPhysicalError as e:
            self.stop_message = str(e)
            cpu.last_exit = e
            cpu.exit_request = int(ExitReason.UNSUPPORTED)
            return
        cpu.eip = (cpu.eip + cpu.exit_instruction_length) & MASK32
        cpu.icount += max(done, 1)
