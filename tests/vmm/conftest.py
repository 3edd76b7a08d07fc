"""tests/vmm: a summary of the isolation suite's counts at the end of the run
(test_isolation.STATS: escape attempts and hostile programs, by mode and outcome)."""
import sys


def pytest_terminal_summary(terminalreporter):
    module = sys.modules.get("tests.vmm.test_isolation") or sys.modules.get("vmm.test_isolation")
    stats = getattr(module, "STATS", None)
    if not stats:
        return
    tr = terminalreporter
    tr.section("pyvmm isolation: every attempt contained")
    for part in ("escape", "hostile", "campaign"):
        rows = {}
        for (p, mode, outcome), n in stats.items():
            if p == part:
                rows.setdefault(mode, {})[outcome] = n
        if not rows:
            continue
        columns = sorted({o for row in rows.values() for o in row if o != "seconds"})
        tr.write_line(f"{part}: " + ("attempts by how they ended" if part == "escape"
                                     else "programs by RunResult.reason"))
        width = {c: max(len(c), 6) + 2 for c in columns}
        tr.write_line(f"  {'mode':<10}" + "".join(f"{c:>{width[c]}}" for c in columns) + f"{'total':>8}"
                      + (f"{'seconds':>9}" if any("seconds" in r for r in rows.values()) else ""))
        for mode, row in rows.items():
            total = sum(n for o, n in row.items() if o != "seconds")
            line = f"  {mode:<10}" + "".join(f"{row.get(c, 0):>{width[c]}}" for c in columns) + f"{total:>8}"
            if "seconds" in row:
                line += f"{row['seconds']:>9}"
            tr.write_line(line)
        total = sum(n for (p, _, o), n in stats.items() if p == part and o != "seconds")
        tr.write_line(f"  all modes: {total}, every one contained")
