"""Binary translation, in the style of VMware's monitor (Adams & Agesen, ASPLOS 2006).

The guest kernel never runs its own code: the VMM translates it, a block at a time and on
demand, into a *translation cache* in the VMM's memory, and the processor runs the
translations (binary_translator.py says what becomes of each instruction). Guest user
code (ring 3) runs directly, as under trap-and-emulate, whose machinery this class reuses
for everything it hands to the VMM.

Where the translations live, and why the guest cannot touch them: the VMM's 4 MiB sit at
the top of the linear address space, above the limit of every segment the guest can load
(its descriptors are copied into the VMM's GDT with their limits cut short: *segment
truncation*, VMware's choice for 32-bit x86, where paging alone could not have hidden a
region from a guest that controls its own page tables). Translated code runs on a VMM code
segment that does reach up there, and reaches the virtual CPU (the interrupt flag that
CLI/STI/PUSHF/POPF use inline) through GS, which the VMM keeps for itself while translated
code runs; the guest's own GS is virtual meanwhile, and instructions that use it are
handed to the VMM. The hardware always runs with paging on, through the shadow page
tables (an identity map while the guest has paging off), so that pages holding translated
guest code can be kept read-only: a write to one is caught, and if it changes code that
was translated, the translations are thrown away.

What the processor runs is the translation, so the instruction count of a run is the
number of translated instructions (inline sequences count each instruction), not the
guest's.
"""
import contextlib
import struct

from .. import ExitReason
from .binary_translator import WINDOW_NOP, TranslationCache, Translator
from .faults import VirtualFault, VMMUnsupported
from .guest_memory import GuestPhysicalError
from .shadow_paging import PHYSICAL, ShadowPageTables
from .trap import F_IF, F_TF, MASK32, SHADOW_TABLES_PAGE, VMM_BASE, VMM_SIZE, TrapAndEmulate
from .trap import UD as UD_VECTOR

VCPU = 0x200000                         # offsets in the VMM's GS segment (base VMM_BASE)
VIF, VIOPL, SCRATCH = VCPU, VCPU + 4, VCPU + 8      # (SCRATCH: three dwords)
RET_TABLE = 0x1C0000                    # 64 Ki dwords: return targets' landing pads
TC_START, TC_END = VMM_BASE + 0x201000, VMM_BASE + VMM_SIZE
SHADOW_POOL_END = VMM_BASE + RET_TABLE
VMM_CS = 0xFFF0 | 1                     # the last two entries of the VMM's 64 KiB GDT
VMM_GS = 0xFFF8 | 1
VMM_CS_ATTR = 0xC0B900                  # 32-bit, 4 GiB, DPL 1, execute-only
VMM_GS_ATTR = 0xC0B300                  # 32-bit, DPL 1, read/write data


class BinaryTranslation(TrapAndEmulate):
    mode = "bt"

    def __init__(self, pc):
        super().__init__(pc)
        self.tc = TranslationCache(self.cpu, TC_START, TC_END)
        self.translator = Translator(self, self.tc, VIF, VIOPL, SCRATCH, RET_TABLE)
        self.in_tc = False
        self.guest_cs = self.guest_gs = None
        self.armed = False
        self.code_write = None          # a protected code page the guest is writing to
        self.emulators_bt = {
            "sgdt": self.bt_sgdt, "sidt": self.bt_sidt, "sldt": self.bt_sldt,
            "str": self.bt_str, "smsw": self.bt_smsw, "lar": self.bt_lar, "lsl": self.bt_lsl,
            "verr": self.bt_verr, "verw": self.bt_verw, "mov": self.bt_mov_sreg,
            "push": self.bt_push_sreg,
        }

    # -- taking over -------------------------------------------------------------------------
    def attach(self):
        super().attach()
        cpu = self.cpu
        cpu.gdtr_limit = 0xFFFF                         # (the VMM's two entries at the end)
        self.write_vmm_descriptors()
        self.shadow = ShadowPageTables(cpu, self.mem, VMM_BASE, VMM_SIZE, SHADOW_TABLES_PAGE,
                                       self.stats, pool_end=SHADOW_POOL_END)
        self.shadow.on_protected_write = self.protected_write
        self.real_paging_on()
        self.init_return_table()

    def init_return_table(self):
        """An empty cache: one stub for returns not seen yet, and every table entry on it."""
        from .binary_translator import Callout, UD2
        self.ret_miss = self.tc.put(UD2)
        self.tc.callouts[self.ret_miss] = Callout("retmiss", 0)
        self.cpu.mem_write(VMM_BASE + RET_TABLE, struct.pack("<I", self.ret_miss) * (1 << 16))

    def build_shadow_gdt(self):
        super().build_shadow_gdt()
        self.cpu.gdtr_limit = 0xFFFF
        self.write_vmm_descriptors()

    def write_vmm_descriptors(self):
        from .descriptors import encode
        self.cpu.mem_write(VMM_BASE + (VMM_CS & ~7), encode(0, 0xFFFFFFFF, VMM_CS_ATTR))
        self.cpu.mem_write(VMM_BASE + (VMM_GS & ~7), encode(VMM_BASE, VMM_SIZE - 1, VMM_GS_ATTR))

    def real_paging_on(self):
        """The hardware always pages, through the shadow (identity while the guest does not)."""
        cpu = self.cpu
        if not cpu.cr0 & 0x80000000:
            cpu.reg_write("cr4", 0)
            self.shadow.switch(self.v.cr3 if self.v.cr0 & 0x80000000 else PHYSICAL)
            cpu.reg_write("cr0", cpu.cr0 | 0x80010000)

    def write_cr(self, n, value):
        super().write_cr(n, value)
        self.real_paging_on()
        if n in (0, 4) or (n == 3 and not self.translations_still_mapped()):
            # another address space (or none) that does not map the same code at the same
            # addresses: the translations are of code that is not there
            self.flush_translations()

    def translations_still_mapped(self):
        """After a CR3 load: does the new address space map every page of translated code
        to the frame it was translated from? A kernel is mapped alike in every process,
        so a switch between processes keeps the translation cache (VMware's did too: its
        translations were keyed by linear address and checked against the mapping)."""
        for page, frame in self.tc.page_frames.items():
            try:
                found = self.mem.walk(page << 12)
            except GuestPhysicalError:
                return False
            if found is None or found[0] >> 12 != frame:
                return False
        return True

    # -- world switches: translated code <-> the guest as trap-and-emulate sees it -------------
    def to_tc(self):
        """Resume the guest kernel in the translation cache."""
        cpu, v = self.cpu, self.v
        self.guest_cs = cpu.get_segment("cs")
        self.guest_gs = cpu.get_segment("gs")
        cpu.mem_write(VMM_BASE + VIF, bytes([1 if v.vif else 0]))
        cpu.mem_write(VMM_BASE + VIOPL, struct.pack("<I", v.iopl << 12))
        target = self.dispatch(cpu.eip)
        cpu.set_segment("cs", VMM_CS, 0, 0xFFFFFFFF, VMM_CS_ATTR)
        cpu.set_segment("gs", VMM_GS, VMM_BASE, VMM_SIZE - 1, VMM_GS_ATTR)
        flags = cpu.reg_read("eflags")
        cpu.reg_write("eflags", (flags & ~F_IF) if self.armed else (flags | F_IF))
        cpu.eip = target
        self.in_tc = True

    def to_guest(self):
        """Back to the guest's own state at the guest instruction the translation was at
        (the processor must be at a guest instruction boundary, or on a faulting one)."""
        cpu, v = self.cpu, self.v
        geip, delta, _, restore = self.tc.map[cpu.eip]
        if delta:
            cpu.reg_write("esp", (cpu.reg_read("esp") - delta) & MASK32)
        if restore:                     # an inline sequence had borrowed EAX and ECX
            eax, ecx = struct.unpack("<II", cpu.mem_read(VMM_BASE + SCRATCH + 4, 8))
            cpu.reg_write("eax", eax)
            cpu.reg_write("ecx", ecx)
        v.vif = cpu.mem_read(VMM_BASE + VIF, 1)[0] != 0
        v.iopl = (struct.unpack("<I", cpu.mem_read(VMM_BASE + VIOPL, 4))[0] >> 12) & 3
        cpu.set_segment("cs", *self.guest_cs)
        cpu.set_segment("gs", *self.guest_gs)
        flags = cpu.reg_read("eflags")
        cpu.reg_write("eflags", (flags | F_IF) if v.vif else (flags & ~F_IF))
        cpu.eip = geip
        self.in_tc = False

    def at_boundary(self):
        entry = self.tc.map.get(self.cpu.eip)
        return entry is not None and entry[2]

    def step_to_boundary(self):
        """Finish an inline sequence the processor stopped in the middle of."""
        cpu = self.cpu
        with self.interrupts_held():
            for _ in range(64):
                if self.at_boundary():
                    return
                reason = ExitReason(cpu.run(cpu.icount + 1))
                if reason == ExitReason.EXCEPTION and cpu.last_exit.vector == UD_VECTOR:
                    callout = self.tc.callouts.get(cpu.last_exit.eip)
                    if callout is not None and callout.kind in ("branch", "retmiss"):
                        self.follow(cpu.last_exit.eip, callout)
                        continue
                if reason not in (ExitReason.COUNT, ExitReason.REQUEST):
                    raise VMMUnsupported(f"binary translation: {reason.name} inside an inline "
                                         f"sequence at {cpu.eip:#x}")
            raise VMMUnsupported(f"binary translation: no guest instruction boundary near "
                                 f"{cpu.eip:#x}")

    @contextlib.contextmanager
    def interrupts_held(self):
        """Run the processor a step at a time without it taking an interrupt meanwhile
        (interrupt exiting off, IF clear), then put both back."""
        cpu = self.cpu
        flags = cpu.reg_read("eflags")
        cpu.interrupt_exiting = False
        cpu.reg_write("eflags", flags & ~F_IF)
        try:
            yield
        finally:
            cpu.interrupt_exiting = True
            cpu.reg_write("eflags", cpu.reg_read("eflags") & ~F_IF | (flags & F_IF))

    def dispatch(self, guest_eip):
        """The translation-cache address for guest EIP (translating it if need be)."""
        cs_base = self.guest_cs[1]
        linear = (cs_base + guest_eip) & MASK32
        tc_addr = self.tc.entry.get(linear)
        if tc_addr is None:
            with self.stats_timer("bt: translate"):
                block = self.new_block(guest_eip, cs_base)
            tc_addr = block.tc
        return tc_addr

    def new_block(self, guest_eip, cs_base):
        windows = len(self.tc.windows)
        block = self.translator.translate(guest_eip, cs_base, self.guest_cs[0] & ~3)
        for frame in block.frames:
            self.shadow.protect(frame)
        if self.armed:                  # an interrupt is waiting: its STIs must call out too
            self.patch_windows(self.tc.windows[windows:])
        return block

    def patch_windows(self, windows):
        for slot, stub in windows:
            self.cpu.mem_write(slot, b"\xe9" + struct.pack("<i", stub - (slot + 5)))

    def flush_translations(self):
        self.tc.reset()
        self.init_return_table()
        self.armed = False
        if self.shadow is not None:
            self.shadow.protected.clear()

    # -- guest code memory ---------------------------------------------------------------------
    def read_code(self, linear, n=15):
        return super().read_code(linear, n, user=False)     # the kernel's code

    def code_frame(self, linear):
        try:
            return self.mem.translate(linear, False, False) >> 12
        except (VirtualFault, GuestPhysicalError):
            return -1

    def protected_write(self, frame):
        """The guest writes to a page whose code was translated: let this one write happen
        (the run loop steps it and then compares the translated code)."""
        self.shadow.protected.discard(frame)
        self.code_write = frame

    def after_code_write(self):
        frame, self.code_write = self.code_write, None
        changed = any(self.read_code(self.tc.blocks[lin].linear, len(self.tc.blocks[lin].guest_code))
                      != self.tc.blocks[lin].guest_code
                      for lin in self.tc.by_frame.get(frame, ()) if lin in self.tc.blocks)
        if changed:
            self.stats.add("bt: code changed, translations dropped", 0.0)
            self.flush_translations()
        elif frame in self.tc.by_frame:
            self.shadow.protect(frame)

    # -- the run loop ----------------------------------------------------------------------------
    def run(self, stop):
        cpu, v = self.cpu, self.v
        self.run_stop = stop
        while True:
            stuck = self.stuck()
            if stuck:
                return self.unsupported(VMMUnsupported(stuck))
            if not self.in_tc:
                if cpu.intr_line and self.get_vif() and cpu.icount != cpu.inhibit_at and \
                        not cpu.pending_debug:
                    with self.stats_timer("interrupt (injected)"):
                        r = self.contain(self.inject_interrupt)
                    if r is not None:
                        return r
                    self.disarm()
                if v.halted:
                    return ExitReason.HLT
                if v.cpl == 0 and (cpu.reg_read("eflags") & F_TF or cpu.pending_debug):
                    # the kernel single-steps itself: run its own code in place, one
                    # instruction at a time, as trap-and-emulate does (#DB after each)
                    if cpu.icount >= stop:
                        return ExitReason.COUNT
                    r = self.step_in_place(keep_tf=True)
                    if r is not None:
                        return r
                    continue
                if v.cpl == 0:
                    try:
                        self.to_tc()
                    except (VMMUnsupported, GuestPhysicalError) as u:
                        return self.unsupported(u)
            reason = ExitReason(cpu.run(stop))
            if not self.in_tc:
                r = self.handle(reason)
                if self.code_write is not None:
                    stopped = self.contain(self.step_code_write)
                    r = stopped if stopped is not None else r
                if r is not None:
                    return r
                continue
            # (what the guest makes of the VMM's work from here may stop the VM: contain)
            if reason == ExitReason.EXCEPTION:
                r = self.contain(self.exception_in_tc, cpu.last_exit)
                if r is not None:
                    return r
                continue
            if reason == ExitReason.INTERRUPT:
                if not self.at_boundary():
                    r = self.contain(self.step_to_boundary)
                    if r is not None:
                        return r
                self.to_guest()
                if not v.vif:
                    self.arm()
                continue
            return reason           # COUNT, REQUEST, ...: the machine's business; stay put

    def exception_in_tc(self, e):
        cpu = self.cpu
        callout = self.tc.callouts.get(e.eip) if e.vector == UD_VECTOR else None
        if callout is None and e.vector == 1 and e.eip not in self.tc.map:
            # a single-step trap inside an inline sequence (POPF set TF): finish the
            # sequence, then the trap belongs to the guest instruction boundary reached
            cpu.eip = e.eip
            cpu.reg_write("eflags", cpu.reg_read("eflags") & ~F_TF)
            self.step_to_boundary()
            cpu.reg_write("eflags", cpu.reg_read("eflags") | F_TF)
            self.to_guest()
            return self.handle_guest_exception(1, -1)
        if callout is None:
            # a copied instruction faulted: the guest's fault, at the guest's address
            cpu.eip = e.eip
            self.to_guest()
            r = self.handle_guest_exception(e.vector, -1 if e.error_code is None else e.error_code)
            return r
        if callout.kind in ("branch", "retmiss"):
            self.follow(e.eip, callout)
            return None
        if callout.kind == "window":
            with self.stats_timer("bt: interrupt window"):
                self.disarm()
                cpu.reg_write("eflags", cpu.reg_read("eflags") | F_IF)
                cpu.eip = callout.resume
                if callout.after_sti:
                    cpu.inhibit_at = cpu.icount         # STI's shadow: one more instruction
            return None
        # "emulate": the guest instruction itself, in the guest's own state
        cpu.eip = e.eip
        self.tc.map.setdefault(e.eip, (callout.guest_eip, 0, True, False))
        self.to_guest()
        insn = self.fetch(cpu.eip)
        label = f"bt: {insn.mnemonic}" if insn is not None else "bt: undecodable"
        with self.stats_timer(label):
            # the VMM's own emulation if it has one (the sensitive instructions that would
            # not trap, then the privileged ones trap-and-emulate knows), else run it in place
            if insn is not None:
                try:
                    handler = self.emulators_bt.get(insn.mnemonic)
                    if handler is not None and handler(insn) is not False:
                        return self.after_emulation()
                    handler = self.emulators.get(insn.mnemonic)
                    if handler is not None and self.v.cpl == 0 and handler(insn, 0) is not False:
                        return self.after_emulation()
                except VirtualFault as f:
                    self.reflect(f.vector, f.error_code, cpu.eip)
                    return None
                except (VMMUnsupported, GuestPhysicalError) as u:
                    return self.unsupported(u)
            return self.step_in_place()

    def follow(self, at, callout):
        """A branch to code not translated yet (chain it), or a return to an address the
        return table does not know (give it a landing pad); translated code goes on."""
        cpu = self.cpu
        cs_base = self.guest_cs[1]
        if callout.kind == "branch":
            with self.stats_timer("bt: chain"):
                target = self.tc.entry.get((cs_base + callout.guest_eip) & MASK32)
                if target is None:
                    target = self.new_block(callout.guest_eip, cs_base).tc
                if self.tc.callouts.get(at) is callout:             # (not flushed meanwhile)
                    cpu.mem_write(callout.patch_at,
                                  struct.pack("<i", target - (callout.patch_at + 4)))
                    del self.tc.callouts[at]
                cpu.eip = target
            return
        with self.stats_timer("bt: return target"):
            from .binary_translator import Callout, UD2
            guest = cpu.reg_read("eax")
            slot = VMM_BASE + RET_TABLE + (guest & 0xFFFF) * 4
            code, chain_at, jump_at = self.translator.landing_pad(guest, 0, 0)
            if not self.tc.room(len(code) + len(UD2)):
                self.flush_translations()
                slot = VMM_BASE + RET_TABLE + (guest & 0xFFFF) * 4
            following = struct.unpack("<I", cpu.mem_read(slot, 4))[0]
            pad = self.tc.top
            struct.pack_into("<i", code, chain_at, following - (pad + chain_at + 4))
            dest = self.tc.entry.get((cs_base + guest) & MASK32)
            if dest is None:
                dest = pad + len(code)                              # a stub, chained later
                self.tc.callouts[dest] = Callout("branch", guest, patch_at=pad + jump_at)
                code += UD2
            struct.pack_into("<i", code, jump_at, dest - (pad + jump_at + 4))
            self.tc.put(bytes(code))
            cpu.mem_write(slot, struct.pack("<I", pad))
            cpu.eip = pad

    def handle_guest_exception(self, vector, error_code):
        r = self.handle_exception(vector, error_code, self.cpu.eip, False)
        if self.code_write is not None:
            self.step_code_write()
        return r

    def step_in_place(self, keep_tf=False):
        """Run the guest instruction once where it is, as trap-and-emulate would: a
        privileged one traps and is emulated, anything else simply executes."""
        cpu = self.cpu
        with self.interrupts_held():
            reason = ExitReason(cpu.run(cpu.icount + 1))
            if keep_tf and reason == ExitReason.COUNT and cpu.pending_debug and \
                    (self.run_stop is None or cpu.icount < self.run_stop):
                # the single-step trap comes after the instruction (at the run's stop, it
                # waits in the processor for the next run)
                reason = ExitReason(cpu.run(cpu.icount + 1))
        if not self.in_tc:              # (the instruction may have changed the guest's IF)
            fl = cpu.reg_read("eflags")
            cpu.reg_write("eflags", (fl | F_IF) if self.v.vif else (fl & ~F_IF))
        if reason == ExitReason.REQUEST:
            return reason
        if reason == ExitReason.COUNT:
            return None
        return self.handle(reason)

    def step_code_write(self):
        """The write to a code page, done once with the page writable; then compare. (The
        step may first need the shadow filled for its own fetch: steps until it is done.)"""
        cpu = self.cpu
        with self.interrupts_held():
            for _ in range(8):
                before = cpu.icount
                reason = ExitReason(cpu.run(cpu.icount + 1))
                if reason == ExitReason.EXCEPTION:
                    e = cpu.last_exit
                    frame = self.code_write
                    self.code_write = None
                    self.on_exception(e.vector, -1 if e.error_code is None else e.error_code,
                                      e.eip, e.software)
                    if self.code_write is None:
                        self.code_write = frame
                    if cpu.icount == before and e.vector == 14 and self.shadow.hidden_faults:
                        continue            # a hidden fault on the way: try again
                    break
                if cpu.icount > before or reason != ExitReason.COUNT:
                    break
        self.after_code_write()

    # -- the interrupt window ----------------------------------------------------------------------
    def arm(self):
        """An interrupt waits while the guest has IF clear: make every STI and POPF call
        out, and stop the hardware from taking the interrupt meanwhile."""
        if self.armed:
            return
        self.armed = True
        self.patch_windows(self.tc.windows)

    def disarm(self):
        if not self.armed:
            return
        self.armed = False
        for slot, stub in self.tc.windows:
            self.cpu.mem_write(slot, WINDOW_NOP)

    # -- sensitive instructions that do not trap: emulated with the virtual values -------------
    def store_operand(self, insn, op, value, size):
        from capstone import x86
        if op.type == x86.X86_OP_REG:
            name = insn.insn.reg_name(op.reg)
            if size == 4 or name.startswith("e"):
                self.set_reg(name, value)
            else:
                self.set_reg(name, value & 0xFFFF)
        else:
            self.mem.write(self.memory_operand(insn, op), value.to_bytes(size, "little"))

    def bt_table_store(self, insn, base, limit):
        at = self.memory_operand(insn, insn.operands[0])
        self.mem.write(at, struct.pack("<HI", limit & 0xFFFF, base))
        self.advance(insn)

    def bt_sgdt(self, insn):
        self.bt_table_store(insn, *self.v.gdtr)

    def bt_sidt(self, insn):
        self.bt_table_store(insn, *self.v.idtr)

    def _store_selector(self, insn, value):
        from capstone import x86
        op = insn.operands[0]
        size = 2 if op.type == x86.X86_OP_MEM else op.size
        self.store_operand(insn, op, value, size)
        self.advance(insn)

    def bt_sldt(self, insn):
        self._store_selector(insn, self.v.ldtr[0])

    def bt_str(self, insn):
        self._store_selector(insn, self.v.tr[0])

    def bt_smsw(self, insn):
        from capstone import x86
        op = insn.operands[0]
        value = self.v.cr0 if op.type == x86.X86_OP_REG and op.size == 4 else self.v.cr0 & 0xFFFF
        self.store_operand(insn, op, value, 2 if op.type == x86.X86_OP_MEM else op.size)
        self.advance(insn)

    def _access(self, insn):
        """The guest's descriptor for LAR/LSL/VERR/VERW's selector, if visible at its ring
        (SDM LAR: which types count, and the DPL >= max(CPL, RPL) rule)."""
        sel = self.operand_value(insn, insn.operands[-1], 2) & 0xFFFF
        if not sel & ~3:
            return None
        try:
            d = self.descriptor(sel)
        except VirtualFault:
            return None
        rpl = sel & 3
        if not (d.code and d.conforming) and max(self.v.cpl, rpl) > d.dpl:
            return None
        return d

    def _set_zf(self, on):
        flags = self.cpu.reg_read("eflags")
        self.cpu.reg_write("eflags", (flags | 0x40) if on else (flags & ~0x40))

    def bt_lar(self, insn):
        d = self._access(insn)
        ok = d is not None and (not d.system or d.type in (1, 2, 3, 4, 5, 9, 0xB, 0xC))
        if ok:
            self.store_operand(insn, insn.operands[0], d.hi & 0x00FFFF00, insn.operands[0].size)
        self._set_zf(ok)
        self.advance(insn)

    def bt_lsl(self, insn):
        d = self._access(insn)
        ok = d is not None and (not d.system or d.type in (1, 2, 3, 9, 0xB))
        if ok:
            self.store_operand(insn, insn.operands[0], d.limit, insn.operands[0].size)
        self._set_zf(ok)
        self.advance(insn)

    def bt_verr(self, insn):
        d = self._access(insn)
        self._set_zf(d is not None and not d.system and d.readable)
        self.advance(insn)

    def bt_verw(self, insn):
        d = self._access(insn)
        self._set_zf(d is not None and d.writable)
        self.advance(insn)

    def virtual_sreg(self, name):
        sel = self.cpu.get_segment(name)[0]
        return self.virtual_selector(sel)

    def bt_mov_sreg(self, insn):
        """MOV r/m, Sreg: the guest's selector (the real one shows ring 1)."""
        from capstone import x86
        dst, src = insn.operands
        if src.type != x86.X86_OP_REG or insn.insn.reg_name(src.reg) not in ("cs", "ss", "ds", "es", "fs", "gs"):
            return False
        value = self.virtual_sreg(insn.insn.reg_name(src.reg))
        size = 2 if dst.type == x86.X86_OP_MEM else dst.size
        self.store_operand(insn, dst, value, size)
        self.advance(insn)

    def bt_push_sreg(self, insn):
        from capstone import x86
        op = insn.operands[0]
        if op.type != x86.X86_OP_REG or insn.insn.reg_name(op.reg) not in ("cs", "ss"):
            return False
        value = self.virtual_sreg(insn.insn.reg_name(op.reg))
        esp = (self.reg("esp") - 4) & MASK32
        self.mem.write(self.stack_linear(esp), struct.pack("<I", value))
        self.set_reg("esp", esp)
        self.advance(insn)

    # -- showing translations ------------------------------------------------------------------
    def blocks(self):
        return sorted(self.tc.blocks.values(), key=lambda b: b.tc)
