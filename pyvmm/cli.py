"""The `pyvmm` command.

    pyvmm run GUEST [options]     boot a guest: a bundled guest's name, a guest source folder,
                                  or a Multiboot ELF file
    pyvmm guests                  list the bundled guests
"""
import argparse
import os
import runpy
import shutil
import sys
from pathlib import Path

GUESTS = Path(__file__).resolve().parent.parent / "guests"


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, no traceback."""


def parse_size(text):
    """'64M', '1G', '524288K', '16777216' -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t, 0)
    except ValueError:
        raise UsageError(f"cannot read {text!r} as a size (try 64M or 1G)") from None


def _builder():
    script = GUESTS / "build.py"
    if not script.exists():
        raise UsageError(f"the bundled guests are not here ({GUESTS} has no build.py)")
    return runpy.run_path(str(script))


def kernel_name(elf):
    """The kernel's name on its command line. A bundled guest's is its path from the
    checkout's top (guests/build/O2/NAME.elf, as the README's QEMU commands give it), so
    that a run is the same wherever the checkout is: the guests that read their command
    line take a few instructions more for a longer one."""
    elf = Path(elf).resolve()
    top = GUESTS.resolve().parent
    return str(elf.relative_to(top)) if elf.is_relative_to(top / "guests" / "build") else None


def check_toolchain():
    missing = [tool for tool in ("gcc", "as", "ld") if shutil.which(tool) is None]
    if missing:
        raise UsageError(f"building guests needs {', '.join(missing)}: install gcc and binutils "
                         f"(Debian/Ubuntu: apt-get install gcc binutils)")


def resolve_guest(spec, opt):
    """The ELF file for GUEST: an ELF path as is; a folder or a bundled name, built first."""
    path = Path(spec)
    if path.is_file():
        return path
    tools = None
    if path.is_dir():
        check_toolchain()
        tools = _builder()
        if "build_folder" not in tools:
            raise UsageError("this checkout's guests/build.py cannot build a folder")
        try:
            return tools["build_folder"](path, opt)
        except tools["BuildError"] as e:
            raise UsageError(f"building {path} failed:\n{e}") from None
    tools = _builder()
    if spec not in tools["guest_names"]():
        raise UsageError(f"no guest {spec!r}: not a file, not a folder, and not a bundled guest "
                         f"({', '.join(tools['guest_names']())})")
    check_toolchain()
    try:
        return tools["build"](spec, opt)
    except tools["BuildError"] as e:
        raise UsageError(f"building guest {spec!r} failed:\n{e}") from None


def cmd_run(args):
    from .machine import PC
    from .machine.multiboot import KernelError

    if args.guest is None and not args.disk:
        raise UsageError("run what? give a guest (name, folder or ELF) or --disk IMAGE to boot")
    elf = resolve_guest(args.guest, args.opt) if args.guest is not None else None
    memory = parse_size(args.memory)
    if args.pure:
        from . import load_pure
        cpu_class = load_pure().cpu.CPU
    else:
        from . import CPU as cpu_class
    try:
        from .vmm import hypervisor_memory
        pc = PC(memory=memory, console_input=sys.stdin.buffer if not sys.stdin.isatty() else None,
                cpu_class=cpu_class, disks=args.disk or (), snapshot=args.snapshot,
                realtime=args.realtime, hypervisor_memory=hypervisor_memory(args.mode))
    except ValueError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"cannot open the disk image: {e}") from None
    try:
        if elf is not None:
            pc.boot_multiboot(str(elf), args.cmdline, kernel_name(elf))
        else:
            pc.boot_disk()
    except KernelError as e:
        raise UsageError(str(e)) from None
    vmm = None
    if args.mode == "emulate" and args.paging is not None:
        raise UsageError("--paging chooses a VMM's memory virtualization: use it with --mode hw")
    if args.mode != "emulate":
        from .vmm import VMMUnsupported, create
        if args.trace is not None:
            raise UsageError("--trace follows the bare machine: use it with --mode emulate")
        try:
            vmm = create(args.mode, pc, paging=args.paging)
        except VMMUnsupported as e:
            raise UsageError(f"--mode {args.mode}: {e}") from None
    trace = None
    if args.trace is not None:
        trace = sys.stderr if args.trace == "-" else open(args.trace, "w")
    try:
        result = pc.run(args.max_instructions, trace=trace)
    except BrokenPipeError:
        # Whoever read the guest's console has gone (`pyvmm run ... | head`): stop quietly,
        # as other Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    finally:
        if trace is not None and trace is not sys.stderr:
            trace.close()
    err = sys.stderr
    if args.screen:
        row, col = pc.vga.cursor
        bar = "+" + "-" * 80 + "+"
        print(bar)
        for line in pc.vga.text().split("\n"):
            print("|" + line.ljust(80) + "|")
        print(bar + f" cursor at row {row}, column {col}")
    if result.message:
        err.write(f"pyvmm: {result.message}\n")
    if not args.quiet:
        core = "uncompiled" if args.pure else ("compiled" if _compiled() else "uncompiled")
        err.write(f"pyvmm: {result.instructions:,} instructions in {result.seconds:.3f} s "
                  f"({result.mips:.1f} MIPS, {core} core), exit status {result.status}\n")
        if vmm is not None:
            stats = vmm.stats
            err.write(f"pyvmm: mode {args.mode}: {stats.total:,} VMM entries, "
                      f"{stats.total_seconds:.3f} s in the VMM\n")
            if args.verbose:
                for reason, n, seconds in stats.table():
                    err.write(f"  {reason:<32} {n:>10,}  {seconds * 1e6 / n:8.1f} us each\n")
        if args.verbose:
            from .compare import describe_memory
            from .vmm import Emulate
            memory = (vmm or Emulate(pc)).memory_stats()
            if memory["TLB misses"]:                    # (only if anything was translated)
                err.write(f"pyvmm: memory: {describe_memory(memory)}\n")
    if args.verbose and result.unclaimed_ports:
        err.write("pyvmm: accesses to unclaimed ports (read as all ones, writes ignored):\n")
        for (direction, port), n in sorted(result.unclaimed_ports.items(), key=lambda kv: kv[0][1]):
            err.write(f"  {direction:>3} {port:#06x}  x{n}\n")
    return result.status


def _compiled():
    from . import COMPILED
    return COMPILED


def cmd_compare(args):
    from rich.console import Console

    from .compare import bracket_table, compare, memory_table, plot, table, to_json
    from .compare import parse_mode
    for label in args.mode or ():
        try:
            parse_mode(label)
        except ValueError as e:
            raise UsageError(str(e)) from None
    elf = resolve_guest(args.guest, args.opt)
    runs = compare(elf, args.mode or None, cmdline=args.cmdline, name=kernel_name(elf),
                   budget=args.max_instructions, disks=tuple(args.disk or ()))
    if args.json:
        print(to_json(runs))
    else:
        console = Console()
        console.print(table(args.guest, runs))
        if any(r.memory.get("TLB misses") for r in runs):
            console.print(memory_table(args.guest, runs))
        per_op = bracket_table(args.guest, runs)
        if per_op is not None:
            console.print(per_op)
    if args.plot:
        plot(args.guest, runs, args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")
        for r in runs:
            if r.outcome not in ("exit", "halt"):
                print(f"{r.mode}: {r.message}")
    return 0


def cmd_bt_show(args):
    """Run a guest under binary translation, then show its translated blocks beside the
    guest code they came from."""
    import capstone

    from .machine import PC
    from .vmm import create, hypervisor_memory
    elf = resolve_guest(args.guest, args.opt)
    pc = PC(console=open(os.devnull, "wb"), debugcon=open(os.devnull, "wb"),
            hypervisor_memory=hypervisor_memory("bt"))
    pc.boot_multiboot(str(elf), args.cmdline, kernel_name(elf))
    vmm = create("bt", pc)
    result = pc.run(args.max_instructions)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    blocks = vmm.blocks()
    if args.address is not None:
        blocks = [b for b in blocks if b.guest_eip <= args.address < b.guest_eip + len(b.guest_code) + 1]
    shown = blocks[:args.blocks]
    print(f"{args.guest}: {len(vmm.tc.blocks)} blocks in the translation cache "
          f"({vmm.tc.top - vmm.tc.start:,} bytes) after {result.instructions:,} instructions; "
          f"showing {len(shown)}")
    for b in shown:
        print(f"\nblock {b.guest_eip:#010x} -> {b.tc:#010x}")
        for geip, gbytes, tc_addr, tbytes in b.listing:
            guest = next((f"{i.mnemonic} {i.op_str}".strip() for i in md.disasm(gbytes, geip or 0, 1)),
                         "(next block)" if geip is None else "(undecodable)")
            left = f"  {geip:#010x}  {guest}" if geip is not None else f"  {'':10}  {guest}"
            lines = [f"{i.address:#010x}  {i.mnemonic} {i.op_str}".rstrip()
                     for i in md.disasm(bytes(pc.cpu.mem_read(tc_addr, len(tbytes))), tc_addr)]
            for n, line in enumerate(lines or ["(nothing)"]):
                print(f"{left if n == 0 else '':<48} | {line}")
    return 0


def cmd_guests(args):
    tools = _builder()
    for name in tools["guest_names"]():
        print(f"{name:<14} {tools['describe'](name) if 'describe' in tools else ''}".rstrip())
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pyvmm", description="An educational IA-32 machine and hypervisor.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="boot a guest kernel")
    run.add_argument("guest", nargs="?",
                     help="a bundled guest's name, a guest source folder, or a Multiboot ELF")
    run.add_argument("--disk", action="append", metavar="IMAGE",
                     help="an ATA disk image: the first is the primary master, a second the slave; "
                          "with no guest, boot from the first like a PC")
    run.add_argument("--snapshot", action="store_true",
                     help="never write the disk images: writes stay in memory")
    run.add_argument("--opt", choices=("O0", "O2"), default="O2", help="optimisation level to build the guest at")
    run.add_argument("--trace", nargs="?", const="-", metavar="FILE",
                     help="trace every instruction (capstone) and the registers it changes, to FILE or stderr")
    run.add_argument("--max-instructions", type=int, metavar="N", help="stop after N instructions")
    run.add_argument("--cmdline", default="", metavar="STR", help="the kernel command line (Multiboot)")
    run.add_argument("--memory", default="128M", metavar="SIZE", help="guest RAM (default 128M, as QEMU)")
    run.add_argument("--mode", choices=("emulate", "trap", "bt", "pv", "hw"), default="emulate",
                     help="how the guest is run: emulate (no VMM, the baseline) or under a VMM: "
                          "trap (trap-and-emulate, the guest kernel at ring 1), "
                          "bt (binary translation of the guest kernel's code), "
                          "pv (paravirtual: hypercalls, docs/hypercall-abi.md; other kernels "
                          "are trapped and emulated), "
                          "hw (hardware assist: VT-x-style guest mode and VM exits)")
    run.add_argument("--paging", choices=("shadow", "nested"), default=None,
                     help="hw mode's memory virtualization: nested (EPT-style nested page tables, "
                          "the default) or shadow (shadow page tables)")
    run.add_argument("--pure", action="store_true", help="run the uncompiled core (pure Python)")
    run.add_argument("--realtime", action="store_true",
                     help="device clocks follow the host's clock (default: the instruction count, "
                          "so runs are deterministic)")
    run.add_argument("--screen", action="store_true",
                     help="show the VGA text screen (80x25 at 0xB8000) when the run ends")
    run.add_argument("--quiet", "-q", action="store_true", help="no summary line")
    run.add_argument("--verbose", "-v", action="store_true", help="list accesses to unclaimed ports and VMM entries by reason")
    run.set_defaults(func=cmd_run)
    cmp = sub.add_parser("compare", help="run a guest under every mode and compare")
    cmp.add_argument("guest", help="a bundled guest's name, a guest source folder, or a Multiboot ELF")
    cmp.add_argument("--mode", action="append", metavar="MODE[:PAGING]",
                     help="only this mode (again for more) besides emulate: trap, bt, pv, hw, "
                          "or hw:nested / hw:shadow for hw with that memory virtualization")
    cmp.add_argument("--opt", choices=("O0", "O2"), default="O2")
    cmp.add_argument("--cmdline", default="", metavar="STR")
    cmp.add_argument("--disk", action="append", metavar="IMAGE",
                     help="an ATA disk image for every run (never written: --snapshot)")
    cmp.add_argument("--max-instructions", type=int, metavar="N", help="budget for each run")
    cmp.add_argument("--json", action="store_true", help="results as JSON")
    cmp.add_argument("--plot", metavar="FILE.png", help="also draw the comparison (matplotlib)")
    cmp.set_defaults(func=cmd_compare)
    bts = sub.add_parser("bt-show", help="show a guest's code beside its binary translation")
    bts.add_argument("guest", help="a bundled guest's name, a guest source folder, or a Multiboot ELF")
    bts.add_argument("--blocks", type=int, default=8, metavar="N", help="how many blocks (8)")
    bts.add_argument("--address", type=lambda v: int(v, 0), metavar="EIP",
                     help="only the blocks holding this guest address")
    bts.add_argument("--max-instructions", type=int, default=None, metavar="N",
                     help="stop the guest after N instructions (default: run it to the end)")
    bts.add_argument("--opt", choices=("O0", "O2"), default="O2")
    bts.add_argument("--cmdline", default="", metavar="STR")
    bts.set_defaults(func=cmd_bt_show)
    guests = sub.add_parser("guests", help="list the bundled guests")
    guests.set_defaults(func=cmd_guests)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        sys.stderr.write(f"pyvmm: {e}\n")
        return 64
    except KeyboardInterrupt:
        sys.stderr.write("pyvmm: interrupted\n")
        return 130
    except BrokenPipeError:
        # the reader went away (`pyvmm guests | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
