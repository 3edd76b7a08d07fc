"""Isolation that holds: a guest reaches only its own memory, in every mode.

Every attempt to get out ends in a guest fault or in a clean stop of the VM with a stated
reason (`RunResult.reason` and its message): never an access to memory the guest does not
own, never a Python exception out of `PC.run`, never an effect on another VM in the same
process. Checked two ways, under every mode (emulate, trap, bt, pv, hw with nested paging
and hw with shadow paging):

* the `escape` guest (guests/escape), which tries one escape after another and says what
  became of each; the ones that end the machine by design run one a VM (`attempt=NAME`);
* hypothesis-generated hostile programs: random sequences of hostile building blocks (MOVs
  at addresses anywhere, page-table entries pointing anywhere, descriptor tables with wild
  bases and limits and segment loads from them, IN/OUT at any port, VMCALLs with wild
  arguments, INT n, privileged instructions with wild operands...) ending in an endless
  loop, run with an instruction budget.

After every run the VMM's own memory (the top 4 MiB of host-physical memory, `Watch`) is
compared with a snapshot taken when the VM was made: every page that changed must be one
the VMM itself writes (the shadow GDT, shadow page-table pages it handed out, bt's return
table, virtual CPU and translation cache), and what it wrote there must still keep the
guest in (real descriptors truncated below the VMM, shadow entries mapping guest memory
only, the VMM's own page table supervisor-only); under hw with nested paging the VMM
writes nothing after setting up, so all 4 MiB must be as they were. The escape runs share
the process, slice by slice, with a second VM running a known guest, whose output must be
what it is alone.

Sizes: PYVMM_HOSTILE_EXAMPLES hostile programs per mode in the campaign
(`pytest -m campaign tests/vmm/test_isolation.py`, default 400); the fast suite runs 20.
The counts of every outcome are printed at the end of the run (tests/vmm/conftest.py).
"""
import collections
import contextlib
import gc
import io
import os
import re
import signal
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvmm.machine import PC
from pyvmm.vmm import create, hypervisor_memory
from pyvmm.vmm.binary_translation import RET_TABLE, VMM_CS, VMM_CS_ATTR, VMM_GS, VMM_GS_ATTR
from pyvmm.vmm.descriptors import Descriptor, encode
from pyvmm.vmm.paravirt import DIRECT_VMM_PT
from pyvmm.vmm.shadow_paging import ShadowPageTables
from pyvmm.vmm.trap import SHADOW_GDT, SHADOW_IDT, SHADOW_TABLES_PAGE, VMM_BASE, VMM_SIZE
from tests.guest_build import guests_build

MODES = ["emulate", "trap", "bt", "pv", "hw", "hw:shadow"]
SOFTWARE_VMMS = ("trap", "bt", "pv")        # deprivileged guests on truncated segments
# RunResult reasons: each is a contained end (the machine's verdict, with a message for
# every stop that is not the guest's own exit, halt or the budget)
OUTCOMES = ("exit", "halt", "budget", "triple-fault", "unsupported", "unmapped", "stopped")
NEEDS_MESSAGE = ("triple-fault", "unsupported", "unmapped", "stopped")

# (part, mode, outcome) -> count, printed by tests/vmm/conftest.py
STATS = collections.Counter()

PTE_P, PTE_RW, PTE_US, PTE_PS = 0x1, 0x2, 0x4, 0x80
VMM_PT = SHADOW_TABLES_PAGE << 12           # (offset in the VMM's memory) trap, bt, pv
VMM_PT_CONTENT = tuple((VMM_BASE + (i << 12)) | PTE_P | PTE_RW for i in range(1024))


def split(label):
    mode, _, paging = label.partition(":")
    return mode, paging or None


def new_machine(label, memory, console=None):
    mode, _ = split(label)
    return PC(memory=memory, console=console if console is not None else io.BytesIO(),
              debugcon=io.BytesIO(), hypervisor_memory=hypervisor_memory(mode))


def attach(pc, label):
    mode, paging = split(label)
    return create(mode, pc, paging=paging)


# ------------------------------------------------------------------------------------------
# The VMM's memory: what changed, and whether what the VMM keeps there still keeps the
# guest in
# ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def shadow_pages_tracked():
    """Record every page a shadow hands out (on its GuestMemory, which outlives a shadow
    pv drops for direct paging): those are pages the VMM itself writes."""
    original = ShadowPageTables._page

    def _page(self):
        page = original(self)
        if page is not None:
            self.mem.__dict__.setdefault("shadow_pages", set()).add(page)
        return page

    ShadowPageTables._page = _page
    try:
        yield
    finally:
        ShadowPageTables._page = original


def u32s(data, offset, n):
    return struct.unpack_from(f"<{n}I", data, offset)


class Watch:
    """A snapshot of a VM's VMM memory when the VM is made, and the checks after a run."""

    def __init__(self, pc, vmm, label):
        self.pc, self.vmm, self.label = pc, vmm, label
        self.mode, self.paging = split(label)
        self.cpu = pc.cpu
        self.mapped = self.cpu.mem.is_mapped(VMM_BASE)
        self.before = bytes(self.cpu.mem_read(VMM_BASE, VMM_SIZE)) if self.mapped else None
        self.regions = list(self.cpu.mem.regions)
        self.nested_root = self.cpu.nested_root

    def legitimate_pages(self, vmm):
        """Pages (numbered from VMM_BASE) the VMM itself writes while the guest runs."""
        pages = {(p - VMM_BASE) >> 12 for p in vmm.mem.__dict__.get("shadow_pages", ())}
        if self.mode in SOFTWARE_VMMS:
            pages |= set(range((SHADOW_GDT - VMM_BASE) >> 12, (SHADOW_IDT - VMM_BASE) >> 12))
            pages.add(VMM_PT >> 12)         # the VMM's own page table, made with a shadow
        if self.mode == "bt":
            pages |= set(range(RET_TABLE >> 12, VMM_SIZE >> 12))   # returns, vCPU, cache
        return pages

    def problems(self):
        cpu, vmm = self.cpu, self.vmm
        out = []
        if list(cpu.mem.regions) != self.regions:
            out.append(f"memory mapped during the run: {cpu.mem.regions[len(self.regions):]}")
        if not self.mapped:
            if cpu.mem.is_mapped(VMM_BASE):
                out.append("memory appeared at the VMM's range")
            return out
        after = bytes(cpu.mem_read(VMM_BASE, VMM_SIZE))
        legit = self.legitimate_pages(vmm)
        for page in range(VMM_SIZE >> 12):
            at = page << 12
            if page not in legit and after[at:at + 4096] != self.before[at:at + 4096]:
                diff = next(i for i in range(4096) if after[at + i] != self.before[at + i])
                out.append(f"the VMM's page {VMM_BASE + at:#010x} changed at +{diff:#x}, and "
                           f"nothing of the VMM's is written there")
        if self.mode == "hw":
            if self.paging == "shadow":
                out += self.shadow_problems(after)
                roots = {r.pd for r in vmm.shadow.roots.values()}
                if cpu.cr3 & ~0xFFF not in roots:
                    out.append(f"CR3 {cpu.cr3:#x} is not one of the VMM's shadow directories")
            elif cpu.nested_root != self.nested_root or not cpu.nested_paging:
                out.append("the nested page tables are no longer the VMM's")
            if not cpu.guest_mode:
                out.append("the processor left guest mode")
            return out
        # software VMMs: the guest never runs at the real ring 0, on anything but the VMM's
        # truncated descriptors
        if cpu.cpl == 0:
            out.append("the processor is at ring 0 with the guest's state")
        if (cpu.gdtr_base, cpu.idtr_base) != (SHADOW_GDT, SHADOW_IDT):
            out.append(f"the real GDTR/IDTR ({cpu.gdtr_base:#x}, {cpu.idtr_base:#x}) are "
                       f"not the VMM's")
        # the table mapping the VMM's 4 MiB (supervisor-only) in every shadow: as it was,
        # or as a shadow makes it (with the accessed and dirty bits the processor sets as
        # it reaches the VMM's descriptor tables through it)
        table = tuple(e & ~0x60 for e in u32s(after, VMM_PT, 1024))
        if table != u32s(self.before, VMM_PT, 1024) and table != VMM_PT_CONTENT:
            out.append("the VMM's own page table changed")
        out += self.descriptor_problems(after)
        out += self.segment_problems()
        out += self.shadow_problems(after)
        if self.mode == "pv" and vmm.direct:
            out += self.direct_paging_problems()
        return out

    def descriptor_problems(self, after):
        out = []
        bt = self.mode == "bt"
        vmm_entries = {VMM_CS & ~7: encode(0, 0xFFFFFFFF, VMM_CS_ATTR),
                       VMM_GS & ~7: encode(VMM_BASE, VMM_SIZE - 1, VMM_GS_ATTR)} if bt else {}
        for at in range(0, self.cpu.gdtr_limit + 1 - 7, 8):
            raw = after[at:at + 8]
            if at in vmm_entries:
                if raw != vmm_entries[at]:
                    out.append(f"bt's own descriptor {at:#x} changed")
                continue
            d = Descriptor.unpack(raw)
            if not d.present:
                continue
            if d.system or d.code:
                out.append(f"real GDT entry {at:#x} is a present {'system' if d.system else 'code'} "
                           f"descriptor {raw.hex()}")
            elif d.dpl == 0 or d.hi & 0x400 or d.base + d.limit >= VMM_BASE:
                out.append(f"real GDT entry {at:#x} reaches the VMM or ring 0: {raw.hex()}")
        if any(after[SHADOW_IDT - VMM_BASE:SHADOW_IDT - VMM_BASE + 0x800]):
            out.append("the real IDT is not empty")
        return out

    def segment_problems(self):
        out = []
        in_tc = getattr(self.vmm, "in_tc", False)
        for seg in ("es", "cs", "ss", "ds", "fs", "gs"):
            if in_tc and seg in ("cs", "gs"):
                continue                    # translated code runs on the VMM's two segments
            sel, base, limit, attr = self.cpu.get_segment(seg)
            if attr & 0x8000 and (attr & 0x1000 and attr & 0xC00 == 0x400 or
                                  base + limit >= VMM_BASE):
                out.append(f"{seg} ({sel:#x}, base {base:#x}, limit {limit:#x}) reaches the VMM")
        return out

    def shadow_problems(self, after):
        vmm = self.vmm
        shadow = getattr(vmm, "shadow", None)
        if shadow is None:
            return []
        out = []

        def read(addr, n=1024):
            return u32s(after, addr - VMM_BASE, n)

        vmm_index = VMM_BASE >> 22
        for root in shadow.roots.values():
            tables = {t.addr for t in root.tables.values()}
            for i, pde in enumerate(read(root.pd)):
                if not pde & PTE_P:
                    continue
                if shadow.map_vmm and i == vmm_index:
                    if pde & ~0xFFF != shadow.vmm_pt or pde & (PTE_US | PTE_PS):
                        out.append(f"shadow PDE {i} ({pde:#x}) is not the VMM's supervisor table")
                elif pde & ~0xFFF not in tables or pde & PTE_PS:
                    out.append(f"shadow PDE {i} ({pde:#x}) is no shadow table of the VMM's")
            for table in root.tables.values():
                for slot, pte in enumerate(read(table.addr)):
                    if pte & PTE_P and not vmm.mem._phys_ok(pte & ~0xFFF, 0x1000):
                        out.append(f"a shadow entry maps {pte & ~0xFFF:#x}, which is not the "
                                   f"guest's (linear {(table.index << 22) | (slot << 12):#x})")
        return out

    def direct_paging_problems(self):
        """pv's direct paging: the processor walks the guest's own directory, which the
        VMM validated: guest memory only, the top 4 MiB the VMM's."""
        cpu, mem = self.cpu, self.vmm.mem
        out = []
        pd = u32s(cpu.mem_read(cpu.cr3 & ~0xFFF, 4096), 0, 1024)
        if pd[1023] != DIRECT_VMM_PT | PTE_P | PTE_RW:
            out.append(f"PDE 1023 of the loaded directory is {pd[1023]:#x}, not the VMM's")
        for i, pde in enumerate(pd[:1023]):
            if not pde & PTE_P:
                continue
            if pde & PTE_PS and cpu.cr4 & 0x10:
                if not mem._phys_ok(pde & 0xFFC00000, 0x400000):
                    out.append(f"PDE {i} maps {pde & 0xFFC00000:#x}, not the guest's")
                continue
            if not mem._phys_ok(pde & ~0xFFF, 0x1000):
                out.append(f"PDE {i} uses {pde & ~0xFFF:#x} as a table, not the guest's")
                continue
            for pte in u32s(cpu.mem_read(pde & ~0xFFF, 4096), 0, 1024):
                if pte & PTE_P and not mem._phys_ok(pte & ~0xFFF, 0x1000):
                    out.append(f"PDE {i}'s table maps {pte & ~0xFFF:#x}, not the guest's")
        return out


def check_contained(result, watch, where):
    assert result.reason in OUTCOMES, f"{where}: unknown outcome {result.reason!r}"
    if result.reason in NEEDS_MESSAGE:
        assert result.message, f"{where}: {result.reason} without a stated reason"
    problems = watch.problems()
    assert not problems, f"{where}: " + "; ".join(problems[:8])


# ------------------------------------------------------------------------------------------
# A second VM in the same process: a known guest run alone, and again slice by slice
# between the slices of another VM
# ------------------------------------------------------------------------------------------
WITNESS_GUEST = "paging"
WITNESS_BUDGET = 5_000_000
_alone = {}


def witness_alone(label):
    if label not in _alone:
        out = io.BytesIO()
        pc = new_machine(label, 16 << 20, out)
        pc.boot_multiboot(str(guests_build.build(WITNESS_GUEST, "O2")))
        attach(pc, label)
        result = pc.run(WITNESS_BUDGET)
        assert result.reason == "exit", result.message
        _alone[label] = (out.getvalue(), result.status, result.instructions)
    return _alone[label]


class Witness:
    """The known guest, advanced a slice at a time while other VMs run."""

    def __init__(self, label):
        self.label = label
        self.out = io.BytesIO()
        self.pc = new_machine(label, 16 << 20, self.out)
        self.pc.boot_multiboot(str(guests_build.build(WITNESS_GUEST, "O2")))
        attach(self.pc, label)
        self.used = 0
        self.result = None

    def step(self, n):
        if self.result is None:
            r = self.pc.run(min(n, WITNESS_BUDGET - self.used))
            self.used += r.instructions
            if r.reason != "budget" or self.used >= WITNESS_BUDGET:
                self.result = r

    def check(self):
        while self.result is None:
            self.step(1_000_000)
        out, status, instructions = witness_alone(self.label)
        assert self.result.reason == "exit", self.result.message
        assert (self.out.getvalue(), self.result.status, self.used) == (out, status, instructions), \
            f"{WITNESS_GUEST} next to another VM under {self.label} is not what it is alone"


def run_sliced(pc, budget, witness, slice_=20_000):
    """Run `pc` to its end (or `budget`), a slice at a time, the witness a slice between."""
    used = 0
    while True:
        result = pc.run(min(slice_, budget - used))
        used += result.instructions
        witness.step(slice_ // 4)
        if result.reason != "budget" or used >= budget:
            result.instructions = used
            return result


# ------------------------------------------------------------------------------------------
# The escape guest
# ------------------------------------------------------------------------------------------
ESCAPE_MEMORY = 16 << 20
BEYOND = f"{ESCAPE_MEMORY:#010x}"           # the first 4 MiB boundary past the guest's RAM

OWN = "landed in the guest's own frame"
GP0 = "guest #GP (error 0000)"
UD = "guest #UD (error 0000)"

# The default run, as a bare machine (QEMU included) prints it: attempt -> outcome
BARE = [
    ("write linear ffc00000 (the VMM's first page: shadow GDT, nested page directory)", OWN),
    ("write linear ffc10000 (trap's shadow IDT)", OWN),
    ("write linear ffc21000 (shadow page tables)", OWN),
    ("write linear ffe00000 (bt's virtual CPU)", OWN),
    ("write linear ffe01000 (bt's translation cache)", OWN),
    ("write linear fffffffc (the last dword of the address space)", OWN),
    ("read linear ffc10040 (the VMM's memory)", "read the guest's own frame"),
    ("call linear ffe01700 (bt's translation cache)", "ran the guest's own code"),
    ("REP INSB from port 02f8 to linear ffc00080 (an access the VMM makes)", OWN),
    ("write FS:ff800010 (base 00400000, 4 GiB limit: linear ffc00010)", OWN),
    ("write FS:(frame_b - 00400000) (wraps around 4 GiB to the guest's frame_b)", OWN),
    ("LGDT at linear ffc00000 (the VMM's GDT), reload every segment",
     "segments reloaded from the guest's own frame"),
    ("load selector 0018 past a 3-entry GDT's limit", "guest #GP (error 0018)"),
    ("load selector fff9 (where bt keeps its own data segment)", "guest #GP (error fff8)"),
    ("load selector 001c after LLDT 0 (no LDT)", "guest #GP (error 001c)"),
    ("LIDT at linear ffc00800 (the VMM's range), INT 0x40", "delivered through the guest's own frame"),
    ("LIDT at linear ffc00800, then a #GP through it", "guest #GP (error 1230)"),
    ("INT 0x30 past a 16-gate IDT's limit", "guest #GP (error 0182)"),
    ("INT 0x81 through a not-present gate", "guest #NP (error 040a)"),
    ("read its page directory through a self-map (PDE 1000)", "read its own directory"),
    ("rewrite a PTE through the self-map, INVLPG, read",
     "the new mapping is in effect (guest-own memory)"),
    ("PDE 1023 (the VMM's range) pointing at the directory: read fffff000", "read its own directory"),
    ("OUT and IN at port 02f8 (unassigned)", "nothing there (reads ffffffff)"),
    ("OUT and IN at port 1234 (unassigned)", "nothing there (reads ffffffff)"),
    ("OUT and IN at port fffc (unassigned)", "nothing there (reads ffffffff)"),
    ("console_write from an unmapped buffer", UD),
    ("console_write of 2 GiB", UD),
    ("set_shared_info at ffc00000 (the VMM's memory)", UD),
    ("set_cr3 at ffc00000 (the VMM's memory)", UD),
    ("set_cr3 of a directory mapping its own tables writable", UD),
    ("mmu_update of an entry at ffc00000 (the VMM's memory)", UD),
    ("mmu_update of an entry past the end of RAM", UD),
    ("mmu_update from an unmapped request list", UD),
    ("mmu_update of 4 Gi requests", UD),
    ("set_trap_table from an unmapped table", UD),
    ("multicall of 5000 calls", UD),
    ("multicall of a multicall of itself", UD),
    ("hypercall 0x1234 (none)", UD),
]
# What trap, bt and pv answer instead: their segments end below the VMM's 4 MiB, so every
# access the guest itself makes there is a #GP(0) (bt translates code from there, though:
# the guest's own code, from its own frame, runs on the VMM's code segment)
TRUNCATED = {what for what, _ in BARE if "linear ff" in what and "LGDT" not in what
             and "LIDT" not in what and "INSB" not in what} | \
            {what for what, _ in BARE if what.startswith(("write FS:", "PDE 1023"))}
# The VMM's own accesses (emulating REP INSB, delivering through an IDT) go through the
# guest's page tables, not its segments: they reach the guest's frame (or a #GP, should
# the emulation ever check the limit)
EMULATED = {"REP INSB from port 02f8 to linear ffc00080 (an access the VMM makes)"}
PV_HYPERCALLS = {
    "console_write from an unmapped buffer": "refused: -14 EFAULT",
    "console_write of 2 GiB": "refused: -22 EINVAL",
    "set_shared_info at ffc00000 (the VMM's memory)": "refused: -22 EINVAL",
    "set_cr3 at ffc00000 (the VMM's memory)": "refused: -22 EINVAL",
    "set_cr3 of a directory mapping its own tables writable": "refused: -1 EPERM",
    "mmu_update of an entry at ffc00000 (the VMM's memory)": "refused: -22 EINVAL",
    "mmu_update of an entry past the end of RAM": "refused: -22 EINVAL",
    "mmu_update from an unmapped request list": "refused: -14 EFAULT",
    "mmu_update of 4 Gi requests": "refused: -22 EINVAL",
    "set_trap_table from an unmapped table": "refused: -14 EFAULT",
    "multicall of 5000 calls": "refused: -22 EINVAL",
    "multicall of a multicall of itself": "returned 0, the nested call -22",
    "hypercall 0x1234 (none)": "refused: -38 ENOSYS",
}


def expected_outcomes(label, what, bare):
    mode, _ = split(label)
    if mode in SOFTWARE_VMMS and what in TRUNCATED:
        if mode == "bt" and what.startswith("call linear"):
            return {bare}
        return {GP0}
    if mode in SOFTWARE_VMMS and what in EMULATED:
        return {bare, GP0}
    if mode == "pv" and what in PV_HYPERCALLS:
        return {PV_HYPERCALLS[what]}
    return {bare}


def unmapped(address, access="write"):
    return "unmapped", rf"{access} of \d byte\(s\) at unmapped guest-physical address {address}"


def outside(address):
    return "unsupported", rf"the guest reached for guest-physical {address} \(\+\d+\), outside its memory"


def ept(address, access="write"):
    return "unsupported", rf"EPT violation: the guest's {access} at guest-physical {address}"


def per_mode(emulate, software, hw, hw_shadow, bt=None):
    return {"emulate": emulate, "trap": software, "pv": software, "bt": bt or software,
            "hw": hw, "hw:shadow": hw_shadow}


def everywhere(outcome):
    return dict.fromkeys(MODES, outcome)


GUEST_GP = ("exit", re.escape(GP0))
COMPLETED = ("exit", "completed")
PTE_WALK = "read of one of its page-table entries"
# attempt=NAME -> {mode: (RunResult.reason, a pattern of its message)}; "exit" means the
# guest survived, and the pattern is then what its attempt line says
TERMINAL = {
    "loop": everywhere(("budget", "stopped after")),
    "halt": everywhere(("halt", "with interrupts disabled")),
    "triple": everywhere(("triple-fault", "triple fault")),
    "phys-beyond-ram": per_mode(unmapped(BEYOND), unmapped(BEYOND), ept(BEYOND), outside(BEYOND),
                                bt=outside(BEYOND)),
    "pte-beyond-ram": per_mode(unmapped(BEYOND), outside(BEYOND), ept(BEYOND), outside(BEYOND)),
    "pte-vmm": per_mode(unmapped("0xffc00000"), outside("0xffc00000"), ept("0xffc00000"),
                        outside("0xffc00000")),
    "pte-tc": per_mode(unmapped("0xffe01000"), outside("0xffe01000"), ept("0xffe01000"),
                       outside("0xffe01000")),
    "pde-vmm": per_mode(unmapped("0xffc00000", "read"), outside("0xffc00000"),
                        ept("0xffc00000", PTE_WALK), outside("0xffc00000")),
    "cr3-vmm": per_mode(unmapped("0xffc00000", "read"), outside("0xffc00000"),
                        ept("0xffc00000", PTE_WALK), outside("0xffc00000")),
    "vmm-phys": per_mode(unmapped("0xffc00000"), GUEST_GP, ept("0xffc00000"), outside("0xffc00000")),
    "idt-vmm-phys": per_mode(unmapped("0xffc10200", "read"), outside("0xffc10200"),
                             ept("0xffc10200", "read"), outside("0xffc10000")),
    "gdt-beyond-ram": per_mode(unmapped("0x01000010", "read"), outside(BEYOND),
                               ept("0x01000010", "read"), outside(BEYOND)),
    "seg-vmm-base": per_mode(COMPLETED, ("unsupported", "segment 0x18 lies in the VMM's memory"),
                             COMPLETED, COMPLETED),
    "seg-expand-down": per_mode(COMPLETED, ("unsupported", "cannot truncate an expand-down segment"),
                                COMPLETED, COMPLETED),
    "rep-outs": everywhere(("budget", "stopped after")),
}
TERMINAL_BUDGET = 400_000                   # boot takes ~60 k (bt: ~70 k translated)
BUDGETS = {"rep-outs": 100_000}             # (each iteration emulated in Python, 10 us)
ATTEMPT_LINE = re.compile(r"attempt: (.*?) -> ?(.*)$")


@pytest.fixture(scope="module")
def escape_elf():
    return str(guests_build.build("escape", "O2"))


def run_escape(label, elf, cmdline="", budget=5_000_000):
    """The escape guest under `label`, sliced with a witness VM: (output lines, result)."""
    with shadow_pages_tracked():
        out = io.BytesIO()
        pc = new_machine(label, ESCAPE_MEMORY, out)
        pc.boot_multiboot(elf, cmdline)
        vmm = attach(pc, label)
        watch = Watch(pc, vmm, label)
        witness = Witness(label)
        result = run_sliced(pc, budget, witness)
        where = f"escape {cmdline or '(default)'} under {label}"
        check_contained(result, watch, where)
        witness.check()
    lines = out.getvalue().decode("latin-1").replace("\r\n", "\n").splitlines()
    return lines, result


def count_attempt(label, outcome):
    kind = "guest fault" if outcome.startswith("guest #") else \
        "stop: " + outcome if outcome in OUTCOMES else "completed in its own memory"
    STATS["escape", label, kind] += 1


def test_escape_lists_exactly_the_terminal_attempts_tested(escape_elf):
    lines, result = run_escape("emulate", escape_elf, "attempt=list", budget=1_000_000)
    assert result.reason == "exit" and result.status == 1
    names = lines[-1].split("attempts:")[1].split()
    assert names == list(TERMINAL)


@pytest.mark.parametrize("label", MODES)
def test_escape_default_run_is_contained(label, escape_elf):
    lines, result = run_escape(label, escape_elf)
    assert (result.reason, result.status) == ("exit", 1), result.message
    attempts = [ATTEMPT_LINE.match(line).groups() for line in lines if line.startswith("attempt:")]
    assert [what for what, _ in attempts] == [what for what, _ in BARE]
    faults = 0
    for (what, outcome), (_, bare) in zip(attempts, BARE):
        assert outcome in expected_outcomes(label, what, bare), f"{label}: {what} -> {outcome}"
        assert "NOT" not in outcome
        faults += outcome.startswith("guest #")
        count_attempt(label, outcome)
    assert lines[-1] == (f"escape: {len(BARE)} attempts, {faults} ended in a guest fault, "
                         f"{len(BARE) - faults} completed inside the guest")


@pytest.mark.parametrize("label", MODES)
@pytest.mark.parametrize("name", list(TERMINAL))
def test_escape_terminal_attempt_ends_cleanly(name, label, escape_elf):
    budget = BUDGETS.get(name, TERMINAL_BUDGET)
    lines, result = run_escape(label, escape_elf, f"attempt={name}", budget=budget)
    reason, pattern = TERMINAL[name][label]
    assert result.reason == reason, f"{name} under {label}: {result.reason}: {result.message}"
    attempt = [line for line in lines if line.startswith(f"attempt: {name}:")]
    assert len(attempt) == 1
    if reason == "exit":
        assert result.status == 1
        assert re.search(pattern, ATTEMPT_LINE.match(attempt[0]).group(2)), attempt[0]
        assert lines[-1].startswith("escape: 1 attempts")
        count_attempt(label, ATTEMPT_LINE.match(attempt[0]).group(2))
    else:
        # the VM stopped inside the attempt: its line is the last, unfinished
        assert lines[-1] == attempt[0] and lines[-1].endswith("->")
        assert re.search(pattern, result.message), f"{name} under {label}: {result.message}"
        count_attempt(label, reason)
        if reason == "budget":
            assert result.instructions == budget


# ------------------------------------------------------------------------------------------
# Regressions: what this suite found
# ------------------------------------------------------------------------------------------
def bare_program(label, code, memory=4 << 20, setup=None):
    """A flat protected-mode program at 0x10000 (the Multiboot state) under `label`."""
    pc = new_machine(label, memory)
    cpu = pc.cpu
    load_flat_state(cpu)
    cpu.mem_write(CODE, code)
    if setup is not None:
        setup(cpu)
    vmm = attach(pc, label)
    return pc, vmm


def test_a_multicall_that_calls_itself_is_refused_not_recursed():
    """A multicall whose list holds a multicall of the same list recursed in the VMM until
    Python's RecursionError came out of PC.run."""
    calls = 0x20000

    def setup(cpu):
        cpu.mem_write(calls, struct.pack("<6Ii", 7, calls, 1, 0, 0, 0, 0x7FFFFFFF))

    code = (mov_r(0, 7) + mov_r(3, calls) + mov_r(1, 1) + VMCALL + b"\xf4")
    pc, vmm = bare_program("pv", code, setup=setup)
    result = pc.run(1000)
    assert result.reason == "halt"
    assert pc.cpu.reg_read("eax") == 0
    assert struct.unpack("<i", pc.cpu.mem_read(calls + 24, 4))[0] == -22     # EINVAL


@pytest.mark.parametrize("label", ["trap", "bt", "pv", "hw", "hw:shadow"])
def test_the_budget_stops_a_rep_ins_the_vmm_emulates(label):
    """REP INSB with ECX = 0x7FFFFFFF: the VMM emulated every iteration in one exit, past
    any instruction budget (minutes of host time); now it stops at the budget exactly, as
    the bare machine does, with the instruction interrupted between iterations."""
    code = mov_r(1, 0x7FFFFFFF) + mov_r(7, 0x100000) + mov_r(2, 0x2F8) + b"\xf3\x6c\xf4"
    bare, _ = bare_program("emulate", code)
    pc, _ = bare_program(label, code)
    t0 = time.perf_counter()
    result = pc.run(10_000)
    assert time.perf_counter() - t0 < 5
    expected = bare.run(10_000)
    assert (result.reason, result.instructions) == ("budget", 10_000) == \
        (expected.reason, expected.instructions)
    assert pc.cpu.reg_read("ecx") == bare.cpu.reg_read("ecx")
    assert pc.cpu.reg_read("edi") == bare.cpu.reg_read("edi")
    # and a short one still completes in one go, as before
    code = mov_r(1, 5000) + mov_r(7, 0x100000) + mov_r(2, 0x2F8) + b"\xf3\x6c\xf4"
    pc, _ = bare_program(label, code)
    result = pc.run(100_000)
    assert (result.reason, result.instructions) == ("halt", 5004)
    assert pc.cpu.mem_read(0x100000, 5000) == b"\xff" * 5000


@pytest.mark.parametrize("label", MODES)
def test_code_in_a_devices_registers_stops_every_mode_alike(label):
    """A jump into the I/O APIC's page: bt translated the device's registers as code,
    then went round in circles on the write-protected page (a host hang). Code comes from
    RAM only, in every mode, as the processor fetches it."""
    code = mov_r(0, 0xFEC00010) + b"\xff\xe0"                  # mov eax, ...; jmp eax
    pc, _ = bare_program(label, code)
    with host_time_limit(HOSTILE_SECONDS):
        result = pc.run(3000)
    assert result.reason == "unmapped", result.message
    assert "0xfec00010" in result.message


@pytest.mark.parametrize("label", ["trap", "bt", "pv", "hw"])
def test_a_vmm_going_round_in_circles_stops_the_vm(label):
    """However a VMM gets stuck, the host does not hang: entries that never let the guest
    complete an instruction stop the VM with a message."""
    code = b"\x0f\x01\xc1" if label == "hw" else b"\x0f\x20\xc0"     # VMCALL / mov eax, cr0
    pc, vmm = bare_program(label, code + b"\xf4")
    if label == "hw":
        vmm.handlers = dict.fromkeys(vmm.handlers, lambda: None)      # never resumes
    else:
        vmm.on_exception = lambda *args: None                         # never emulates
        vmm.emulators_bt = vmm.emulators = {}
    with host_time_limit(HOSTILE_SECONDS):
        result = pc.run(3000)
    assert result.reason == "unsupported"
    assert "without the guest completing an instruction" in result.message


# ------------------------------------------------------------------------------------------
# Hostile programs
# ------------------------------------------------------------------------------------------
HOSTILE_MEMORY = 4 << 20
GDT, IDT, STUBS, DATA = 0x1000, 0x2000, 0x3000, 0x4000
RESUME, PSEUDO = DATA, DATA + 0x10          # where a handler resumes; LGDT/LIDT operands
CODE, PD, PT_ID, PT_X = 0x10000, 0x20000, 0x21000, 0x22000
STACK = 0x90000
NO_ERROR_STUB, ERROR_STUB = STUBS, STUBS + 0x10
ERROR_CODE_VECTORS = (8, 10, 11, 12, 13, 14, 17)
VMCALL = b"\x0f\x01\xc1"
MASK = 0xFFFFFFFF


def p32(v):
    return struct.pack("<I", v & MASK)


def p16(v):
    return struct.pack("<H", v & 0xFFFF)


def mov_r(reg, value):
    return bytes([0xB8 + reg]) + p32(value)


def flat_gdt():
    return struct.pack("<QQQ", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF) + bytes(13 * 8)


def load_flat_state(cpu):
    """What a Multiboot loader leaves, with a GDT of 16 entries (3 used), an IDT whose
    gates go to two stubs that resume at the address in RESUME, and page tables ready for
    paging: PD maps 0-4 MiB through PT_ID (identity) and 4-8 MiB through PT_X (empty)."""
    cpu.mem_write(GDT, flat_gdt())
    cpu.reg_write("gdtr_base", GDT)
    cpu.reg_write("gdtr_limit", 16 * 8 - 1)
    # no error code: mov eax, [RESUME]; mov [esp], eax; iret
    cpu.mem_write(NO_ERROR_STUB, b"\xa1" + p32(RESUME) + b"\x89\x04\x24\xcf")
    # error code: add esp, 4; then the same
    cpu.mem_write(ERROR_STUB, b"\x83\xc4\x04\xa1" + p32(RESUME) + b"\x89\x04\x24\xcf")
    gates = b""
    for v in range(256):
        stub = ERROR_STUB if v in ERROR_CODE_VECTORS else NO_ERROR_STUB
        gates += struct.pack("<HHHH", stub & 0xFFFF, 0x08, 0x8E00, stub >> 16)
    cpu.mem_write(IDT, gates)
    cpu.reg_write("idtr_base", IDT)
    cpu.reg_write("idtr_limit", 256 * 8 - 1)
    cpu.mem_write(RESUME, p32(CODE))
    cpu.mem_write(PD, p32(PT_ID | 7) + p32(PT_X | 7))
    cpu.mem_write(PT_ID, b"".join(p32((i << 12) | 7) for i in range(1024)))
    cpu.reg_write("cs", 0x08)
    for seg in ("ds", "es", "fs", "gs", "ss"):
        cpu.reg_write(seg, 0x10)
    cpu.reg_write("esp", STACK)
    cpu.reg_write("eip", CODE)


RAM = HOSTILE_MEMORY
INTERESTING = sorted({
    0, 4, 0xFFC, 0x1000, GDT + 0x18, IDT, IDT + 13 * 8, IDT + 14 * 8, STUBS, RESUME, PSEUDO,
    CODE, CODE + 0x40, PD, PD + 4, PD + 0xFFC, PT_ID, PT_ID + 0x10 * 4, PT_X, STACK - 4,
    0x9FFFC, 0xB8000, RAM - 4, RAM - 2, RAM, RAM + 0x1000, 0x00800000, 0x40000000, 0x80000000,
    0xFEBFFFFC, 0xFEC00000, 0xFEC00010, 0xFEE00000, 0xFEE000B0, 0xFEE00300, 0xFEE00380,
    0xFFBFF000, 0xFFBFFFFC, 0xFFBFFFFE, VMM_BASE, VMM_BASE + 0xFFF0, SHADOW_IDT,
    DIRECT_VMM_PT, VMM_BASE + 0x20000, VMM_BASE + 0x21000, VMM_BASE + RET_TABLE,
    VMM_BASE + 0x200000, VMM_BASE + 0x201000, 0xFFFFF000, 0xFFFFFFFC, 0xFFFFFFFE, MASK,
})
DEVICE_PORTS = [0x20, 0x21, 0x40, 0x41, 0x42, 0x43, 0x60, 0x64, 0x70, 0x71, 0x92, 0xA0, 0xA1,
                0xE9, 0xF4, 0x1F0, 0x1F1, 0x1F2, 0x1F6, 0x1F7, 0x3D4, 0x3D5, 0x3F6, 0x3F8,
                0x3F9, 0x3FB, 0x3FC, 0x3FD, 0x504, 0x510, 0xCF8, 0xCFC, 0x2F8, 0xFFFF]

addresses = st.one_of(
    st.sampled_from(INTERESTING),
    st.integers(0, MASK),
    st.builds(lambda a, d: (a + d) & MASK, st.sampled_from(INTERESTING), st.integers(-16, 16)),
)
words = st.one_of(addresses, st.integers(0, 0xFFFF), st.sampled_from([0, 1, 0x80000000, MASK]))
entries = st.builds(lambda a, flags: (a & ~0xFFF) | flags, addresses,
                    st.one_of(st.sampled_from([0x3, 0x7, 0x83, 0x87, 0x1, 0x5, 0x0]),
                              st.integers(0, 0xFFF)))
selectors = st.one_of(st.sampled_from([0, 3, 0x08, 0x0B, 0x10, 0x13, 0x18, 0x1C, 0x20, 0x38,
                                       0x78, 0x7B, 0x80, 0xFFF0, 0xFFF1, 0xFFF8, 0xFFF9]),
                      st.integers(0, 0xFFFF))
segments = st.sampled_from(["es", "ds", "fs", "gs", "ss"])
prefixes = st.sampled_from([None, None, "es", "cs", "ss", "ds", "fs", "gs"])
ports = st.one_of(st.sampled_from(DEVICE_PORTS), st.integers(0, 0xFFFF))
SEG_PREFIX = {None: b"", "es": b"\x26", "cs": b"\x2e", "ss": b"\x36", "ds": b"\x3e",
              "fs": b"\x64", "gs": b"\x65"}
SEG_MODRM = {"es": 0xC0, "ss": 0xD0, "ds": 0xD8, "fs": 0xE0, "gs": 0xE8}


def encode_block(block, at):
    """Machine code for one building block at address `at` (lengths never depend on it)."""
    kind, *a = block
    if kind == "store":
        addr, value, size, seg = a
        pre = SEG_PREFIX[seg]
        if size == 1:
            return pre + b"\xc6\x05" + p32(addr) + bytes([value & 0xFF])
        if size == 2:
            return pre + b"\x66\xc7\x05" + p32(addr) + p16(value)
        return pre + b"\xc7\x05" + p32(addr) + p32(value)
    if kind == "load":
        addr, size, seg = a
        return SEG_PREFIX[seg] + {1: b"\x8a\x05", 2: b"\x66\x8b\x05", 4: b"\x8b\x05"}[size] + p32(addr)
    if kind == "rmw":
        addr, seg = a
        return SEG_PREFIX[seg] + b"\x83\x05" + p32(addr) + b"\x01" + SEG_PREFIX[seg] + b"\x87\x05" + p32(addr)
    if kind == "string":
        op, esi, edi, ecx, down, seg = a
        return (mov_r(6, esi) + mov_r(7, edi) + mov_r(1, ecx) + (b"\xfd" if down else b"\xfc") +
                SEG_PREFIX[seg] + b"\xf3" + bytes([op]) + b"\xfc")
    if kind == "entry":
        table, index, value = a
        return b"\xc7\x05" + p32(table + 4 * index) + p32(value)
    if kind == "cr":
        n, value = a
        return mov_r(0, value) + b"\x0f\x22" + bytes([0xC0 | (n << 3)])
    if kind == "paging":
        on, = a
        op = b"\x0d" + p32(0x80000000) if on else b"\x25" + p32(0x7FFFFFFF)
        return mov_r(0, PD) + b"\x0f\x22\xd8" + b"\x0f\x20\xc0" + op + b"\x0f\x22\xc0"
    if kind == "invlpg":
        return b"\x0f\x01\x3d" + p32(a[0])
    if kind == "descriptor":
        index, base, limit, access, flags = a
        raw = encode(base, limit if not flags & 0x8 else limit << 12, (access << 8) | (flags << 20))
        lo, hi = struct.unpack("<II", raw)
        return b"\xc7\x05" + p32(GDT + 8 * index) + p32(lo) + b"\xc7\x05" + p32(GDT + 8 * index + 4) + p32(hi)
    if kind in ("lgdt", "lidt"):
        base, limit = a
        return (b"\xc7\x05" + p32(PSEUDO) + p32(limit | (base << 16)) +
                b"\xc7\x05" + p32(PSEUDO + 4) + p32(base >> 16) +
                (b"\x0f\x01\x15" if kind == "lgdt" else b"\x0f\x01\x1d") + p32(PSEUDO))
    if kind == "gate":
        vector, offset, selector, type_attr = a
        return (b"\xc7\x05" + p32(IDT + 8 * vector) + p32((selector << 16) | (offset & 0xFFFF)) +
                b"\xc7\x05" + p32(IDT + 8 * vector + 4) + p32((offset & 0xFFFF0000) | (type_attr << 8)))
    if kind == "segment":
        seg, selector = a
        return b"\x66\xb8" + p16(selector) + b"\x8e" + bytes([SEG_MODRM[seg]])
    if kind == "farjmp":
        selector, = a
        return b"\xea" + p32(at + 7) + p16(selector)
    if kind == "lldt":
        return b"\x66\xb8" + p16(a[0]) + b"\x0f\x00\xd0"
    if kind == "ltr":
        return b"\x66\xb8" + p16(a[0]) + b"\x0f\x00\xd8"
    if kind == "io":
        port, size, out, value = a
        op = {(1, False): b"\xec", (2, False): b"\x66\xed", (4, False): b"\xed",
              (1, True): b"\xee", (2, True): b"\x66\xef", (4, True): b"\xef"}[size, out]
        return mov_r(2, port) + mov_r(0, value) + op
    if kind == "rep-io":
        port, wide, out, addr, count = a
        op = (0x6E if out else 0x6C) | wide
        return mov_r(6 if out else 7, addr) + mov_r(1, count) + mov_r(2, port) + b"\xf3" + bytes([op])
    if kind == "vmcall":
        return b"".join(mov_r(r, v) for r, v in zip((0, 3, 1, 2, 6, 7), a)) + VMCALL
    if kind == "int":
        return b"\xcd" + bytes([a[0]])
    if kind == "esp":
        return mov_r(4, a[0])
    if kind == "jump":
        return mov_r(0, a[0]) + b"\xff\xe0"
    if kind == "flags":
        return b"\x68" + p32(a[0]) + b"\x9d"                    # push imm32; popfd
    if kind == "iret":
        eip, cs, flags = a
        return b"\x68" + p32(flags) + b"\x68" + p32(cs) + b"\x68" + p32(eip) + b"\xcf"
    if kind == "far-pointer":
        op, addr = a                                            # lds/les/lss/lfs/lgs, jmp/call far
        return {"lds": b"\xc5\x05", "les": b"\xc4\x05", "lss": b"\x0f\xb2\x05",
                "lfs": b"\x0f\xb4\x05", "lgs": b"\x0f\xb5\x05", "ljmp": b"\xff\x2d",
                "lcall": b"\xff\x1d"}[op] + p32(addr)
    if kind == "msr":
        write, ecx, value = a
        return mov_r(1, ecx) + mov_r(0, value) + mov_r(2, value >> 16) + (b"\x0f\x30" if write else b"\x0f\x32")
    if kind == "insn":
        return a[0]
    raise ValueError(kind)


SIMPLE = [b"\xfa", b"\xfb", b"\xf4", b"\xcc", b"\xce", b"\x0f\x0b", b"\x0f\x06", b"\x0f\x09",
          b"\x0f\x08", b"\x0f\xa2", b"\x0f\x31", b"\x0f\x01\x05" + p32(DATA + 0x20),
          b"\x0f\x01\x0d" + p32(DATA + 0x20), b"\x0f\x00\x05" + p32(DATA + 0x20),
          b"\x0f\x00\x0d" + p32(DATA + 0x20), b"\x0f\x20\xd0", b"\x0f\x20\xd8", b"\x0f\x20\xe0",
          b"\x0f\x02\xc0", b"\x0f\x03\xc0", b"\x0f\x00\xe0", b"\x0f\x00\xe8", b"\x0f\x01\xf0",
          b"\x0f\x23\xc0", b"\x0f\x23\xf8", b"\x9c", b"\x9d", b"\x0e", b"\x1f", b"\x60", b"\x61"]


def blocks(label):
    mode, _ = split(label)
    hypercall_numbers = st.integers(0, 13) if mode == "pv" else st.integers(0, 20)
    strategies = [
        st.tuples(st.just("store"), addresses, words, st.sampled_from([1, 2, 4]), prefixes),
        st.tuples(st.just("load"), addresses, st.sampled_from([1, 2, 4]), prefixes),
        st.tuples(st.just("rmw"), addresses, prefixes),
        st.tuples(st.just("string"), st.sampled_from([0xA4, 0xA5, 0xAB, 0xAD, 0xA6]), addresses,
                  addresses, st.one_of(st.integers(0, 64), st.sampled_from([0x10000, MASK])),
                  st.booleans(), prefixes),
        st.tuples(st.just("entry"), st.sampled_from([PD, PT_ID, PT_X]), st.integers(0, 1023), entries),
        st.tuples(st.just("entry"), st.sampled_from([PD, PT_ID, PT_X]),
                  st.sampled_from([0, 1, 2, 16, 32, 1022, 1023]), entries),
        st.tuples(st.just("cr"), st.sampled_from([3, 3, 4, 0]),
                  st.one_of(st.sampled_from([PD, PT_ID, PT_X, VMM_BASE, RAM, 0x10, 0x90, 0x80000011]),
                            words)),
        st.tuples(st.just("paging"), st.booleans()),
        st.tuples(st.just("invlpg"), addresses),
        st.tuples(st.just("descriptor"), st.integers(1, 15), addresses, st.integers(0, 0xFFFFF),
                  st.integers(0, 0xFF), st.integers(0, 0xF)),
        st.tuples(st.just("lgdt"), addresses, st.one_of(st.sampled_from([0, 7, 0x17, 0x7F, 0xFFFF]),
                                                        st.integers(0, 0xFFFF))),
        st.tuples(st.just("lidt"), addresses, st.one_of(st.sampled_from([0, 0x7F, 0x7FF, 0xFFFF]),
                                                        st.integers(0, 0xFFFF))),
        st.tuples(st.just("gate"), st.integers(0, 255), addresses, selectors, st.integers(0, 0xFF)),
        st.tuples(st.just("segment"), segments, selectors),
        st.tuples(st.just("farjmp"), selectors),
        st.tuples(st.just("lldt"), selectors),
        st.tuples(st.just("ltr"), selectors),
        st.tuples(st.just("io"), ports, st.sampled_from([1, 2, 4]), st.booleans(), words),
        st.tuples(st.just("rep-io"), ports, st.sampled_from([0, 1]), st.booleans(), addresses,
                  st.one_of(st.integers(0, 64), st.sampled_from([0x100000, MASK]))),
        st.tuples(st.just("vmcall"), hypercall_numbers, words, words, words, words, words),
        st.tuples(st.just("int"), st.integers(0, 255)),
        st.tuples(st.just("esp"), addresses),
        st.tuples(st.just("jump"), addresses),
        st.tuples(st.just("flags"), st.one_of(st.integers(0, MASK), st.sampled_from(
            [0x2, 0x202, 0x3202, 0x4002, 0x102, 0x40002, 0x20002]))),
        st.tuples(st.just("iret"), addresses, selectors, st.integers(0, MASK)),
        st.tuples(st.just("far-pointer"), st.sampled_from(["lds", "les", "lss", "lfs", "lgs",
                                                            "ljmp", "lcall"]), addresses),
        st.tuples(st.just("msr"), st.booleans(), st.sampled_from([0x10, 0x1B, 0x174, 0xC0000080, 0]),
                  words),
        st.tuples(st.just("insn"), st.sampled_from(SIMPLE)),
    ]
    if mode == "pv":
        # hypercalls with the ABI's numbers and wild pointers and lengths, more often
        strategies.append(st.tuples(st.just("vmcall"), st.integers(0, 13), addresses, words,
                                    addresses, words, words))
    return st.one_of(strategies)


def programs(label):
    return st.lists(blocks(label), min_size=1, max_size=12)


def assemble_program(program):
    """Each block prefixed with `mov dword [RESUME], <the next block>` (a fault in a block
    resumes at the next one), then `jmp $`."""
    code, at = b"", CODE
    for block in program:
        body_len = len(encode_block(block, 0))
        body_at = at + 10
        body = encode_block(block, body_at)
        assert len(body) == body_len
        code += b"\xc7\x05" + p32(RESUME) + p32(body_at + body_len) + body
        at = body_at + body_len
    return code + b"\xeb\xfe"


HOSTILE_BUDGET = 3000
# A VMM that spins on a program without the guest making progress hangs the host: a run
# of 3000 instructions that takes this long is one (they take milliseconds)
HOSTILE_SECONDS = 5


class HostTimeLimit(Exception):
    pass


@contextlib.contextmanager
def host_time_limit(seconds):
    def expire(signum, frame):
        raise HostTimeLimit(f"still running after {seconds} s of host time")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
HOSTILE_EXAMPLES = int(os.environ.get("PYVMM_HOSTILE_EXAMPLES", "400"))


class Campaign:
    """Hostile programs under one mode, each checked for containment and counted."""

    def __init__(self, label, part):
        self.label, self.part = label, part
        self.witness = Witness(label)
        self.runs = 0

    def run(self, program):
        code = assemble_program(program)
        with shadow_pages_tracked():
            pc = new_machine(self.label, HOSTILE_MEMORY)
            load_flat_state(pc.cpu)
            pc.cpu.mem_write(CODE, code)
            vmm = attach(pc, self.label)
            watch = Watch(pc, vmm, self.label)
            try:
                with host_time_limit(HOSTILE_SECONDS):
                    result = pc.run(HOSTILE_BUDGET)
            except Exception as e:
                STATS[self.part, self.label, "EXCEPTION"] += 1
                raise AssertionError(f"{type(e).__name__} out of PC.run under {self.label}: {e}\n"
                                     f"program: {program!r}") from e
            STATS[self.part, self.label, result.reason] += 1
            self.runs += 1
            check_contained(result, watch, f"under {self.label}, program {program!r}")
            assert result.instructions <= HOSTILE_BUDGET
        self.witness.step(2000)
        del pc, vmm, watch
        gc.collect()        # a machine is cyclic garbage holding ~20 MiB: free it now


def hostile_campaign(label, examples, part):
    campaign = Campaign(label, part)

    @settings(max_examples=examples, deadline=None, database=None)
    @given(programs(label))
    def run(program):
        campaign.run(program)

    run()
    campaign.witness.check()
    assert campaign.runs >= min(examples, 1)


@pytest.mark.parametrize("label", MODES)
def test_hostile_programs_are_contained(label):
    hostile_campaign(label, 20, "hostile")


@pytest.mark.campaign
@pytest.mark.parametrize("label", MODES)
def test_hostile_campaign(label):
    """PYVMM_HOSTILE_EXAMPLES hostile programs (default 400) under one mode."""
    t0 = time.perf_counter()
    hostile_campaign(label, HOSTILE_EXAMPLES, "campaign")
    STATS["campaign", label, "seconds"] += round(time.perf_counter() - t0)
