"""The memory-virtualization guests (guests/ptemod, guests/pagefault, guests/tlbstress) under
every mode: the same output as on the bare machine, and the page faults where shadow
paging and nested paging put them.

Each guest checks itself (its last line: "<name>: N checks, 0 failed") and counts the page
faults its own handler took ("<name>: N page faults taken"; tlbstress takes none). Under
trap-and-emulate every one of those is a *true* fault, one the guest's tables refuse, and
so reflected into the guest, while the faults that only the shadow tables caused stay
hidden; under hardware assist (nested paging) nothing but the guests' I/O exits. Their
benchmark brackets (port 0x504) say in which phase the exits came.
"""
import re

import pytest

from pyvmm.compare import run_mode
from tests.guest_build import guests_build

GUESTS = ["ptemod", "pagefault", "tlbstress"]
MODES = ["emulate", "trap", "bt", "pv", "hw"]
BUDGET = 100_000_000
REFLECTED = "exception #PF (reflected)"
HIDDEN = "page fault (hidden)"

# The true faults of each bracket, by the guests' design at their default sizes:
# ptemod (48 forks a phase): a reuse fault per fork/exit, 4 copies and a reuse per fork/cow;
# pagefault (2048 pages): one per page, a quarter evicted and refaulted, a quarter written
# while write-protected; tlbstress: none.
BRACKET_FAULTS = {
    "ptemod": {"fork/exit": 48, "fork/cow": 5 * 48},
    "pagefault": {"demand": 2048, "evict": 0, "refault": 512, "wrprotect": 512},
    "tlbstress": {"tlb fits": 0, "tlb seq": 0, "tlb stride": 0, "tlb random": 0,
                  "4m random": 0, "cr3 reload": 0, "cr3 global": 0},
}


@pytest.fixture(scope="module")
def runs():
    """runs(name, mode) -> (ModeRun, output text), each run once per module (-O2)."""
    cache = {}

    def get(name, mode):
        if (name, mode) not in cache:
            run, out = run_mode(guests_build.build(name, "O2"), mode, budget=BUDGET)
            cache[name, mode] = run, out.decode().replace("\r\n", "\n")
        return cache[name, mode]
    return get


def own_faults(output, name):
    m = re.search(rf"^{name}: (\d+) page faults taken$", output, re.M)
    return int(m.group(1)) if m else 0


@pytest.mark.parametrize("name", GUESTS)
def test_guest_passes_its_checks_on_the_bare_machine(runs, name):
    run, out = runs(name, "emulate")
    assert (run.outcome, run.status) == ("exit", 1), run.message + out
    assert re.search(rf"^{name}: \d+ checks, 0 failed$", out, re.M), out
    assert [b["op"] for b in run.brackets] == list(BRACKET_FAULTS[name])
    assert own_faults(out, name) >= sum(BRACKET_FAULTS[name].values())


@pytest.mark.parametrize("mode", MODES[1:])
@pytest.mark.parametrize("name", GUESTS)
def test_guest_runs_identically_under_every_mode(runs, name, mode):
    bare, bare_out = runs(name, "emulate")
    run, out = runs(name, mode)
    assert (run.outcome, run.status) == ("exit", 1), run.message
    assert out == bare_out
    if mode != "bt":            # (bt runs translated code, with instructions of its own)
        assert run.instructions == bare.instructions
    assert [b["op"] for b in run.brackets] == [b["op"] for b in bare.brackets]


@pytest.mark.parametrize("name", GUESTS)
def test_true_faults_are_reflected_under_trap(runs, name):
    _, bare_out = runs(name, "emulate")
    run, _ = runs(name, "trap")
    assert run.exits.get(REFLECTED, 0) >= own_faults(bare_out, name)
    # and the shadow tables had to be filled, fault by fault, in every guest
    assert run.exits[HIDDEN] > 0
    for bracket in run.brackets:
        assert bracket["exits"].get(REFLECTED, 0) == BRACKET_FAULTS[name][bracket["op"]], bracket


@pytest.mark.parametrize("name", GUESTS)
def test_pv_traps_them_as_trap_does(runs, name):
    # none of them makes hypercalls: pv traps and emulates them, shadow paging included
    assert runs(name, "pv")[0].exits == runs(name, "trap")[0].exits


@pytest.mark.parametrize("name", GUESTS)
def test_nested_paging_takes_no_page_fault_exits(runs, name):
    run, _ = runs(name, "hw")
    assert set(run.exits) == {"I/O instruction (30)"}, run.exits
    # one exit per bracket: its opening marker's OUT
    assert all(b["exits"] == {"I/O instruction (30)": 1} for b in run.brackets)


def test_cr3_reloads_keep_the_cached_shadow(runs):
    """tlbstress: reloading CR3 before each sweep of 128 pages finds that address space's
    shadow cached (the page tables did not change, so nothing is out of sync): the sweeps
    after the first cost no hidden faults, global pages or not; and the same phases under
    nested paging cost no exits at all."""
    run, _ = runs("tlbstress", "trap")
    phases = {b["op"]: b for b in run.brackets}
    for op in ("cr3 reload", "cr3 global"):
        memory = phases[op]["memory"]
        assert memory["CR3 switches"] >= 16 and memory["shadow reuses"] >= memory["CR3 switches"] - 1
        # a few refills where the guest changed its entries, not a refill per access
        assert phases[op]["exits"].get(HIDDEN, 0) < phases[op]["iterations"] / 8
    assert phases["tlb fits"]["exits"].get(HIDDEN, 0) < phases["tlb fits"]["iterations"] / 100
