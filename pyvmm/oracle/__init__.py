"""Oracles that pyvmm's CPU is checked against.

`unicorn_runner` runs one code snippet on Unicorn (QEMU's TCG, UC_MODE_32) and on a pyvmm
CPU with the same memory layout and registers, and compares the two result records field
by field. Unicorn is an oracle, not the truth: where it contradicts the Intel SDM the
deviation is listed, narrowly, in `unicorn_runner.KNOWN_DEVIATIONS` (and, for the system
cases with descriptor tables, rings and paging, `SYSTEM_UNICORN_LIMITS`).
"""
from .unicorn_runner import (GPRS, KNOWN_DEVIATIONS, SYSTEM_UNICORN_LIMITS, Case, Deviation,
                             Expected, PyvmmRunner, PyvmmSystemRunner, Result, SystemCase,
                             UnicornRunner, UnicornSystemRunner, compare, compare_system,
                             disassemble, format_report, format_system_report)

__all__ = ["GPRS", "KNOWN_DEVIATIONS", "SYSTEM_UNICORN_LIMITS", "Case", "Deviation", "Expected",
           "PyvmmRunner", "PyvmmSystemRunner", "Result", "SystemCase", "UnicornRunner",
           "UnicornSystemRunner", "compare", "compare_system", "disassemble", "format_report",
           "format_system_report"]
