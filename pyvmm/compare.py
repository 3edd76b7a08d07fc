"""`pyvmm compare GUEST`: the same guest kernel under every mode, side by side — guest
instructions, VMM entries by reason, host time in the VMM, wall time, and the slowdown
against `emulate` (no VMM)."""
import io
import json
import time
from dataclasses import asdict, dataclass, field

from .machine import PC
from .vmm import MODES, VMMUnsupported, create


@dataclass
class ModeRun:
    mode: str
    outcome: str                     # RunResult.reason, or "refused"
    status: int
    instructions: int
    wall_seconds: float
    vmm_entries: int = 0
    vmm_seconds: float = 0.0
    exits: dict = field(default_factory=dict)
    output_matches: bool = True      # serial output identical to emulate's
    message: str = ""
    slowdown: float = 0.0


def run_mode(elf, mode, cmdline="", memory=128 << 20, budget=None, disks=()):
    out = io.BytesIO()
    pc = PC(memory=memory, console=out, debugcon=io.BytesIO(), disks=disks, snapshot=True)
    pc.boot_multiboot(str(elf), cmdline)
    t0 = time.perf_counter()
    try:
        vmm = create(mode, pc)
    except VMMUnsupported as e:
        return ModeRun(mode, "refused", -1, 0, 0.0, message=str(e)), b""
    result = pc.run(budget)
    wall = time.perf_counter() - t0
    stats = vmm.stats
    run = ModeRun(mode, result.reason, result.status, result.instructions, wall,
                  stats.total, stats.total_seconds,
                  {reason: n for reason, n, _ in stats.table()}, message=result.message)
    return run, out.getvalue()


def compare(elf, modes=None, **kwargs):
    """[ModeRun] for each mode, the first being emulate (the baseline)."""
    modes = list(modes or MODES)
    if "emulate" in modes:
        modes.remove("emulate")
    runs, baseline_output = [], None
    for mode in ["emulate"] + modes:
        run, output = run_mode(elf, mode, **kwargs)
        if baseline_output is None:
            baseline_output = output
        run.output_matches = output == baseline_output
        runs.append(run)
    base = runs[0].wall_seconds or 1e-9
    for run in runs:
        run.slowdown = run.wall_seconds / base if run.outcome != "refused" else 0.0
    return runs


def to_json(runs):
    return json.dumps([asdict(r) for r in runs], indent=2)


def table(guest, runs, top=6):
    from rich.table import Table
    t = Table(title=f"{guest}: the same guest under each mode")
    for col, justify in (("mode", "left"), ("outcome", "left"), ("output", "left"),
                         ("guest instructions", "right"), ("VMM entries", "right"),
                         ("VMM time (s)", "right"), ("wall (s)", "right"),
                         ("slowdown", "right"), ("top exit reasons", "left")):
        t.add_column(col, justify=justify)
    for r in runs:
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in list(r.exits.items())[:top])
        t.add_row(r.mode, r.outcome, "same" if r.output_matches else "DIFFERENT",
                  f"{r.instructions:,}", f"{r.vmm_entries:,}", f"{r.vmm_seconds:.3f}",
                  f"{r.wall_seconds:.3f}", f"{r.slowdown:.1f}x", reasons or "-")
    return t
