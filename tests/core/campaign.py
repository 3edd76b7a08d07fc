"""Differential campaign: many random cases per family, optionally in worker processes.

Every case is named SEED/FAMILY/INDEX and rebuilt from that name alone (random.Random
seeded with the string), so any failure can be replayed.

    python -m tests.core.campaign --workers 2 --cases 0      # unbounded, all cores; Ctrl-C
    python -m tests.core.campaign --workers 2 --cases 20000  # bounded total
    python -m tests.core.campaign --family shift --cases 5000
    python -m tests.core.campaign --replay 1234/shift/17     # print that case's report
    python -m tests.core.campaign --pure ...                 # the uncompiled core

Distinct failures (one per family/mnemonic/operands/kind signature) are printed once with
their full report and appended to --out (default campaign-failures.txt). The pytest
campaign (`pytest -m campaign`) calls run_batch() for each family.
"""
import argparse
import multiprocessing as mp
import os
import random
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    __package__ = "tests.core"

from . import templates as T  # noqa: E402

RANDOM_BYTES = "random-bytes"


def all_families():
    return T.families() + [RANDOM_BYTES]


def case_for(name):
    """(verdict, Case) for a case name SEED/FAMILY/INDEX."""
    _seed, family, _index = name.split("/")
    rng = random.Random(name)
    if family == RANDOM_BYTES:
        verdict, case = T.random_bytes_case(rng)
    else:
        verdict, case = "compare", T.random_case(rng, family)
    if case is not None:
        case.notes["case"] = name
    return verdict, case


def signature(case, diffs):
    kind = "outcome" if any(d.field == "outcome" for d in diffs) else \
        "+".join(sorted({d.field.split()[0] for d in diffs}))
    ins = case.insn
    return f"{case.family}: {ins.mnemonic if ins else '?'} {ins.operands if ins else ''} [{kind}]"


class Checker:
    def __init__(self, cpu_class=None):
        from pyvmm.oracle import PyvmmRunner, UnicornRunner
        self.oracle = UnicornRunner()
        self.pyvmm = PyvmmRunner(cpu_class)

    def check(self, name):
        """(verdict, signature or None, report or None) for one named case."""
        try:
            return self._check(name)
        except Exception as e:          # a harness bug must not end the campaign
            import traceback
            family = name.split("/")[1]
            return "compare", f"{family}: harness exception {type(e).__name__}", \
                f"{name}: {traceback.format_exc()}"

    def _check(self, name):
        from pyvmm.oracle import format_report
        verdict, case = case_for(name)
        if case is None:
            return verdict, None, None
        template = name.split("/")[1] != RANDOM_BYTES
        err = T.self_check(case) if template else None
        if err:
            return verdict, f"{case.family}: template", f"{name}: {err}"
        if verdict == "ud":
            b = self.pyvmm.run(case)
            if b.outcome == "exception" and b.vector == 6:
                return verdict, None, None
            return verdict, f"{case.family}: {case.insn.mnemonic} invalid LOCK [outcome]", \
                f"{name}: LOCK without a lockable memory destination must raise #UD, " \
                f"pyvmm: {b.outcome_text()}\n  code {case.code.hex(' ')}"
        a, b, diffs = T.differential(case, self.oracle, self.pyvmm)
        if not diffs:
            return verdict, None, None
        return verdict, signature(case, diffs), format_report(case, a, b, diffs, f"{name}")


def run_batch(family, n, seed, cpu_class=None, checker=None, start=0, fill=False, on_case=None):
    """Run cases seed/family/start .. start+n-1 (with fill=True: go on past skipped
    random-byte cases until n were checked, at most 3n). Returns (stats, failures) where
    failures maps signature -> [count, first report]."""
    checker = checker or Checker(cpu_class)
    stats = {"compared": 0, "skipped": 0, "ud": 0, "failed": 0}
    failures = {}
    i = start
    while i < start + (3 * n if fill else n):
        if fill and stats["compared"] + stats["ud"] >= n:
            break
        name = f"{seed}/{family}/{i}"
        if on_case:
            on_case(name)
        verdict, sig, report = checker.check(name)
        i += 1
        if verdict == "skip":
            stats["skipped"] += 1
            continue
        stats["compared" if verdict == "compare" else "ud"] += 1
        if sig:
            stats["failed"] += 1
            entry = failures.setdefault(sig, [0, report])
            entry[0] += 1
    return stats, failures


# ------------------------------------------------------------------------------------------
# Worker processes
# ------------------------------------------------------------------------------------------
def _worker(wid, seed, families, quota, pure, queue, current):
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the parent's business
    cpu_class = None
    if pure:
        import pyvmm
        cpu_class = pyvmm.load_pure().cpu.CPU
    checker = Checker(cpu_class)

    def on_case(name):
        current.value = name.encode()[:127]
    i = 0
    batch = 50
    while quota == 0 or i < quota:
        n = batch if quota == 0 else min(batch, quota - i)
        for fam in families:
            stats, failures = run_batch(fam, n, f"{seed}.{wid}", checker=checker, start=i,
                                        on_case=on_case)
            queue.put((fam, stats, failures))
        i += n
    queue.put(("done", wid))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cases", type=int, default=20000,
                    help="total cases over all families and workers (0: run until Ctrl-C)")
    ap.add_argument("--family", action="append", help="only these families (repeatable)")
    ap.add_argument("--seed", default=None)
    ap.add_argument("--out", default="campaign-failures.txt")
    ap.add_argument("--pure", action="store_true", help="test the uncompiled core")
    ap.add_argument("--replay", help="print the report of case SEED/FAMILY/INDEX")
    ap.add_argument("--wild", type=int, default=0,
                    help="run N wild random-byte cases on pyvmm only (crash check), then exit")
    args = ap.parse_args(argv)

    if args.wild:
        return wild_main(args.seed or "0", args.wild, args.pure)
    if args.replay:
        cpu_class = None
        if args.pure:
            import pyvmm
            cpu_class = pyvmm.load_pure().cpu.CPU
        verdict, sig, report = Checker(cpu_class).check(args.replay)
        print(report or f"{args.replay}: {verdict}, no mismatch")
        return 1 if sig else 0

    families = args.family or all_families()
    seed = args.seed or str(random.randrange(1 << 32))
    per_worker_family = 0 if args.cases == 0 else max(1, args.cases // (args.workers * len(families)))
    import pyvmm
    print(f"campaign seed {seed}: {args.workers} worker(s), families {', '.join(families)}; "
          f"{'unbounded' if args.cases == 0 else f'{per_worker_family} cases per family per worker'}; "
          f"core {'pure Python' if args.pure or not pyvmm.COMPILED else 'compiled'}", flush=True)
    import queue as queue_module
    queue = mp.Queue()
    currents = [mp.Array("c", 128) for _ in range(args.workers)]
    procs = [mp.Process(target=_worker, args=(w, seed, families, per_worker_family, args.pure,
                                              queue, currents[w]), daemon=True)
             for w in range(args.workers)]
    for p in procs:
        p.start()
    totals = {}
    seen = {}
    finished = set()
    t0 = last = time.time()

    def record(sig, count, report):
        if sig not in seen:
            seen[sig] = 0
            print(f"\nNEW FAILURE {sig}\n{report}\n", flush=True)
            with open(args.out, "a") as f:
                f.write(f"{sig}\n{report}\n\n")
        seen[sig] += count
    try:
        while len(finished) < len(procs):
            try:
                item = queue.get(timeout=2)
            except queue_module.Empty:
                for w, p in enumerate(procs):
                    if w not in finished and not p.is_alive():
                        # died without saying goodbye: a crash of the host (signal)
                        finished.add(w)
                        name = currents[w].value.decode()
                        record(f"worker crash (exit code {p.exitcode})", 1,
                               f"worker {w} died with exit code {p.exitcode} while running "
                               f"case {name}\nreplay: python -m tests.core.campaign --replay {name}")
                continue
            if item[0] == "done":
                finished.add(item[1])
                continue
            fam, stats, failures = item
            for k, v in stats.items():
                totals[k] = totals.get(k, 0) + v
            for sig, (count, report) in failures.items():
                record(sig, count, report)
            if time.time() - last > 10:
                last = time.time()
                rate = (totals.get("compared", 0) + totals.get("ud", 0)) / (last - t0)
                print(f"[{last - t0:7.0f}s] {totals} {rate:.0f} cases/s, "
                      f"{len(seen)} distinct failure(s)", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
    print(f"\ncampaign seed {seed}: {totals}")
    for sig, count in sorted(seen.items()):
        print(f"  {count:6d}  {sig}")
    return 1 if seen else 0



# ------------------------------------------------------------------------------------------
# "Never crashes the host": wild random bytes and state, pyvmm only
# ------------------------------------------------------------------------------------------
def wild_setup(cpu, rng, code):
    """Map the usual regions, write `code` at CODE_ADDR and random state: registers, flags
    (sometimes TF), and sometimes garbage descriptor tables or paging on the random data."""
    for addr, size in T.REGIONS:
        cpu.mem_map(addr, size)
    cpu.mem_write(T.DATA_BASE, random.Random(rng.getrandbits(32)).randbytes(T.DATA_SIZE))
    region = bytearray([T.HLT]) * T.CODE_SIZE
    off = T.CODE_ADDR - T.CODE_BASE
    region[off:off + len(code)] = code
    cpu.mem_write(T.CODE_BASE, bytes(region))
    regs = T.random_state(rng)
    for name in T.REG32:
        cpu.reg_write(name, regs[name])
    fl = regs["eflags"]
    if rng.random() < 0.05:
        fl |= 0x100                                     # TF: #DB after each instruction
    cpu.reg_write("eflags", fl)
    extra = {}
    k = rng.random()
    if k < 0.2:
        extra = {"idtr_base": rng.randrange(0, T.DATA_SIZE), "idtr_limit": rng.getrandbits(16),
                 "gdtr_base": rng.randrange(0, T.DATA_SIZE), "gdtr_limit": rng.getrandbits(16)}
    elif k < 0.25:
        extra = {"cr3": rng.randrange(0, T.DATA_SIZE) & ~0xFFF, "cr0": 0x80000011}
    for name, value in extra.items():
        try:
            cpu.reg_write(name, value)
        except (KeyError, ValueError):
            pass
    return regs, extra


def wild_run(cpu_class, code, rng, steps=64):
    """Run random code; returns the outcome text, or raises whatever pyvmm raised if that
    is not a clean stop, a GuestFault, UnmappedMemory or Unsupported."""
    import pyvmm
    mod = sys.modules[cpu_class.__module__]
    faults = tuple({pyvmm.GuestFault, getattr(mod, "GuestFault", pyvmm.GuestFault)})
    memmod = sys.modules.get(cpu_class.__module__.rsplit(".", 1)[0] + ".memory")
    unmapped = tuple({pyvmm.UnmappedMemory, getattr(memmod, "UnmappedMemory", pyvmm.UnmappedMemory)})
    cpu = cpu_class()
    regs, extra = wild_setup(cpu, rng, code)
    try:
        if rng.random() < 0.2:
            cpu.reg_write("eip", T.CODE_ADDR)
            for _ in range(rng.randrange(1, 8)):
                cpu.step()
            outcome = "stepped"
        else:
            cpu.emu_start(T.CODE_ADDR, T.CODE_ADDR + len(code), count=steps)
            outcome = "ok"
    except faults as e:
        outcome = f"fault {e.vector}"
    except unmapped as e:
        outcome = f"unmapped {e.address:#x}"
    except pyvmm.Unsupported as e:             # a clean stop: a feature not implemented yet
        outcome = f"unsupported: {e}"
    for name in T.REG32 + ("eip", "eflags", "cs", "ds", "ss", "es", "fs", "gs"):
        cpu.reg_read(name)
    cpu.mem_read(T.DATA_BASE, 16)
    return outcome


def wild_batch(seed, n, cpu_class=None, echo=None):
    """n wild cases named wild/SEED/I; `echo(name, code)` is called before each."""
    import pyvmm
    cpu_class = cpu_class or pyvmm.CPU
    outcomes = {}
    for i in range(n):
        name = f"wild/{seed}/{i}"
        rng = random.Random(name)
        code = rng.randbytes(rng.randrange(1, 33)) if rng.random() < 0.5 else \
            b"".join(T.random_code(rng, rng.randrange(1, 16)) for _ in range(rng.randrange(1, 4)))
        if echo:
            echo(name, code)
        out = wild_run(cpu_class, code, rng)
        key = out.split()[0]
        outcomes[key] = outcomes.get(key, 0) + 1
    return outcomes


def wild_main(seed, n, pure):
    import pyvmm
    cpu_class = pyvmm.load_pure().cpu.CPU if pure else pyvmm.CPU

    def echo(name, code):
        sys.stdout.write(f"CASE {name} {code.hex()}\n")
        sys.stdout.flush()
    print(f"DONE {wild_batch(seed, n, cpu_class, echo)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
