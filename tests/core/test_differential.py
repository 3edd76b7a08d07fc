"""Differential tests: pyvmm's CPU against Unicorn (QEMU TCG), one instruction at a time.

Every row of pyvmm._core.isa.INSTRUCTIONS (except the families in templates.SKIP_*, which
test_harness_api.py covers) is encoded by tests/core/templates.py with random operand and
address sizes, addressing forms, prefixes, registers, flags and memory, run on both
machines, and compared: all 8 GPRs, EIP, EFLAGS (ignoring only the bits isa.undefined_mask
leaves undefined, plus unicorn_runner.KNOWN_DEVIATIONS), every byte of the data and code
regions, the outcome (exception vector / unmapped access), and the decoded length
(pyvmm's decode_length against capstone's).

Quick run (default PYVMM_DIFF_EXAMPLES=200 hypothesis examples per family, 14 families, plus
4 fixed cases for every testable row; ~30 s with the compiled core):
    pytest tests/core/test_differential.py
More per family:
    PYVMM_DIFF_EXAMPLES=2000 pytest tests/core/test_differential.py
Bounded campaign, about N cases per family (+ N random-byte cases), all failures collected:
    PYVMM_DIFF_EXAMPLES=1500 pytest -m campaign tests/core      # ~22,500 cases, ~40 s
Unbounded campaign on all cores (Ctrl-C stops; failures appended to campaign-failures.txt):
    python -m tests.core.campaign --workers $(nproc) --cases 0
Replay a campaign failure by its name:
    python -m tests.core.campaign --replay SEED/FAMILY/INDEX
"""
import dataclasses
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyvmm
from pyvmm._core import isa
from pyvmm.oracle import PyvmmRunner, UnicornRunner, compare, format_report

from . import templates as T

EXAMPLES = int(os.environ.get("PYVMM_DIFF_EXAMPLES", "200"))
PURE_CASES = max(4, EXAMPLES // 50)     # per row, for test_pure_matches_compiled
FAMILIES = T.families()

_RUNNERS = {}


def runners(cpu_class):
    if cpu_class not in _RUNNERS:
        _RUNNERS[cpu_class] = (UnicornRunner(), PyvmmRunner(cpu_class))
    return _RUNNERS[cpu_class]


def check(case, cpu_class):
    err = T.self_check(case)
    assert err is None, err
    oracle, runner = runners(cpu_class)
    a, b, diffs = T.differential(case, oracle, runner)
    T.count(f"{case.family}:compared")
    if diffs:
        T.count(f"{case.family}:FAILED")
        raise AssertionError("\n" + format_report(case, a, b, diffs, "Unicorn vs pyvmm"))


def test_families_cover_the_table():
    """Every row is either in a differential family or deliberately skipped."""
    covered = {r for f in FAMILIES for r in T.rows_of(f)}
    for row in isa.INSTRUCTIONS:
        assert row in covered or not T.testable(row), row
    assert set(T.GENERATORS) >= set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_differential(family, data, cpu_class):
    row = data.draw(st.sampled_from(T.rows_of(family)), label="row")
    rng = data.draw(st.randoms(use_true_random=False), label="rng")
    check(T.make_case(rng, row), cpu_class)


@pytest.mark.parametrize("row", [r for r in isa.INSTRUCTIONS if T.testable(r)],
                         ids=lambda r: f"{r.mnemonic}-{r.operands or 'none'}-{r.opcode:x}"
                         + (f"-{r.reg}" if r.reg is not None else ""))
def test_every_row(row, cpu_class):
    """Each testable row, a few fixed cases (so the quick run covers all of them)."""
    for i in range(4):
        rng = random.Random(f"row/{row.opcode}/{row.reg}/{row.operands}/{i}")
        check(T.make_case(rng, row), cpu_class)


@pytest.mark.skipif(not pyvmm.COMPILED, reason="the core is not compiled: pyvmm.CPU is the "
                    "pure-Python class already")
def test_pure_matches_compiled():
    """The uncompiled core must behave exactly as the compiled one: same state, memory and
    outcome on a representative subset of the differential cases (including the bits the
    SDM leaves undefined: it is the same source)."""
    compiled = PyvmmRunner(pyvmm.CPU)
    pure = PyvmmRunner(pyvmm.load_pure().cpu.CPU)
    assert compiled.cpu_class is not pure.cpu_class
    mismatches = []
    rows = [r for r in isa.INSTRUCTIONS if T.testable(r)]
    cases = [T.make_case(random.Random(f"pure/{n}/{i}"), row)
             for n, row in enumerate(rows) for i in range(PURE_CASES)]
    for i in range(PURE_CASES * 4):
        verdict, case = T.random_bytes_case(random.Random(f"pure/random-bytes/{i}"))
        if case is not None:
            cases.append(case)
    for case in cases:
        a, b = compiled.run(case), pure.run(case)
        a.runner, b.runner = "compiled", "pure"
        same = (a.outcome, a.vector, a.error_code, a.address, a.regs, a.memory) == \
            (b.outcome, b.vector, b.error_code, b.address, b.regs, b.memory)
        if not same:
            exact = dataclasses.replace(case, flag_mask=0, undefined_regs={}, undefined_mem=[])
            diffs = compare(exact, a, b, deviations=[])
            mismatches.append(format_report(exact, a, b, diffs, "compiled vs pure"))
    assert not mismatches, f"{len(mismatches)} of {len(cases)} cases differ\n" + \
        "\n\n".join(mismatches[:5])


@pytest.mark.campaign
@pytest.mark.parametrize("family", FAMILIES + ["random-bytes"])
def test_campaign(family, cpu_class):
    """About PYVMM_DIFF_EXAMPLES (default 2000) cases of one family from a fresh seed
    (PYVMM_CAMPAIGN_SEED to repeat one); collects every distinct failure."""
    from .campaign import run_batch
    n = int(os.environ.get("PYVMM_DIFF_EXAMPLES", "2000"))
    seed = os.environ.get("PYVMM_CAMPAIGN_SEED") or str(random.randrange(1 << 32))
    stats, failures = run_batch(family, n, seed, cpu_class, fill=True)
    T.count(f"{family}:compared", stats["compared"])
    if stats["ud"]:
        T.count(f"{family}:ud-checked", stats["ud"])
    if stats["failed"]:
        T.count(f"{family}:FAILED", stats["failed"])
    if failures:
        lines = [f"campaign seed {seed}, family {family}: {stats}"]
        for sig, (count, report) in sorted(failures.items()):
            lines.append(f"--- {count} x {sig}\n{report}")
        pytest.fail("\n".join(lines), pytrace=False)
