"""`pyvmm compare GUEST`: the same guest kernel under every mode, side by side — guest
instructions, VMM entries by reason, host time in the VMM, wall time, and the slowdown
against `emulate` (no VMM)."""
import io
import json
import time
from dataclasses import asdict, dataclass, field

from .machine import PC
from .vmm import MODES, VMMUnsupported, create, hypervisor_memory


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
    brackets: list = field(default_factory=list)    # per benchmark bracket (nanobench)
    memory: dict = field(default_factory=dict)      # VMM.memory_stats(): TLB, walks, shadows


def parse_mode(label):
    """'hw' -> ('hw', None); 'hw:shadow' -> ('hw', 'shadow'): a mode and its paging."""
    mode, _, paging = label.partition(":")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
    return mode, paging or None


def run_mode(elf, label, cmdline="", memory=128 << 20, budget=None, disks=(), name=None):
    mode, paging = parse_mode(label)
    out = io.BytesIO()
    pc = PC(memory=memory, console=out, debugcon=io.BytesIO(), disks=disks, snapshot=True,
            hypervisor_memory=hypervisor_memory(mode))
    pc.boot_multiboot(str(elf), cmdline, name)
    try:
        vmm = create(mode, pc, paging=paging)
    except VMMUnsupported as e:
        return ModeRun(label, "refused", -1, 0, 0.0, message=str(e)), b""
    t0 = time.perf_counter()                 # the run itself, not setting the machine up
    result = pc.run(budget)
    wall = time.perf_counter() - t0
    stats = vmm.stats
    run = ModeRun(label, result.reason, result.status, result.instructions, wall,
                  stats.total, stats.total_seconds,
                  {reason: n for reason, n, _ in stats.table()}, message=result.message,
                  memory=vmm.memory_stats())
    for b in vmm.brackets:
        run.brackets.append({"op": b.name, "iterations": b.iterations,
                             "exits": dict(b.exits.most_common()),
                             "exits_per_iteration": b.total_exits / b.iterations,
                             "us_per_iteration": b.wall_seconds * 1e6 / b.iterations,
                             "vmm_us_per_iteration": b.vmm_seconds * 1e6 / b.iterations,
                             "memory": b.memory})
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


MEMORY_COLUMNS = ("TLB misses", "walk refs", "CR3 switches", "hidden faults", "true faults",
                  "PT-write traps", "shadow pages")


def describe_memory(stats):
    """One line of VMM.memory_stats() for `pyvmm run -v`."""
    misses = stats["TLB misses"]
    per_miss = f" ({stats['walk refs'] / misses:.1f} per miss)" if misses else ""
    parts = [f"TLB hits {stats['TLB hits']:,}", f"misses {misses:,}",
             f"walk refs {stats['walk refs']:,}{per_miss}"]
    parts += [f"{k} {v:,}" for k, v in stats.items()
              if k not in ("TLB hits", "TLB misses", "walk refs") and v is not None]
    return ", ".join(parts)


def memory_table(guest, runs):
    """What memory virtualization cost in each mode: TLB misses and the references their
    page walks made, CR3 switches, and the shadow-paging events (hidden and true page
    faults, page-table-write traps, shadow pages)."""
    from rich.table import Table
    t = Table(title=f"{guest}: memory virtualization")
    # the mode and the numbers never wrap (nor get cut short); a header takes two lines
    t.add_column("mode", no_wrap=True)
    for col in MEMORY_COLUMNS:
        t.add_column(col.replace(" ", "\n", 1), justify="right", no_wrap=True)
    t.add_column("refs/miss", justify="right", no_wrap=True)
    for r in runs:
        m = r.memory
        if not m:
            continue
        cells = ["-" if m.get(col) is None else f"{m[col]:,}" for col in MEMORY_COLUMNS]
        per_miss = f"{m['walk refs'] / m['TLB misses']:.1f}" if m.get("TLB misses") else "-"
        t.add_row(r.mode, *cells, per_miss)
    return t


def bracket_table(guest, runs):
    """Per benchmark operation (the guest's port-0x504 brackets): VMM entries and host
    microseconds per iteration in each mode."""
    from rich.table import Table
    ops = [b["op"] for b in runs[0].brackets]
    if not ops:
        return None
    t = Table(title=f"{guest}: per operation, per iteration (VMM entries / host µs)")
    t.add_column("operation")
    for r in runs:
        t.add_column(r.mode, justify="right")
    for op in ops:
        cells = []
        for r in runs:
            b = next((b for b in r.brackets if b["op"] == op), None)
            cells.append("-" if b is None else
                         f"{b['exits_per_iteration']:.2f} / {b['us_per_iteration']:.2f}")
        t.add_row(op, *cells)
    return t


def memory_panel(ax, runs):
    """What memory virtualization cost each mode: the page walks' memory references (the
    price of nested paging) beside the VMM entries shadow paging takes for memory (hidden
    faults, the page-table-write traps among them, and true faults it reflects)."""
    modes = [r.mode for r in runs]
    refs = [r.memory.get("walk refs") or 0 for r in runs]
    faults = [(r.memory.get("hidden faults") or 0) + (r.memory.get("true faults") or 0) for r in runs]
    x = range(len(runs))
    ax.bar([i - 0.2 for i in x], refs, 0.4, label="page-walk memory references", color="tab:green")
    ax.set_ylabel("walk references")
    ax.set_xticks(list(x), modes)
    ax.set_title("memory: walks and shadow-paging faults")
    twin = ax.twinx()
    twin.bar([i + 0.2 for i in x], faults, 0.4, label="page faults the VMM took", color="tab:red")
    twin.set_ylabel("VMM entries for page faults")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize="small", loc="lower left")


def plot(guest, runs, path):
    """Draw the comparison into an image file: the slowdown of each mode, and either the
    VMM entries per iteration of each benchmark operation (nanobench) or each mode's VMM
    entries by reason."""
    import matplotlib
    matplotlib.use("Agg")                       # files only, no display needed
    import matplotlib.pyplot as plt

    modes = [r.mode for r in runs]
    paging = any(r.memory.get("TLB misses") for r in runs)
    if paging:
        fig, (left, right, memory) = plt.subplots(1, 3, figsize=(17, 4.5))
        memory_panel(memory, runs)
    else:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.bar(modes, [max(r.slowdown, 1e-3) for r in runs], color="tab:blue")
    left.set_yscale("log")
    left.set_ylabel("wall time / emulate's")
    left.set_title(f"{guest}: slowdown")
    ops = [b["op"] for b in runs[0].brackets]
    if ops:
        width = 0.8 / len(runs)
        for k, r in enumerate(runs):
            values = [next((b["exits_per_iteration"] for b in r.brackets if b["op"] == op), 0)
                      for op in ops]
            right.bar([i + k * width for i in range(len(ops))], values, width, label=r.mode)
        right.set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(ops))], ops)
        right.set_ylabel("VMM entries per iteration")
        right.set_title("per operation")
    else:
        reasons = []
        for r in runs:
            for reason in list(r.exits)[:5]:
                if reason not in reasons:
                    reasons.append(reason)
        bottom = [0] * len(runs)
        for reason in reasons:
            values = [r.exits.get(reason, 0) for r in runs]
            right.bar(modes, values, bottom=bottom, label=reason)
            bottom = [b + v for b, v in zip(bottom, values)]
        right.set_ylabel("VMM entries")
        right.set_title("VMM entries by reason")
    right.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
