#!/usr/bin/env python3
"""VMM overhead per exit: guest loops whose every iteration traps into the VMM, run on the
bare machine (`emulate`) and under each VMM mode; prints VMM entries per second and the
host time per entry.

    python bench/vmm_exits.py            # 20,000 iterations per loop, best of 3
    python bench/vmm_exits.py --quick    # CI smoke run
    python bench/vmm_exits.py --json

Loops (hand-assembled, at 0x100000 with the Multiboot loader's flat GDT):
  cli/sti   CLI; STI; DEC ECX; JNZ        -> 2 VMM entries an iteration under trap, 0 under hw
  in        IN AL, DX (COM1's LSR); DEC; JNZ -> 1 VMM entry an iteration under trap and hw
"""
import argparse
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyvmm.machine import PC  # noqa: E402
from pyvmm.machine.multiboot import GDT, GDT_ADDRESS  # noqa: E402
from pyvmm.vmm import MODES, create, hypervisor_memory  # noqa: E402

BASE = 0x100000


def loop(body, n):
    """mov ecx, n; [dx = 0x3FD]; body; dec ecx; jnz body; mov al, 1; out 0xF4, al"""
    code = bytes([0xB9]) + n.to_bytes(4, "little") + bytes([0x66, 0xBA, 0xFD, 0x03])
    back = -(len(body) + 1 + 2)
    code += body + bytes([0x49, 0x75, back & 0xFF]) + bytes([0xB0, 0x01, 0xE6, 0xF4])
    return code


# the loop body, and the VMM entries an iteration costs in each mode (hw: CLI/STI run in
# guest mode without exiting; IN exits with its qualification)
LOOPS = {
    "cli/sti": (bytes([0xFA, 0xFB]), {"trap": 2, "hw": 0, "pv": 2}),
    "in": (bytes([0xEC]), {"trap": 1, "hw": 1, "pv": 1}),
}


def machine(code, mode):
    pc = PC(console=io.BytesIO(), debugcon=io.BytesIO(), hypervisor_memory=hypervisor_memory(mode))
    cpu = pc.cpu
    cpu.mem_write(BASE, code)
    cpu.mem_write(GDT_ADDRESS, GDT)
    cpu.reg_write("gdtr_base", GDT_ADDRESS)
    cpu.reg_write("gdtr_limit", len(GDT) - 1)
    cpu.reg_write("cr0", 0x11)
    cpu.reg_write("cs", 0x08)
    for seg in ("ds", "es", "ss"):
        cpu.reg_write(seg, 0x10)
    cpu.reg_write("esp", 0x90000)
    cpu.reg_write("eip", BASE)
    return pc


def measure(name, mode, n, runs):
    body, per_iteration = LOOPS[name]
    per_iteration = per_iteration.get(mode, 0)
    best = None
    for _ in range(runs):
        pc = machine(loop(body, n), mode)
        vmm = create(mode, pc)
        t0 = time.perf_counter()
        result = pc.run(50 * n + 1000)
        seconds = time.perf_counter() - t0
        if result.reason != "exit" or result.status != 3:
            raise SystemExit(f"bench/vmm_exits.py: {name} under {mode} ended with "
                             f"{result.reason} ({result.message})")
        exits = vmm.stats.total
        if mode != "emulate" and exits < per_iteration * n:
            raise SystemExit(f"bench/vmm_exits.py: {name} under {mode}: {exits} exits, "
                             f"expected at least {per_iteration * n}")
        row = {"loop": name, "mode": mode, "iterations": n, "instructions": result.instructions,
               "seconds": seconds, "exits": exits,
               "exits_per_second": exits / seconds if exits else 0.0,
               "us_per_exit": seconds * 1e6 / exits if exits else 0.0,
               "us_per_iteration": seconds * 1e6 / n}
        if best is None or seconds < best["seconds"]:
            best = row
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    p.add_argument("--runs", type=int, default=3, help="runs per measurement, best taken (3)")
    p.add_argument("--json", action="store_true", help="print JSON results")
    args = p.parse_args()
    n = 2_000 if args.quick else 20_000
    rows = [measure(name, mode, n, args.runs) for name in LOOPS for mode in MODES]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"VMM entries: {n:,} iterations per loop, best of {args.runs}")
    for col in ("loop", "mode", "instructions", "VMM entries", "entries/s", "us/entry",
                "us/iteration"):
        table.add_column(col, justify="left" if col in ("loop", "mode") else "right")
    for r in rows:
        table.add_row(r["loop"], r["mode"], f"{r['instructions']:,}", f"{r['exits']:,}",
                      f"{r['exits_per_second']:,.0f}" if r["exits"] else "-",
                      f"{r['us_per_exit']:.2f}" if r["exits"] else "-",
                      f"{r['us_per_iteration']:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
