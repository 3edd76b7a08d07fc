"""Shared test configuration for pyvmm.

* `cpu_class` fixture: the CPU class under test, the compiled core when pyvmm.COMPILED,
  else the pure-Python one (which is then what `pyvmm.CPU` is anyway).
* the `campaign` marker (also declared in pyproject.toml): long differential campaigns,
  skipped unless selected with `-m campaign` (or PYVMM_CAMPAIGN=1 is set).
* a hypothesis profile without deadlines (the uncompiled core is ~100x slower than the
  compiled one, and Unicorn's first run in a process is slow).
* a summary of how many differential cases ran, per family, at the end of the run.
"""
import os
import sys

import pytest
from hypothesis import HealthCheck, settings

import pyvmm

settings.register_profile(
    "pyvmm",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "pyvmm"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "campaign: long differential campaigns (CI runs them at a bounded size)")


def pytest_collection_modifyitems(config, items):
    markexpr = config.getoption("markexpr", "") or ""
    if "campaign" in markexpr or os.environ.get("PYVMM_CAMPAIGN"):
        return
    skip = pytest.mark.skip(reason="campaign: select with -m campaign")
    for item in items:
        if "campaign" in item.keywords:
            item.add_marker(skip)


def cpu_class_under_test():
    """The compiled CPU when the core is built, else the pure-Python one."""
    return pyvmm.CPU


@pytest.fixture(scope="session")
def cpu_class():
    return cpu_class_under_test()


def pytest_terminal_summary(terminalreporter):
    templates = sys.modules.get("core.templates") or sys.modules.get("tests.core.templates")
    stats = getattr(templates, "STATS", None)
    if not stats:
        return
    tr = terminalreporter
    tr.section("pyvmm differential cases")
    tr.write_line(f"core: {'compiled' if pyvmm.COMPILED else 'pure Python'}")
    total = 0
    for key in sorted(stats):
        tr.write_line(f"  {key:<40} {stats[key]:>8}")
        if key.endswith(":compared"):
            total += stats[key]
    tr.write_line(f"  {'total compared with Unicorn':<40} {total:>8}")
