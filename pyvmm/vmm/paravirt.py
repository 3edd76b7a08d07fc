"""Paravirtualization, in the style of Xen (Barham et al., SOSP 2003): the guest kernel
knows it runs on a hypervisor and asks it for what it needs by *hypercall*, instead of
executing the instructions that would trap, or that would quietly misbehave, at ring 1.

The ABI is docs/hypercall-abi.md. The mechanism, on the same classic hardware as `trap`:

* the kernel runs at ring 1 on the VMM's descriptor tables, exactly as under trap-and-
  emulate (this class *is* a TrapAndEmulate: a kernel that makes no hypercalls is simply
  trapped and emulated);
* it finds the hypervisor with CPUID leaf 0x40000000: the VMM turns on CPUID faulting, so
  CPUID at ring 1 faults into the VMM, which answers with its signature;
* VMCALL is not an instruction on this processor outside guest mode: at ring 1 it raises
  #UD, which the VMM takes as the hypercall (number in EAX, arguments in EBX...EDI);
* the interrupt flag becomes a byte in the shared info page that the guest writes without
  any exit; the VMM turns device interrupts into *events* (it acknowledges the interrupt
  controllers itself) and delivers them through the guest's registered trap table (or its
  IDT, if it registered none) when that byte allows, or marks them pending;
* page tables are the guest's own (direct paging): the VMM validates a directory once when
  it is first loaded (`set_cr3`), keeps every page-table page read-only, and applies the
  guest's changes in batches (`mmu_update`, `multicall`) after checking each entry.
"""
import struct

from .. import ExitReason
from ..machine.devices.lapic import BASE as LAPIC_BASE
from .descriptors import Descriptor
from .faults import VirtualFault, VMMUnsupported
from .guest_memory import GuestPhysicalError
from .hardware_assist import hypervisor_cpuid
from .trap import F_IF, GP, MASK32, VMM_BASE, VMM_SIZE, TrapAndEmulate

UD = 6
ABI_VERSION = 1
EPERM, EFAULT, EINVAL, ENOSYS = 1, 14, 22, 38
VMCALL = b"\x0f\x01\xc1"
DIRECT_VMM_PT = VMM_BASE + 0x1F000      # the VMM's page table, PDE 1023 of every directory
PTE_P, PTE_RW, PTE_PS = 0x1, 0x2, 0x80
TICKS_PER_US = 100                      # guest time: 100 ticks (instructions) a microsecond

HYPERCALLS = ("console_write", "set_trap_table", "stack_switch", "set_shared_info",
              "mmu_update", "set_cr3", "invlpg", "multicall", "set_timer", "block", "iret",
              "shutdown", "get_time", "nop")
CONTROL = object()                      # a hypercall that set EIP itself (iret)


class HypercallError(Exception):
    def __init__(self, errno, why=""):
        super().__init__(why)
        self.errno = errno


class EventTimer:
    """The `set_timer` hypercall's one-shot timer, scheduled with the machine's devices."""

    def __init__(self, vmm):
        self.vmm = vmm
        self.deadline = None
        self.vector = 0

    def next_event(self):
        return self.deadline

    def advance(self, now):
        if self.deadline is not None and self.deadline <= now:
            self.deadline = None
            self.vmm.events.append(self.vector)


class Paravirtual(TrapAndEmulate):
    mode = "pv"

    def __init__(self, pc):
        super().__init__(pc)
        self.trap_table = None          # vector -> (flags, cs, address), once registered
        self.kernel_stack = None        # (ss, esp) from stack_switch
        self.shared_info = None         # guest-physical address of the shared info page
        self.events = []                # events waiting for delivery (vectors)
        self.timer = EventTimer(self)
        self.direct = False             # the guest's own page tables are loaded
        self.pinned_dirs = set()        # frames of validated page directories
        self.pinned = set()             # frames of validated directories and tables
        self.hypercall_counts = {}
        self.handlers = [getattr(self, "hc_" + name) for name in HYPERCALLS]
        self.emulators["cpuid"] = self.op_cpuid

    def attach(self):
        super().attach()
        cpu = self.cpu
        cpu.cpuid_faulting = True
        self.pc.timers.append(self.timer)
        pages = VMM_SIZE >> 12
        cpu.mem_write(DIRECT_VMM_PT, struct.pack(f"<{pages}I", *(
            (VMM_BASE + (i << 12)) | PTE_P | PTE_RW for i in range(pages))))

    # -- the virtual interrupt flag: a byte the guest writes itself, once registered ------
    @property
    def event_mode(self):
        """The shared info page is registered: interrupts are events, the guest's flag is
        its events_enabled byte (delivery through the trap table, or the guest's IDT if it
        registered none)."""
        return self.shared_info is not None

    def get_vif(self):
        if self.event_mode:
            return bool(self.mem.read_phys(self.shared_info, 1)[0])
        return super().get_vif()

    def set_vif(self, on):
        if self.event_mode:
            self.mem.write_phys(self.shared_info, bytes([1 if on else 0]))
            return
        super().set_vif(on)

    def interrupts_enabled(self):
        return self.get_vif()

    # -- the run loop: device interrupts become events ---------------------------------------
    def run(self, stop):
        if not self.event_mode:
            return super().run(stop)
        cpu, v = self.cpu, self.v
        self.run_stop = stop
        while True:
            if cpu.intr_line:
                self.take_interrupt()
            while self.events and self.get_vif() and cpu.icount != cpu.inhibit_at and \
                    not cpu.pending_debug:
                with self.stats_timer("event (delivered)"):
                    r = self.contain(self.deliver_event)
                if r is not None:
                    return r
                if cpu.exit_request:
                    r, cpu.exit_request = cpu.exit_request, 0
                    return ExitReason(r)
            if self.events and not self.get_vif():
                self.mark_pending()
            if v.halted:
                return ExitReason.HLT
            stuck = self.stuck()
            if stuck:
                return self.unsupported(VMMUnsupported(stuck))
            if self.events and self.get_vif():
                # events are on, but an STI (or MOV SS) shadow covers the next instruction:
                # run that one alone, then deliver (the hardware's interrupt window)
                reason = ExitReason(cpu.run(min(stop, cpu.icount + 1)))
                if reason == ExitReason.COUNT and cpu.icount < stop:
                    continue
            else:
                reason = ExitReason(cpu.run(stop))
            r = self.handle(reason)
            if r == ExitReason.HLT and self.events and self.get_vif():
                continue                # (STI; HLT with an event waiting: it wakes at once)
            if r is not None:
                return r

    def take_interrupt(self):
        """The VMM's own interrupt handler: acknowledge and end the interrupt at the
        controllers, and queue it for the guest as an event."""
        pc = self.pc
        from_lapic = pc.lapic.pending() >= 0
        vector = pc.acknowledge_interrupt() & 0xFF
        if from_lapic:
            pc.lapic.mmio_write(LAPIC_BASE + 0xB0, 4, 0)       # EOI
        else:
            if pc.pic.slave.isr:
                pc.ports.write(0xA0, 1, 0x20)
            pc.ports.write(0x20, 1, 0x20)
        self.cpu.interrupts += 1
        self.events.append(vector)

    def deliver_event(self):
        vector = self.events.pop(0)
        self.v.halted = False
        self.write_shared(1, bytes([1 if self.events else 0]))
        self.update_time()
        self.reflect(vector, -1, self.cpu.eip, external=True)

    def mark_pending(self):
        self.write_shared(1, b"\x01")
        self.write_shared(4, struct.pack("<I", self.events[0]))

    def write_shared(self, offset, data):
        if self.shared_info is not None:
            self.mem.write_phys(self.shared_info + offset, data)

    def update_time(self):
        self.write_shared(8, struct.pack("<Q", self.cpu.icount // TICKS_PER_US))

    # -- delivery through the trap table instead of an IDT -------------------------------------
    def gate(self, vector, ext):
        if self.trap_table is None:
            return super().gate(vector, ext)
        entry = self.trap_table.get(vector)
        if entry is None:
            raise VirtualFault(GP, vector * 8 + 2 + ext)
        flags, cs, address = entry
        kind = 0xE if flags & 4 else 0xF                # events off on entry: interrupt gate
        lo = (cs << 16) | (address & 0xFFFF)
        hi = (address & 0xFFFF0000) | 0x8000 | ((flags & 3) << 13) | (kind << 8)
        return Descriptor(lo, hi)

    def inner_stack(self, cpl, ext):
        if self.kernel_stack is not None:
            return self.kernel_stack
        return super().inner_stack(cpl, ext)

    # -- CPUID (it faults at ring 1 here) ---------------------------------------------------------
    def op_cpuid(self, insn, err):
        cpu = self.cpu
        values = hypervisor_cpuid(cpu, cpu.reg_read("eax"), cpu.reg_read("ecx"), ABI_VERSION)
        for reg, value in zip(("eax", "ebx", "ecx", "edx"), values):
            cpu.reg_write(reg, value)
        self.advance(insn)

    # -- hypercalls ------------------------------------------------------------------------------
    def on_exception(self, vector, error_code, eip, software):
        if vector == UD and self.instruction_bytes(eip, 3) == VMCALL:
            if self.v.cpl == 0:
                self.hypercall()
                return
        super().on_exception(vector, error_code, eip, software)

    def instruction_bytes(self, eip, n):
        try:
            return self.mem.read((self.cpu.get_segment("cs")[1] + eip) & MASK32, n)
        except (VirtualFault, GuestPhysicalError):
            return b""

    def hypercall(self):
        cpu = self.cpu
        number = cpu.reg_read("eax")
        name = HYPERCALLS[number] if number < len(HYPERCALLS) else f"#{number}"
        with self.stats_timer(f"hypercall {name}"):
            result = self.call(number, [cpu.reg_read(r) for r in ("ebx", "ecx", "edx", "esi", "edi")])
            if result is CONTROL:
                return
            cpu.reg_write("eax", result & MASK32)
            cpu.eip = (cpu.eip + 3) & MASK32
            cpu.icount += 1
            self.update_time()

    def call(self, number, args):
        """One hypercall: its result (a negative errno on refusal), or CONTROL."""
        self.hypercall_counts[number] = self.hypercall_counts.get(number, 0) + 1
        if number >= len(self.handlers):
            return -ENOSYS
        try:
            return self.handlers[number](*args)
        except HypercallError as e:
            return -e.errno
        except (VirtualFault, GuestPhysicalError):
            return -EFAULT

    def hc_console_write(self, buf, length, *_):
        if length > 1 << 20:
            raise HypercallError(EINVAL)
        data = self.mem.read(buf, length, user=False)
        self.pc.uart.sink.write(data)
        return length

    def hc_set_trap_table(self, table, *_):
        entries = {}
        for i in range(256):
            vector, flags, cs, address = struct.unpack("<BBHI", self.mem.read(table + 8 * i, 8, user=False))
            if address == 0:
                break
            entries[vector] = (flags, cs, address)
        self.trap_table = entries
        return 0

    def hc_stack_switch(self, ss, esp, *_):
        self.kernel_stack = (ss & 0xFFFF, esp)
        return 0

    def hc_set_shared_info(self, gpa, *_):
        if gpa & 0xFFF or gpa + 0x1000 > self.pc.memory_size:
            raise HypercallError(EINVAL)
        first = self.shared_info is None
        self.shared_info = gpa
        if first:
            self.enter_event_mode()
        return 0

    def enter_event_mode(self):
        """From now on the interrupt flag is the shared byte and the hardware's IF stays on
        (the VMM must get every interrupt: the guest's flag only decides delivery)."""
        self.mem.write_phys(self.shared_info, bytes([1 if self.v.vif else 0]))
        cpu = self.cpu
        cpu.reg_write("eflags", cpu.reg_read("eflags") | F_IF)
        # The loop running now is trap mode's, which would inject an interrupt by the
        # shared byte but never queue it as an event: leave it, so that run() starts over
        # with the event loop.
        cpu.request_exit()

    def hc_set_timer(self, microseconds, vector, *_):
        if microseconds == 0:
            self.timer.deadline = None
        else:
            self.timer.deadline = self.pc.clock.now() + microseconds * TICKS_PER_US
            self.timer.vector = vector & 0xFF
        self.cpu.request_exit()             # the machine plans its next device event anew
        return 0

    def hc_block(self, *_):
        self.set_vif(True)
        if not self.events:
            self.v.halted = True
        return 0

    def hc_iret(self, *_):
        cpu = self.cpu
        esp = cpu.reg_read("esp")
        eip, cs, flags = self.pop32(esp, 3)
        self._return(cs & 0xFFFF, eip, esp + 12, None, flags=flags)
        self.update_time()
        return CONTROL

    def hc_shutdown(self, status, *_):
        self.pc._guest_exit(((status << 1) | 1) & 0xFF)
        return 0

    def hc_get_time(self, *_):
        return (self.cpu.icount // TICKS_PER_US) & MASK32

    def hc_nop(self, *_):
        return 0

    def hc_multicall(self, calls, count, *_):
        if count > 4096:
            raise HypercallError(EINVAL)
        for i in range(count):
            entry = calls + 28 * i
            op, *args = struct.unpack("<6I", self.mem.read(entry, 24, user=False))
            if op in (7, 10):
                # iret cannot be batched, nor a multicall nested (Xen refuses reentry too):
                # a list that calls itself would recurse without end in the VMM
                result = -EINVAL
            else:
                result = self.call(op, args)
            self.mem.write(entry + 24, struct.pack("<i", result), user=False)
        return 0

    # -- direct paging ------------------------------------------------------------------------
    def frame_ok(self, address, size=0x1000):
        return self.mem._phys_ok(address & ~0xFFF, size)

    def entries(self, frame):
        return struct.unpack("<1024I", self.mem.read_phys(frame << 12, 4096))

    def tables_of(self, pgd_frame):
        """The page-table frames a directory uses (4 MiB pages have none)."""
        tables = set()
        for i, pde in enumerate(self.entries(pgd_frame)[:1023]):
            if pde & PTE_P and not (pde & PTE_PS and self.v.cr4 & 0x10):
                tables.add(pde >> 12)
        return tables

    def check_directory(self, pgd_frame):
        """Every entry maps guest memory; no page-table page is writable through it."""
        new_tables = {pgd_frame} | self.tables_of(pgd_frame)
        protected = self.pinned | new_tables
        for i, pde in enumerate(self.entries(pgd_frame)[:1023]):
            if not pde & PTE_P:
                continue
            if pde & PTE_PS and self.v.cr4 & 0x10:
                base = pde & 0xFFC00000
                if not self.frame_ok(base, 0x400000):
                    raise HypercallError(EPERM, f"PDE {i} maps {base:#x}, outside the guest")
                if pde & PTE_RW and any(base >> 12 <= f < (base >> 12) + 1024 for f in protected):
                    raise HypercallError(EPERM, f"PDE {i} maps a page table writable")
                continue
            if not self.frame_ok(pde & ~0xFFF):
                raise HypercallError(EPERM, f"PDE {i}: a page table outside the guest")
            for j, pte in enumerate(self.entries(pde >> 12)):
                self.check_entry(pte, pde, protected)
        # and no table already in use maps the new ones writable
        for frame in self.pinned - self.pinned_dirs:
            for pte in self.entries(frame):
                if pte & PTE_P and pte & PTE_RW and (pte >> 12) in new_tables:
                    raise HypercallError(EPERM, "a page table in use maps the new one writable")
        return new_tables

    def check_entry(self, pte, pde, protected):
        if not pte & PTE_P:
            return
        if not self.frame_ok(pte & ~0xFFF):
            raise HypercallError(EPERM, f"an entry maps {pte & ~0xFFF:#x}, outside the guest")
        if pte & PTE_RW and pde & PTE_RW and (pte >> 12) in protected:
            raise HypercallError(EPERM, f"an entry maps the page table at {pte & ~0xFFF:#x} writable")

    def pin(self, pgd_frame):
        if pgd_frame not in self.pinned_dirs:
            tables = self.check_directory(pgd_frame)
            self.pinned |= tables
            self.pinned_dirs.add(pgd_frame)
        # the top 4 MiB are the VMM's, in every directory (Xen's hypervisor hole)
        self.mem.write_phys((pgd_frame << 12) + 1023 * 4,
                            struct.pack("<I", DIRECT_VMM_PT | PTE_P | PTE_RW))

    def large_rw_covers(self, frame):
        """Does a writable 4 MiB page of a loaded directory cover guest-physical `frame`?"""
        if not self.v.cr4 & 0x10:
            return False
        for directory in self.pinned_dirs:
            for pde in self.entries(directory)[:1023]:
                if pde & PTE_P and pde & PTE_PS and pde & PTE_RW and \
                        (pde >> 22) == (frame >> 10):
                    return True
        return False

    def hc_set_cr3(self, pgd, *_):
        if pgd & 0xFFF or not self.frame_ok(pgd):
            raise HypercallError(EINVAL)
        self.pin(pgd >> 12)
        v, cpu = self.v, self.cpu
        v.cr3 = pgd
        self.cr3_loads += 1
        v.cr0 |= 0x80000000
        self.direct = True
        self.shadow = None
        cpu.reg_write("cr4", v.cr4 & 0x10)
        cpu.reg_write("cr3", pgd)
        cpu.reg_write("cr0", cpu.cr0 | 0x80010000)          # paging, and WP: tables stay read-only
        return 0

    def write_cr(self, n, value):
        if not self.direct:
            return super().write_cr(n, value)
        v, cpu = self.v, self.cpu
        try:
            if n == 3:
                self.hc_set_cr3(value & ~0xFFF)
            elif n == 0:
                if (value & 0x80000001) != 0x80000001:
                    raise VMMUnsupported("a paravirtual kernel turned paging off")
                v.cr0 = value | 0x10
                cpu.reg_write("cr0", (cpu.cr0 & ~0xE) | (value & 0xE) | 0x80010000)
            elif n == 4:
                if value & ~0x3FF:
                    raise VirtualFault(GP, 0)
                old, v.cr4 = v.cr4, value
                if (old ^ value) & 0x10:
                    # PSE changes what every PDE means: validate the directory afresh
                    self.pinned.clear()
                    self.pinned_dirs.clear()
                    try:
                        self.pin(v.cr3 >> 12)
                    except HypercallError:
                        v.cr4 = old
                        self.pin(v.cr3 >> 12)
                        raise
                cpu.reg_write("cr4", value & 0x90)
            else:
                super().write_cr(n, value)
        except HypercallError:
            raise VirtualFault(GP, 0) from None

    def hc_invlpg(self, va, *_):
        self.cpu.reg_write("cr3", self.cpu.cr3)             # (drops the whole TLB)
        return 0

    def hc_mmu_update(self, requests, count, done_ptr, *_):
        if count > 1 << 16:
            raise HypercallError(EINVAL)
        done, result = 0, 0
        for i in range(count):
            ptr, val = struct.unpack("<II", self.mem.read(requests + 8 * i, 8, user=False))
            try:
                self.update_entry(ptr, val)
            except HypercallError as e:
                result = -e.errno
                break
            done += 1
        if done_ptr:
            self.mem.write(done_ptr, struct.pack("<I", done), user=False)
        if self.direct:
            self.cpu.reg_write("cr3", self.cpu.cr3)
        return result if result else done

    def update_entry(self, ptr, val):
        if ptr & 3 or not self.frame_ok(ptr):
            raise HypercallError(EINVAL)
        frame = ptr >> 12
        if frame in self.pinned_dirs:
            index = (ptr & 0xFFF) >> 2
            if index == 1023:
                raise HypercallError(EPERM, "PDE 1023 belongs to the hypervisor")
            if val & PTE_P:
                if val & PTE_PS and self.v.cr4 & 0x10:
                    base = val & 0xFFC00000
                    if not self.frame_ok(base, 0x400000):
                        raise HypercallError(EPERM)
                    if val & PTE_RW and any(base >> 12 <= f < (base >> 12) + 1024 for f in self.pinned):
                        raise HypercallError(EPERM, "a 4 MiB page over page tables, writable")
                else:
                    table = val >> 12
                    if not self.frame_ok(val & ~0xFFF):
                        raise HypercallError(EPERM)
                    if table in self.pinned_dirs and val & PTE_RW:
                        # a directory as a table would map the tables writable (Xen allows
                        # such self-maps read-only)
                        raise HypercallError(EPERM, "a page directory used as a page table")
                    if table not in self.pinned and self.large_rw_covers(table):
                        raise HypercallError(EPERM, "a writable 4 MiB page covers that table")
                    if table not in self.pinned:
                        protected = self.pinned | {table}
                        for pte in self.entries(table):
                            self.check_entry(pte, val, protected)
                        for other in self.pinned - self.pinned_dirs:
                            if any(p & PTE_P and p & PTE_RW and (p >> 12) == table
                                   for p in self.entries(other)):
                                raise HypercallError(EPERM)
                        self.pinned.add(table)
        elif frame in self.pinned and val & PTE_P:
            self.check_entry(val, PTE_RW, self.pinned)
        self.mem.write_phys(ptr, struct.pack("<I", val))
