"""Random instruction bytes.

(a) Differential: random bytes whose first instruction capstone decodes and whose opcode
    (and ModRM.reg group) is in the isa table run on Unicorn and pyvmm and are compared
    like the template cases (templates.classify_bytes drops the skipped families and the
    inputs on which Unicorn is known wrong, unicorn_runner.UNICORN_LIMITS). LOCK in front of
    something that cannot be locked is checked on pyvmm alone: it must raise #UD.
(b) Never crashes the host: random bytes (several instructions), random registers and
    flags (sometimes TF), sometimes garbage IDT/GDT or paging on random memory, on pyvmm
    only: each run must end cleanly, in GuestFault, UnmappedMemory or Unsupported (a
    feature not implemented yet, stopped cleanly); never another
    Python exception. A child process runs a batch too, so that a segfault of the compiled
    core is reported with the input that caused it instead of killing pytest.

PYVMM_DIFF_EXAMPLES (default 200) scales the number of examples, as in test_differential.
"""
import os
import subprocess
import sys

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pyvmm.oracle import PyvmmRunner, UnicornRunner, format_report

from . import campaign
from . import templates as T

EXAMPLES = int(os.environ.get("PYVMM_DIFF_EXAMPLES", "200"))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_RUNNERS = {}


def runners(cpu_class):
    if cpu_class not in _RUNNERS:
        _RUNNERS[cpu_class] = (UnicornRunner(), PyvmmRunner(cpu_class))
    return _RUNNERS[cpu_class]


def check_bytes(rng, cpu_class, code=None):
    verdict, case = T.random_bytes_case(rng, code)
    assume(verdict != "skip")
    oracle, runner = runners(cpu_class)
    if verdict == "ud":
        b = runner.run(case)
        T.count("random-bytes:ud-checked")
        assert b.outcome == "exception" and b.vector == 6, (
            f"LOCK without a lockable memory destination must raise #UD (SDM LOCK); pyvmm: "
            f"{b.outcome_text()}\n  code {case.code.hex(' ')}  ({case.description})")
        return
    a, b, diffs = T.differential(case, oracle, runner)
    T.count("random-bytes:compared")
    if diffs:
        T.count("random-bytes:FAILED")
        raise AssertionError("\n" + format_report(case, a, b, diffs, "Unicorn vs pyvmm"))


@settings(max_examples=2 * EXAMPLES)
@given(rng=st.randoms(use_true_random=False))
def test_random_bytes_differential(rng, cpu_class):
    """Bytes biased towards the table (prefixes, table opcodes, 0F xx)."""
    check_bytes(rng, cpu_class)


@settings(max_examples=EXAMPLES)
@given(code=st.binary(min_size=15, max_size=15), rng=st.randoms(use_true_random=False))
def test_raw_bytes_differential(code, rng, cpu_class):
    """Uniformly random bytes (shrinks towards 00 00 ...)."""
    check_bytes(rng, cpu_class, code)


@settings(max_examples=2 * EXAMPLES)
@given(code=st.binary(min_size=1, max_size=40), rng=st.randoms(use_true_random=False))
def test_never_crashes(code, rng, cpu_class):
    campaign.wild_run(cpu_class, code, rng)


@settings(max_examples=max(20, EXAMPLES // 4))
@given(code=st.binary(min_size=1, max_size=40), rng=st.randoms(use_true_random=False))
def test_never_crashes_pure(code, rng):
    """The same for the uncompiled core (no segfaults there, but no stray exceptions either)."""
    import pyvmm
    campaign.wild_run(pyvmm.load_pure().cpu.CPU, code, rng)


def test_never_crashes_subprocess():
    """A batch of wild cases in a child process: a crash (signal) names its input."""
    n = max(50, EXAMPLES)
    seed = str(os.getpid())
    p = subprocess.run([sys.executable, "-m", "tests.core.campaign", "--wild", str(n),
                        "--seed", seed], cwd=REPO, capture_output=True, text=True, timeout=1800)
    cases = [line for line in p.stdout.splitlines() if line.startswith("CASE ")]
    if p.returncode != 0:
        last = cases[-1] if cases else "(before the first case)"
        raise AssertionError(
            f"the child died with status {p.returncode} running {last}\n"
            f"replay: python -m tests.core.campaign --wild {len(cases)} --seed {seed}\n"
            f"stderr:\n{p.stderr[-3000:]}")
    assert p.stdout.rstrip().splitlines()[-1].startswith("DONE"), p.stdout[-2000:]
    assert len(cases) == n
