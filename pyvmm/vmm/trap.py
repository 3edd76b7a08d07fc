"""Trap-and-emulate: the classic VMM (Popek & Goldberg, 1974) on a processor that was never
meant for it.

The guest kernel is *deprivileged*: it runs at ring 1 (ring compression; guest ring 3 stays
at ring 3) with IOPL 0, so every privileged instruction it executes faults with #GP into the
VMM, which decodes it and applies it to the virtual CPU (`VirtualCPU`: the guest's IF,
IOPL, CR0-CR4, GDTR, IDTR, LDTR, TR and ring). The VMM owns the real descriptor tables:

* the real GDT is a *shadow* of the guest's, rebuilt at every LGDT: data segments with
  DPL 0 compressed to DPL 1 and limits truncated below the VMM's 4 MiB at the top of the
  linear space (the same protection VMware's monitor used); code segments marked not
  present, so every far transfer and IRET that loads CS traps and is emulated (which is how
  the VMM always knows the guest's ring and interrupt flag); system descriptors empty;
* the real IDT is empty: every exception and interrupt stops in the VMM (the exception
  intercept bitmap and interrupt exiting stand for the VMM's own handlers), which reflects
  it into the guest through the guest's IDT, exactly as the processor would have delivered
  it (gate checks, TSS stack switch, the frame on the guest's stack);
* there is no real TSS, so IN/OUT always trap and reach the machine's devices through the
  VMM.

The hardware IF follows the guest's virtual IF (the machine has no interrupt sources of
its own, so the guest may keep them waiting). What the VMM cannot see are the instructions
that are sensitive but do not trap at ring 1 (Robin & Irvine, 2000): POPF silently keeps
IF and IOPL, PUSHF shows the real IOPL, SGDT/SIDT/SLDT/STR/SMSW show the VMM's tables,
PUSH CS / MOV from SS show ring 1, LAR/LSL/VERR/VERW see the shadow descriptors. Guests
that rely on those behave differently here: that is the lesson (the `popek-goldberg`
guest probes each one).

When the guest turns paging on, the hardware walks shadow page tables the VMM fills from
the guest's own (shadow_paging.py): guest page faults that only the shadow caused are
hidden, the others reflected.
"""
import struct

from .. import ExitReason
from .base import VMM
from .decoder import decode, effective_address, segment_of
from .descriptors import (A_ACCESSED, A_DPL, A_G, A_P, GATE_INTERRUPT32, GATE_TRAP32,
                          TSS32_AVAILABLE, TSS32_BUSY, Descriptor, compress_dpl, encode)
from .faults import GuestTripleFault, VirtualFault, VMMUnsupported
from .guest_memory import GuestMemory, GuestPhysicalError
from .shadow_paging import STOPPING_FAULT, ShadowPageTables
from .stats import Timer
from .virtual_cpu import VirtualCPU

VMM_BASE = 0xFFC00000            # the VMM's 4 MiB at the top of the linear address space
VMM_SIZE = 4 << 20
SHADOW_GDT = VMM_BASE
SHADOW_IDT = VMM_BASE + 0x10000
SHADOW_TABLES_PAGE = 0x20       # the shadow page tables' pool starts 128 KiB in

DE, DB, NMI, BP, OF, BR, UD, NM, DF = range(9)
TS, NP, SS_, GP, PF = 10, 11, 12, 13, 14
CONTRIBUTORY = (DE, TS, NP, SS_, GP)
F_TF, F_IF, F_DF, F_NT, F_RF, F_VM = 0x100, 0x200, 0x400, 0x4000, 0x10000, 0x20000
F_IOPL = 0x3000
SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs")
MASK32 = 0xFFFFFFFF


def real_ring(cpl):
    """Ring compression: the guest's ring 0 runs at ring 1."""
    return 1 if cpl == 0 else cpl


class TrapAndEmulate(VMM):
    mode = "trap"

    def __init__(self, pc):
        super().__init__(pc)
        self.v = VirtualCPU()
        self.mem = GuestMemory(self.cpu, pc.memory_size, self.v, pc.mmio_ranges())
        self.shadow = None              # shadow page tables, once the guest turns paging on
        self.cr3_loads = 0              # the guest's MOV to CR3, emulated
        self.decoded = {}               # (EIP, bytes) -> decoded trapping instruction
        self.emulators = {
            "cli": self.op_cli, "sti": self.op_sti, "hlt": self.op_hlt,
            "in": self.op_in, "out": self.op_out,
            "insb": self.op_ins, "insw": self.op_ins, "insd": self.op_ins,
            "outsb": self.op_outs, "outsw": self.op_outs, "outsd": self.op_outs,
            "lgdt": self.op_lgdt, "lidt": self.op_lidt, "lldt": self.op_lldt, "ltr": self.op_ltr,
            "mov": self.op_mov, "pop": self.op_pop_sreg,
            "lss": self.op_lxs, "lds": self.op_lxs, "les": self.op_lxs, "lfs": self.op_lxs,
            "lgs": self.op_lxs,
            "clts": self.op_clts, "lmsw": self.op_lmsw, "invlpg": self.op_invlpg,
            "wbinvd": self.op_nop_privileged, "invd": self.op_nop_privileged,
            "rdmsr": self.op_rdmsr, "wrmsr": self.op_wrmsr,
            "iretd": self.op_iret, "ljmp": self.op_far_jmp, "lcall": self.op_far_call,
            "jmp": self.op_far_jmp, "call": self.op_far_call,
            "retf": self.op_retf, "int": self.op_int,
        }

    # ------------------------------------------------------------------------------------
    # Taking over the machine
    # ------------------------------------------------------------------------------------
    def attach(self):
        """The loader left the guest at its entry point at ring 0 (Multiboot state): move
        that state into the virtual CPU and put the guest at ring 1 on the VMM's tables."""
        cpu, v = self.cpu, self.v
        if not cpu.reg_read("cr0") & 1:
            raise VMMUnsupported("trap mode runs protected-mode guests (Multiboot kernels); "
                                 "this one starts in real mode")
        if not cpu.mem.is_mapped(VMM_BASE):
            cpu.mem_map(VMM_BASE, VMM_SIZE)     # (cheaper if the PC was made with it)
        v.cr0, v.cr3, v.cr4 = cpu.cr0, cpu.cr3, cpu.cr4
        v.gdtr = (cpu.gdtr_base, cpu.gdtr_limit)
        v.idtr = (cpu.idtr_base, cpu.idtr_limit)
        flags = cpu.reg_read("eflags")
        v.vif, v.iopl, v.cpl = bool(flags & F_IF), (flags >> 12) & 3, 0
        self.build_shadow_gdt()
        cpu.idtr_base, cpu.idtr_limit = SHADOW_IDT, 0x7FF      # all gates empty
        cpu.ldtr_sel = cpu.ldtr_base = cpu.ldtr_limit = 0
        cpu.tr_sel = cpu.tr_base = cpu.tr_limit = cpu.tr_attr = 0
        for seg in SEGMENTS:
            sel = cpu.get_segment(seg)[0]
            if seg == "cs":
                self.set_cs(sel, self.descriptor(sel), 0)
            else:
                self.load_segment(seg, sel)
        cpu.reg_write("eflags", flags & ~F_IOPL)
        cpu.cpl = 1
        cpu.exception_intercept = 0xFFFFFFFF
        cpu.interrupt_exiting = True

    def build_shadow_gdt(self):
        """The real GDT: the guest's, with DPL 0 compressed to 1, limits truncated below
        the VMM, code segments not present (so CS loads trap) and no system descriptors."""
        base, limit = self.v.gdtr
        raw = self.mem.read(base, limit + 1, user=False) if limit else b""
        out = bytearray(len(raw))
        for i in range(0, len(raw) - 7, 8):
            d = Descriptor.unpack(raw[i:i + 8])
            if i and d.data and d.present:
                lim = self.truncate(d.base, d.limit, d.attr)
                if lim is not None:
                    out[i:i + 8] = encode(d.base, lim, compress_dpl(d.attr))
        self.cpu.mem_write(SHADOW_GDT, bytes(out) or b"\0" * 8)
        self.cpu.gdtr_base, self.cpu.gdtr_limit = SHADOW_GDT, limit

    def truncate(self, base, limit, attr):
        """The limit that keeps [base, base+limit] below the VMM (None: none does)."""
        if attr & 0x400 and not attr & 0x800:         # expand-down data: reaches the top
            raise VMMUnsupported("trap mode cannot truncate an expand-down segment "
                                 "(it would reach the VMM at the top of memory)")
        if base >= VMM_BASE:
            return None
        if base + limit < VMM_BASE:
            return limit
        limit = VMM_BASE - 1 - base
        if attr & A_G:
            limit = ((limit + 1) & ~0xFFF) - 1
        return limit

    # ------------------------------------------------------------------------------------
    # The run loop
    # ------------------------------------------------------------------------------------
    def guest_cr3_loads(self):
        return self.cr3_loads

    def memory_stats(self):
        stats = super().memory_stats()
        shadow = self.shadow
        stats.update({"hidden faults": shadow.hidden_faults if shadow else 0,
                      "true faults": shadow.true_faults if shadow else 0,
                      "PT-write traps": shadow.pt_write_traps if shadow else 0,
                      "shadow pages": shadow.pages_in_use if shadow else 0,
                      "shadow reuses": shadow.reuses if shadow else 0})
        return stats

    def interrupts_enabled(self):
        return self.get_vif()

    def run(self, stop):
        cpu, v = self.cpu, self.v
        self.run_stop = stop
        while True:
            # An interrupt the guest can take now (its IF set, no STI / MOV SS shadow):
            # deliver it through the guest's IDT before resuming it.
            # (not before a single-step trap still due: it comes first, SDM table 6-2)
            if cpu.intr_line and self.get_vif() and cpu.icount != cpu.inhibit_at and \
                    not cpu.pending_debug:
                with self.stats_timer("interrupt (injected)"):
                    r = self.contain(self.inject_interrupt)
                if r is not None:
                    return r
            if v.halted:
                return ExitReason.HLT
            stuck = self.stuck()
            if stuck:
                return self.unsupported(VMMUnsupported(stuck))
            reason = ExitReason(cpu.run(stop))
            r = self.handle(reason)
            if r is not None:
                return r

    def handle(self, reason):
        """Handle one exit; return an ExitReason for the machine, or None to go on."""
        if reason == ExitReason.INTERRUPT:
            return None                 # injected at the top of the loop
        if reason == ExitReason.EXCEPTION:
            e = self.cpu.last_exit
            return self.handle_exception(e.vector, -1 if e.error_code is None else e.error_code,
                                         e.eip, e.software)
        return reason

    def handle_exception(self, vector, error_code, eip, software):
        """An exception the guest raised: emulate, reflect or stop; an ExitReason for the
        machine, or None to go on."""
        r = self.contain(self.on_exception, vector, error_code, eip, software)
        return r if r is not None else self.after_emulation()

    def contain(self, action, *args):
        """Do one piece of the VMM's work for the guest; what the guest made of it that
        cannot go on stops the VM with its reason: a triple fault, something this mode
        does not virtualize, memory the guest does not have. Else what `action`
        returns (None: go on)."""
        try:
            return action(*args)
        except GuestTripleFault as t:
            self.cpu.last_exit = t
            return ExitReason.TRIPLE_FAULT
        except (VMMUnsupported, GuestPhysicalError) as u:
            return self.unsupported(u)

    def after_emulation(self):
        """What the machine must hear of once the VMM is done with an exit."""
        cpu = self.cpu
        if cpu.exit_request:
            # a device the emulated instruction reached wants the machine's attention
            r, cpu.exit_request = cpu.exit_request, 0
            return ExitReason(r)
        if self.v.halted:
            return ExitReason.HLT
        return None

    def unsupported(self, error):
        """Stop the VM: the guest did something this mode cannot virtualize."""
        self.stop_message = str(error)
        self.cpu.last_exit = error
        return ExitReason.UNSUPPORTED

    def stats_timer(self, reason):
        return Timer(self.stats, reason)

    def on_exception(self, vector, error_code, eip, software):
        cpu = self.cpu
        if vector in (GP, NP, SS_, TS):
            insn = self.fetch(eip)
            handler = self.emulators.get(insn.mnemonic) if insn is not None else None
            if handler is not None:
                with self.stats_timer(insn.mnemonic):
                    try:
                        if handler(insn, error_code) is not False:
                            return
                    except VirtualFault as f:
                        self.reflect(f.vector, f.error_code, cpu.eip)
                        return
        if vector == PF and self.shadow is not None:
            with self.stats_timer("page fault (hidden)") as t:
                try:
                    guest_error = self.shadow.page_fault(cpu.cr2, error_code, cpu.cpl == 3)
                except (VMMUnsupported, GuestPhysicalError):
                    t.reason = STOPPING_FAULT       # not hidden: nothing was filled
                    raise
                if guest_error is None:
                    if self.shadow.last_fault != "hidden":
                        t.reason = f"page fault ({self.shadow.last_fault})"
                    return          # the shadow maps it now: the instruction runs again
                t.reason = "exception #PF (reflected)"
                self.v.cr2 = cpu.cr2
                self.reflect(PF, guest_error, eip)
            return
        label = f"exception {EXCEPTION_NAMES.get(vector, vector)} (reflected)"
        with self.stats_timer(label):
            if vector == PF:
                self.v.cr2 = cpu.cr2
            # (INT3 and INTO arrive counted already: the core ran them)
            self.reflect(vector, error_code if vector in (DF, TS, NP, SS_, GP, PF, 17) else -1,
                         eip, software=software, count=not software)

    def read_code(self, linear, n=15, user=None):
        """Up to n bytes of guest code at `linear` (fewer if a page after the first cannot
        be read; none if the first cannot)."""
        try:
            return self.mem.fetch(linear, n, user)
        except (VirtualFault, GuestPhysicalError):
            try:
                return self.mem.fetch(linear, min(n, 0x1000 - (linear & 0xFFF)), user)
            except (VirtualFault, GuestPhysicalError):
                return b""

    def fetch(self, eip):
        """Decode the guest instruction at CS:EIP (None if it cannot be read)."""
        code = self.read_code((self.cpu.get_segment("cs")[1] + eip) & MASK32)
        if not code:
            return None
        # decoding is the dearest part of an exit: remember instructions by their bytes
        key = (eip, code)
        insn = self.decoded.get(key)
        if insn is None:
            if len(self.decoded) >= 4096:
                self.decoded.clear()
            insn = self.decoded[key] = decode(code, eip)
        return insn

    # ------------------------------------------------------------------------------------
    # Helpers: registers, flags, descriptors, the stack
    # ------------------------------------------------------------------------------------
    def reg(self, name):
        return self.cpu.reg_read(name)

    def set_reg(self, name, value):
        self.cpu.reg_write(name, value)

    def advance(self, insn, count=1):
        """The emulated instruction is done: step past it, counted as the hardware would,
        with the single-step trap it would take if TF is set (SDM 17.3.1.4)."""
        cpu = self.cpu
        cpu.eip = (cpu.eip + insn.length) & MASK32
        cpu.icount += count
        if cpu.reg_read("eflags") & F_TF:
            cpu.dr6 |= 0x4000                   # DR6.BS
            self.reflect(DB, -1, cpu.eip)

    def virtual_eflags(self):
        real = self.cpu.reg_read("eflags")
        return (real & ~(F_IOPL | F_IF)) | (self.v.iopl << 12) | (F_IF if self.get_vif() else 0)

    def get_vif(self):
        """The guest's interrupt flag."""
        return self.v.vif

    def set_vif(self, on):
        self.v.vif = bool(on)
        real = self.cpu.reg_read("eflags")
        self.cpu.reg_write("eflags", (real | F_IF) if on else (real & ~F_IF))

    def require_cpl0(self):
        if self.v.cpl != 0:
            raise VirtualFault(GP, 0)

    def virtual_selector(self, sel):
        """What the guest believes a selector register holds: RPL 1 is the VMM's doing."""
        return sel & ~3 if sel & 3 == 1 else sel

    def descriptor(self, sel, error=None):
        """The guest's descriptor for `sel` (GDT or LDT), or #GP(selector)."""
        v = self.v
        if sel & 4:
            base, limit = v.ldtr[1], v.ldtr[2]
            if not v.ldtr[0] & ~3:
                raise VirtualFault(GP, sel & ~3 if error is None else error)
        else:
            base, limit = v.gdtr
        if (sel | 7) > limit:
            raise VirtualFault(GP, sel & ~3 if error is None else error)
        return Descriptor.unpack(self.mem.read(base + (sel & ~7), 8, user=False))

    def set_accessed(self, sel, d):
        if d.system or d.hi & A_ACCESSED:
            return
        base = self.v.ldtr[1] if sel & 4 else self.v.gdtr[0]
        self.mem.write(base + (sel & ~7) + 4, struct.pack("<I", d.hi | A_ACCESSED), user=False)

    def set_cs(self, sel, d, cpl):
        """CS from guest descriptor `d` at guest ring `cpl` (ring-compressed)."""
        limit = self.truncate(d.base, d.limit, d.attr & ~0x400)
        if limit is None:
            raise VMMUnsupported(f"the guest's code segment {sel:#x} lies in the VMM's memory")
        ring = real_ring(cpl)
        attr = (compress_dpl(d.attr) if not d.conforming else d.attr) | A_P | A_ACCESSED
        self.cpu.set_segment("cs", (sel & ~3) | ring, d.base, limit, attr)
        self.cpu.cpl = ring
        self.v.cpl = cpl

    def set_data_segment(self, seg, sel, d):
        limit = self.truncate(d.base, d.limit, d.attr)
        if limit is None:
            raise VMMUnsupported(f"the guest's segment {sel:#x} lies in the VMM's memory")
        real_sel = (sel & ~3) | real_ring(self.v.cpl) if seg == "ss" else sel
        self.cpu.set_segment(seg, real_sel, d.base, limit, compress_dpl(d.attr) | A_ACCESSED)

    def load_segment(self, seg, sel):
        """MOV/POP Sreg and LxS, checked at the guest's ring (SDM MOV: protected mode)."""
        cpl, rpl = self.v.cpl, sel & 3
        if rpl == 1:
            rpl = 0                     # a selector the guest got from a leaked ring-1 value
        if not sel & ~3:
            if seg == "ss":
                raise VirtualFault(GP, 0)
            self.cpu.set_segment(seg, sel, 0, 0, 0)      # null: unusable
            return
        d = self.descriptor(sel)
        if seg == "ss":
            if rpl != cpl or d.dpl != cpl or not d.writable:
                raise VirtualFault(GP, sel & ~3)
            if not d.present:
                raise VirtualFault(SS_, sel & ~3)
        else:
            if not (d.data or (d.code and d.readable)):
                raise VirtualFault(GP, sel & ~3)
            if (d.data or not d.conforming) and max(cpl, rpl) > d.dpl:
                raise VirtualFault(GP, sel & ~3)
            if not d.present:
                raise VirtualFault(NP, sel & ~3)
        self.set_accessed(sel, d)
        self.set_data_segment(seg, sel, d)

    def stack_linear(self, esp):
        return (self.cpu.get_segment("ss")[1] + esp) & MASK32

    def pop32(self, esp, n):
        """n dwords from the guest's stack at `esp` (nothing changes yet)."""
        data = self.mem.read(self.stack_linear(esp), 4 * n)
        return list(struct.unpack(f"<{n}I", data))

    def memory_operand(self, insn, op):
        seg = segment_of(op)
        base = self.cpu.get_segment(seg)[1]
        return (base + effective_address(op, self.reg)) & MASK32

    def operand_value(self, insn, op, size=None):
        from capstone import x86
        if op.type == x86.X86_OP_REG:
            return self.reg(insn.insn.reg_name(op.reg))
        if op.type == x86.X86_OP_IMM:
            return op.imm & MASK32
        size = size or op.size
        data = self.mem.read(self.memory_operand(insn, op), size)
        return int.from_bytes(data, "little")

    # ------------------------------------------------------------------------------------
    # Delivering exceptions and interrupts into the guest (SDM 6.12)
    # ------------------------------------------------------------------------------------
    def inject_interrupt(self):
        """An external interrupt for the guest: the INTA cycle, then the guest's handler."""
        vector = self.pc.acknowledge_interrupt() & 0xFF
        self.v.halted = False
        self.cpu.interrupts += 1
        self.reflect(vector, -1, self.cpu.eip, external=True)

    def reflect(self, vector, error_code, return_eip, software=False, external=False,
                fault_eip=None, count=True):
        """Deliver an exception or interrupt through the guest's IDT, escalating to #DF and
        to a triple fault as the processor does (SDM table 6-5). If delivering INT n
        faults, the fault's saved EIP is the INT instruction's (`fault_eip`)."""
        first = vector
        while True:
            try:
                self.deliver(vector, error_code, return_eip, software, external)
                if count:
                    self.cpu.icount += 1    # a delivery is a step of guest time, as natively
                return
            except VirtualFault as f:
                if vector == DF:
                    raise GuestTripleFault(f"triple fault in the guest: {EXCEPTION_NAMES.get(first)} "
                                           f"could not be delivered (then #DF, then "
                                           f"{EXCEPTION_NAMES.get(f.vector)})") from None
                if (vector in CONTRIBUTORY and f.vector in CONTRIBUTORY) or \
                        (vector == PF and (f.vector == PF or f.vector in CONTRIBUTORY)):
                    vector, error_code = DF, 0
                else:
                    vector, error_code = f.vector, f.error_code
                if vector == PF:
                    self.v.cr2 = self.cpu.cr2
                if fault_eip is not None:
                    return_eip = fault_eip
                software = False
                external = False

    def gate(self, vector, ext):
        """The guest's IDT entry for `vector`."""
        idt_base, idt_limit = self.v.idtr
        if vector * 8 + 7 > idt_limit:
            raise VirtualFault(GP, vector * 8 + 2 + ext)
        return Descriptor.unpack(self.mem.read(idt_base + vector * 8, 8, user=False))

    def inner_stack(self, cpl, ext):
        """SS:ESP for ring `cpl` from the guest's TSS."""
        tss_sel, tss_base, tss_limit = self.v.tr
        at = 4 + 8 * cpl
        if not tss_sel & ~3 or at + 5 > tss_limit:
            raise VirtualFault(TS, (tss_sel & ~3) + ext)
        new_esp = self.mem.read_u32(tss_base + at, user=False)
        new_ss = self.mem.read_u16(tss_base + at + 4, user=False)
        return new_ss, new_esp

    def deliver(self, vector, error_code, return_eip, software, external):
        cpu, v = self.cpu, self.v
        ext = 1 if external else 0
        gate = self.gate(vector, ext)
        if gate.type == 0x5:
            raise VMMUnsupported(f"task gate for vector {vector:#x} (task switches are not "
                                 f"virtualized)")
        if gate.type not in (GATE_INTERRUPT32, GATE_TRAP32) or not gate.system:
            raise VirtualFault(GP, vector * 8 + 2 + ext)
        if software and gate.dpl < v.cpl:
            raise VirtualFault(GP, vector * 8 + 2)
        if not gate.present:
            raise VirtualFault(NP, vector * 8 + 2 + ext)
        sel = gate.gate_selector
        if not sel & ~3:
            raise VirtualFault(GP, ext)
        target = self.descriptor(sel, (sel & ~3) + ext)
        if not target.code or target.dpl > v.cpl:
            raise VirtualFault(GP, (sel & ~3) + ext)
        if not target.present:
            raise VirtualFault(NP, (sel & ~3) + ext)
        flags = self.virtual_eflags()
        old_cs = self.virtual_selector(cpu.get_segment("cs")[0])
        old_ss = self.virtual_selector(cpu.get_segment("ss")[0])
        esp = self.reg("esp")
        frame = [return_eip & MASK32, old_cs, flags]
        new_cpl = v.cpl
        if not target.conforming and target.dpl < v.cpl:
            # to an inner ring: the stack from the guest's TSS
            new_cpl = target.dpl
            new_ss, new_esp = self.inner_stack(new_cpl, ext)
            ssd = self.descriptor(new_ss, (new_ss & ~3) + ext) if new_ss & ~3 else None
            if ssd is None or (new_ss & 3) != new_cpl or ssd.dpl != new_cpl or not ssd.writable:
                raise VirtualFault(TS, (new_ss & ~3) + ext)
            if not ssd.present:
                raise VirtualFault(SS_, (new_ss & ~3) + ext)
            frame += [esp, old_ss]
            words = ([error_code] if error_code >= 0 else []) + frame
            top = (new_esp - 4 * len(words)) & MASK32
            self.mem.write((ssd.base + top) & MASK32, struct.pack(f"<{len(words)}I", *words),
                           user=False)
            v.cpl = new_cpl
            self.set_data_segment("ss", new_ss, ssd)
            self.set_reg("esp", top)
        else:
            words = ([error_code] if error_code >= 0 else []) + frame
            top = (esp - 4 * len(words)) & MASK32
            self.mem.write(self.stack_linear(top), struct.pack(f"<{len(words)}I", *words),
                           user=v.cpl == 3)
            self.set_reg("esp", top)
        self.set_cs(sel, target, new_cpl)
        cpu.eip = gate.gate_offset
        real = cpu.reg_read("eflags") & ~(F_TF | F_NT | F_RF | F_VM)
        cpu.reg_write("eflags", real)
        if gate.type == GATE_INTERRUPT32:
            self.set_vif(False)
        v.halted = False

    # ------------------------------------------------------------------------------------
    # The emulated instructions. Each either completes the instruction in the virtual CPU
    # or raises the VirtualFault the processor would raise in the guest's place.
    # ------------------------------------------------------------------------------------
    def op_cli(self, insn, err):
        if self.v.cpl > self.v.iopl:
            raise VirtualFault(GP, 0)
        self.set_vif(False)
        self.advance(insn)

    def op_sti(self, insn, err):
        if self.v.cpl > self.v.iopl:
            raise VirtualFault(GP, 0)
        was = self.get_vif()
        self.set_vif(True)
        self.advance(insn)
        if not was:
            self.cpu.inhibit_at = self.cpu.icount       # the next instruction runs first

    def op_hlt(self, insn, err):
        self.require_cpl0()
        self.advance(insn)
        self.v.halted = True

    def io_allowed(self, port, size):
        """IOPL, then the I/O permission bitmap of the guest's TSS (SDM 19.5)."""
        v = self.v
        if v.cpl <= v.iopl:
            return True
        sel, base, limit = v.tr
        if not sel & ~3 or limit < 0x67:
            return False
        bitmap = self.mem.read_u16(base + 0x66, user=False)
        at = bitmap + (port >> 3)
        if at + 1 > limit:
            return False
        bits = self.mem.read_u16(base + at, user=False)
        return not (bits >> (port & 7)) & ((1 << size) - 1)

    def port_of(self, insn):
        from capstone import x86
        for op in insn.operands:
            if op.type == x86.X86_OP_IMM:
                return op.imm & 0xFF
        return self.reg("edx") & 0xFFFF

    def op_in(self, insn, err):
        size, port = insn.opsize, self.port_of(insn)
        if not self.io_allowed(port, size):
            raise VirtualFault(GP, 0)
        value = self.pc.ports.read(port, size)
        self.set_reg({1: "al", 2: "ax", 4: "eax"}[size], value)
        self.advance(insn)

    def op_out(self, insn, err):
        size, port = insn.opsize, self.port_of(insn)
        if not self.io_allowed(port, size):
            raise VirtualFault(GP, 0)
        self.pc.ports.write(port, size, self.reg("eax") & ((1 << 8 * size) - 1))
        self.advance(insn)

    def _string_io(self, insn, output):
        size, port = insn.opsize, self.reg("edx") & 0xFFFF
        if not self.io_allowed(port, size):
            raise VirtualFault(GP, 0)
        step = -size if self.cpu.reg_read("eflags") & F_DF else size
        count = self.reg("ecx") if insn.rep else 1
        done, allowed = 0, self.string_io_iterations()
        while count:
            if done == allowed:
                self.cpu.icount += done         # interrupted: the rest at the next exit
                return
            if output:
                si = self.reg("esi")
                seg = "ds"
                from capstone import x86
                for op in insn.operands:
                    if op.type == x86.X86_OP_MEM:
                        seg = segment_of(op)
                data = self.mem.read((self.cpu.get_segment(seg)[1] + si) & MASK32, size)
                self.pc.ports.write(port, size, int.from_bytes(data, "little"))
                self.set_reg("esi", si + step)
            else:
                di = self.reg("edi")
                value = self.pc.ports.read(port, size)
                self.mem.write((self.cpu.get_segment("es")[1] + di) & MASK32,
                               value.to_bytes(size, "little"))
                self.set_reg("edi", di + step)
            count -= 1
            done += 1
            if insn.rep:
                self.set_reg("ecx", count)
        self.advance(insn, max(done, 1))

    def op_ins(self, insn, err):
        self._string_io(insn, False)

    def op_outs(self, insn, err):
        self._string_io(insn, True)

    def _table_register(self, insn):
        self.require_cpl0()
        at = self.memory_operand(insn, insn.operands[0])
        limit = self.mem.read_u16(at)
        base = self.mem.read_u32(at + 2)
        return base, limit

    def op_lgdt(self, insn, err):
        self.v.gdtr = self._table_register(insn)
        self.build_shadow_gdt()
        self.advance(insn)

    def op_lidt(self, insn, err):
        self.v.idtr = self._table_register(insn)
        self.advance(insn)

    def op_lldt(self, insn, err):
        self.require_cpl0()
        sel = self.operand_value(insn, insn.operands[0], 2) & 0xFFFF
        if not sel & ~3:
            self.v.ldtr = (0, 0, 0)
        else:
            if sel & 4:
                raise VirtualFault(GP, sel & ~3)
            d = self.descriptor(sel)
            if not d.system or d.type != 0x2:
                raise VirtualFault(GP, sel & ~3)
            if not d.present:
                raise VirtualFault(NP, sel & ~3)
            self.v.ldtr = (sel, d.base, d.limit)
        self.advance(insn)

    def op_ltr(self, insn, err):
        self.require_cpl0()
        sel = self.operand_value(insn, insn.operands[0], 2) & 0xFFFF
        if not sel & ~3 or sel & 4:
            raise VirtualFault(GP, sel & ~3)
        d = self.descriptor(sel)
        if not d.system or d.type != TSS32_AVAILABLE:
            raise VirtualFault(GP, sel & ~3)
        if not d.present:
            raise VirtualFault(NP, sel & ~3)
        self.mem.write(self.v.gdtr[0] + (sel & ~7) + 4,
                       struct.pack("<I", (d.hi & ~0xF00) | (TSS32_BUSY << 8)), user=False)
        self.v.tr = (sel, d.base, d.limit)
        self.advance(insn)

    def op_mov(self, insn, err):
        """MOV to/from CRn and DRn, and MOV to a segment register."""
        from capstone import x86
        dst, src = insn.operands
        name = lambda op: insn.insn.reg_name(op.reg) if op.type == x86.X86_OP_REG else ""
        d, s = name(dst), name(src)
        if d in ("ss", "ds", "es", "fs", "gs"):
            self.load_segment(d, self.operand_value(insn, src, 2) & 0xFFFF)
            self.advance(insn)
            if d == "ss":
                self.cpu.inhibit_at = self.cpu.icount
            return
        if d.startswith("cr") or s.startswith("cr"):
            self.require_cpl0()
            if d.startswith("cr"):
                self.write_cr(int(d[2:]), self.reg(s))
            else:
                self.set_reg(d, self.read_cr(int(s[2:])))
            self.advance(insn)
            return
        if d.startswith("dr") or s.startswith("dr"):
            self.require_cpl0()
            if d.startswith("dr"):
                self.v.dr[int(d[2:])] = self.reg(s)
            else:
                self.set_reg(d, self.v.dr[int(s[2:])])
            self.advance(insn)
            return
        return False                    # an ordinary MOV that faulted: the guest's #GP

    def read_cr(self, n):
        v = self.v
        if n == 0:
            return v.cr0
        if n == 2:
            return v.cr2
        if n == 3:
            return v.cr3
        if n == 4:
            return v.cr4
        raise VirtualFault(UD)

    def write_cr(self, n, value):
        v, cpu = self.v, self.cpu
        if n == 0:
            if value & 0x80000000 and not value & 1:
                raise VirtualFault(GP, 0)
            if not value & 1:
                raise VMMUnsupported("the guest left protected mode (trap mode runs it only "
                                     "in protected mode)")
            was_paging = v.cr0 & 0x80000000
            old = v.cr0
            v.cr0 = value | 0x10
            # the hardware follows the guest's TS, EM and MP (so #NM happens natively)
            real = (cpu.cr0 & ~0xE) | (value & 0xE)
            if value & 0x80000000:
                if self.shadow is None:
                    self.shadow = ShadowPageTables(cpu, self.mem, VMM_BASE, VMM_SIZE,
                                                   SHADOW_TABLES_PAGE, self.stats)
                elif was_paging and (v.cr0 ^ old) & 0x10000:
                    self.shadow.flush()             # new WP rights: every entry changes
                cpu.reg_write("cr4", 0)             # the shadow uses 4 KiB pages only
                self.shadow.switch(v.cr3)
                real |= 0x80010000                  # PG, and WP so clean pages can trap
            else:
                real &= ~0x80010000
            cpu.reg_write("cr0", real)
        elif n == 2:
            v.cr2 = value
        elif n == 3:
            v.cr3 = value
            self.cr3_loads += 1
            if v.cr0 & 0x80000000:
                self.shadow.switch(value)           # that address space's shadow, cached or new
        elif n == 4:
            if value & ~0x3FF:
                raise VirtualFault(GP, 0)
            changed = v.cr4 ^ value
            v.cr4 = value
            if v.cr0 & 0x80000000 and changed & 0x90:   # PSE or PGE: translations change
                self.shadow.flush()
        else:
            raise VirtualFault(UD)

    def op_clts(self, insn, err):
        self.require_cpl0()
        self.v.cr0 &= ~0x8
        self.cpu.cr0 &= ~0x8
        self.advance(insn)

    def op_lmsw(self, insn, err):
        self.require_cpl0()
        value = self.operand_value(insn, insn.operands[0], 2) & 0xF
        new = (self.v.cr0 & ~0xE) | value | (self.v.cr0 & 1)
        self.write_cr(0, new)
        self.advance(insn)

    def op_invlpg(self, insn, err):
        self.require_cpl0()
        if self.shadow is not None and self.v.cr0 & 0x80000000:
            self.shadow.invalidate(self.memory_operand(insn, insn.operands[0]))
        self.advance(insn)

    def op_nop_privileged(self, insn, err):
        self.require_cpl0()
        self.advance(insn)

    def op_rdmsr(self, insn, err):
        self.require_cpl0()
        msr = self.reg("ecx")
        if msr == 0x10:
            value = self.cpu.icount + self.cpu.tsc_offset + 1
        elif msr == 0x1B:
            value = self.cpu.apic_base
        else:
            raise VirtualFault(GP, 0)
        self.set_reg("eax", value & MASK32)
        self.set_reg("edx", (value >> 32) & MASK32)
        self.advance(insn)

    def op_wrmsr(self, insn, err):
        self.require_cpl0()
        msr = self.reg("ecx")
        value = (self.reg("edx") << 32) | self.reg("eax")
        if msr == 0x10:
            self.cpu.tsc_offset = (value - self.cpu.icount - 1) & ((1 << 64) - 1)
        elif msr == 0x1B:
            self.cpu.apic_base = value & MASK32
        else:
            raise VirtualFault(GP, 0)
        self.advance(insn)

    def op_pop_sreg(self, insn, err):
        from capstone import x86
        op = insn.operands[0]
        if op.type != x86.X86_OP_REG:
            return False
        seg = insn.insn.reg_name(op.reg)
        if seg not in ("ss", "ds", "es", "fs", "gs"):
            return False
        esp = self.reg("esp")
        sel = self.pop32(esp, 1)[0] & 0xFFFF
        self.load_segment(seg, sel)
        self.set_reg("esp", esp + 4)
        self.advance(insn)
        if seg == "ss":
            self.cpu.inhibit_at = self.cpu.icount

    def op_lxs(self, insn, err):
        reg, mem = insn.operands
        at = self.memory_operand(insn, mem)
        offset = self.mem.read_u32(at)
        sel = self.mem.read_u16(at + 4)
        self.load_segment(insn.mnemonic[1:], sel)
        self.set_reg(insn.insn.reg_name(reg.reg), offset)
        self.advance(insn)

    # -- transfers that load CS ------------------------------------------------------------
    def far_target(self, insn):
        """(selector, offset) of a far JMP/CALL, direct or through memory; None if the
        instruction is a near one."""
        from capstone import x86
        ops = insn.operands
        if insn.mnemonic in ("ljmp", "lcall") and len(ops) == 2:
            return ops[0].imm & 0xFFFF, ops[1].imm & MASK32
        # FF /3 and FF /5 with a memory operand: m16:32 (capstone's operand size for FF /3
        # is not reliable, so the ModRM reg field decides)
        if len(ops) == 1 and ops[0].type == x86.X86_OP_MEM and \
                insn.insn.opcode[0] == 0xFF and (insn.insn.modrm >> 3) & 7 in (3, 5):
            at = self.memory_operand(insn, ops[0])
            return self.mem.read_u16(at + 4), self.mem.read_u32(at)
        return None

    def code_target(self, sel, offset):
        """The checks of a far JMP/CALL to a code segment at the guest's ring."""
        cpl = self.v.cpl
        if not sel & ~3:
            raise VirtualFault(GP, 0)
        d = self.descriptor(sel)
        if d.system:
            raise VMMUnsupported(f"far transfer through a gate or TSS (selector {sel:#x}): "
                                 f"not virtualized in trap mode")
        if not d.code:
            raise VirtualFault(GP, sel & ~3)
        rpl = 0 if sel & 3 == 1 else sel & 3
        if d.conforming and d.dpl > cpl or not d.conforming and (rpl > cpl or d.dpl != cpl):
            raise VirtualFault(GP, sel & ~3)
        if not d.present:
            raise VirtualFault(NP, sel & ~3)
        if offset > d.limit:
            raise VirtualFault(GP, 0)
        return d

    def op_far_jmp(self, insn, err):
        target = self.far_target(insn)
        if target is None:
            return False
        sel, offset = target
        d = self.code_target(sel, offset)
        self.set_accessed(sel, d)
        self.set_cs(sel, d, self.v.cpl)
        self.cpu.eip = offset
        self.cpu.icount += 1

    def op_far_call(self, insn, err):
        target = self.far_target(insn)
        if target is None:
            return False
        sel, offset = target
        d = self.code_target(sel, offset)
        esp = self.reg("esp")
        old_cs = self.virtual_selector(self.cpu.get_segment("cs")[0])
        ret = (self.cpu.eip + insn.length) & MASK32
        top = (esp - 8) & MASK32
        self.mem.write(self.stack_linear(top), struct.pack("<II", ret, old_cs))
        self.set_reg("esp", top)
        self.set_accessed(sel, d)
        self.set_cs(sel, d, self.v.cpl)
        self.cpu.eip = offset
        self.cpu.icount += 1

    def op_retf(self, insn, err):
        from capstone import x86
        imm = insn.operands[0].imm if insn.operands and insn.operands[0].type == x86.X86_OP_IMM else 0
        esp = self.reg("esp")
        eip, cs = self.pop32(esp, 2)
        cs &= 0xFFFF
        self._return(cs, eip, esp + 8 + imm, insn, outer_extra=imm)

    def op_iret(self, insn, err):
        if self.cpu.reg_read("eflags") & F_NT:
            raise VMMUnsupported("IRET with NT set (a task return): task switches are not "
                                 "virtualized")
        esp = self.reg("esp")
        eip, cs, flags = self.pop32(esp, 3)
        if flags & F_VM and self.v.cpl == 0:
            raise VMMUnsupported("IRET to virtual-8086 mode is not virtualized")
        self._return(cs & 0xFFFF, eip, esp + 12, insn, flags=flags)

    def _return(self, cs, eip, esp, insn, flags=None, outer_extra=0):
        """RETF / IRET: to the same ring, or to an outer one with SS:ESP from the stack."""
        v = self.v
        if not cs & ~3:
            raise VirtualFault(GP, 0)
        rpl = 0 if cs & 3 == 1 else cs & 3
        if rpl < v.cpl:
            raise VirtualFault(GP, cs & ~3)
        d = self.descriptor(cs)
        if not d.code or (d.conforming and d.dpl > rpl) or (not d.conforming and d.dpl != rpl):
            raise VirtualFault(GP, cs & ~3)
        if not d.present:
            raise VirtualFault(NP, cs & ~3)
        if eip > d.limit:
            raise VirtualFault(GP, 0)
        new_ss = None
        if rpl > v.cpl:
            new_esp, new_ss = self.pop32(esp, 2)
            new_ss &= 0xFFFF
            new_esp = (new_esp + outer_extra) & MASK32
            if not new_ss & ~3:
                raise VirtualFault(GP, 0)
            ssd = self.descriptor(new_ss)
            if (new_ss & 3) != rpl or ssd.dpl != rpl or not ssd.writable:
                raise VirtualFault(GP, new_ss & ~3)
            if not ssd.present:
                raise VirtualFault(SS_, new_ss & ~3)
        old_cpl = v.cpl
        if flags is not None:
            self.restore_flags(flags, old_cpl)
        self.set_cs(cs, d, rpl)
        self.cpu.eip = eip
        if new_ss is not None:
            self.set_data_segment("ss", new_ss, ssd)
            self.set_reg("esp", new_esp)
            # data segments the outer ring may not use become null (SDM IRET/RET)
            for seg in ("es", "ds", "fs", "gs"):
                sel, _, _, attr = self.cpu.get_segment(seg)
                dpl = (attr & A_DPL) >> 13
                dpl = 0 if dpl == 1 else dpl
                code, conforming = attr & 0x800, attr & 0x400
                if sel & ~3 and (not code or not conforming) and dpl < rpl:
                    self.cpu.set_segment(seg, 0, 0, 0, 0)
        else:
            self.set_reg("esp", esp)
        self.cpu.icount += 1

    def restore_flags(self, flags, cpl):
        """IRET's EFLAGS: IOPL only at ring 0, IF only when CPL <= IOPL (the virtual ones)."""
        v = self.v
        if cpl == 0:
            v.iopl = (flags >> 12) & 3
        vif = bool(flags & F_IF) if cpl <= v.iopl else self.get_vif()
        keep = 0x2 | (flags & 0x254FD5 & ~(F_IOPL | F_IF | F_VM))
        self.cpu.reg_write("eflags", keep | (self.cpu.reg_read("eflags") & F_IF))
        self.set_vif(vif)

    def op_int(self, insn, err):
        """INT n: the real IDT is empty, so it faults; deliver it through the guest's."""
        vector = insn.operands[0].imm & 0xFF
        self.reflect(vector, -1, (self.cpu.eip + insn.length) & MASK32, software=True,
                     fault_eip=self.cpu.eip)


EXCEPTION_NAMES = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD",
                   7: "#NM", 8: "#DF", 9: "CSO", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP",
                   14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC", 19: "#XM"}
