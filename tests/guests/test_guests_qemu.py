"""Build every guest kernel in guests/ at -O0 and -O2 and boot it on QEMU, the oracle.

Each guest must exit through isa-debug-exit with code 0 (QEMU's process status 1) and
print its key lines. Nothing is compared with saved output: QEMU runs live. For the
self-checking guests the outputs at -O0 and -O2 must also be equal (they print only
position-independent values), which catches miscompiled or layout-dependent tests.

Skipped, with the reason, when qemu-system-i386 or the toolchain (gcc, as, ld) is missing:
`apt-get install -y qemu-system-x86` brings QEMU.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QEMU = shutil.which("qemu-system-i386")
MISSING_TOOLS = [t for t in ("gcc", "as", "ld") if not shutil.which(t)]

pytestmark = [
    pytest.mark.skipif(QEMU is None, reason="qemu-system-i386 not installed "
                       "(apt-get install -y qemu-system-x86)"),
    pytest.mark.skipif(bool(MISSING_TOOLS), reason=f"toolchain missing: {MISSING_TOOLS}"),
]

OPTS = ("O0", "O2")
EXIT_OK = 1                     # isa-debug-exit: status = (code << 1) | 1, code 0
# Guests that check something a kernel file alone does not bring: booted bare, they say
# so and exit with code 2 (status 5). Their own tests give them what they need
# (disk: tests/machine/test_disk_guest.py).
EXIT_NOTHING_TO_CHECK = 5
NEEDS_MORE = {"disk": "no ATA disk on the primary channel"}


from tests.guest_build import guests_build  # noqa: E402
GUESTS = guests_build.guest_names()


@pytest.fixture(scope="module")
def elf():
    """elf(name, opt) -> path, building on first use (and only what is out of date)."""
    cache = {}

    def get(name, opt):
        if (name, opt) not in cache:
            cache[name, opt] = guests_build.build(name, opt)
        return cache[name, opt]
    return get


def run_qemu(path, append=None, timeout=60):
    """Boot `path`; return (exit status, serial output with \\r\\n turned into \\n)."""
    cmd = [QEMU, "-nodefaults", "-display", "none", "-serial", "stdio",
           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", str(path)]
    if append is not None:
        cmd += ["-append", append]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode("latin-1").replace("\r\n", "\n")


@pytest.fixture(scope="module")
def boot(elf):
    """boot(name, opt) -> (status, output), each guest booted once per module."""
    cache = {}

    def get(name, opt):
        if (name, opt) not in cache:
            cache[name, opt] = run_qemu(elf(name, opt))
        return cache[name, opt]
    return get


def test_the_guests_are_there():
    assert {"hello", "exceptions", "compute", "selftest", "template", "disk"} <= set(GUESTS)


@pytest.mark.parametrize("opt", OPTS)
@pytest.mark.parametrize("name", GUESTS)
def test_guest_exits_zero(boot, name, opt):
    status, out = boot(name, opt)
    if name in NEEDS_MORE:
        assert status == EXIT_NOTHING_TO_CHECK and NEEDS_MORE[name] in out, out
        return
    assert status == EXIT_OK, f"{name} -{opt}: status {status}, output:\n{out}"
    assert out.strip(), "no serial output"


@pytest.mark.parametrize("opt", OPTS)
def test_hello(boot, opt):
    status, out = boot("hello", opt)
    lines = out.splitlines()
    assert lines[0] == "Hello from pyvmm guest!"
    assert "multiboot magic: 2badb002 (ok)" in lines
    m = re.search(r"mem_upper: (\d+) KiB", out)
    assert m and int(m.group(1)) > 1024, out     # QEMU's default 128 MiB: 129920 KiB


def test_hello_cmdline(elf):
    status, out = run_qemu(elf("hello", "O2"), append="answer=42")
    assert status == EXIT_OK
    assert re.search(r'cmdline: ".*answer=42"', out), out


# What the SDM says each provoked exception looks like: vector, error code, EIP.
EXCEPTION_LINES = [
    ("de", "#DE", 0, 0x0, "+0"),            # faults: EIP at the instruction
    ("de_overflow", "#DE", 0, 0x0, "+0"),
    ("db", "#DB", 1, 0x0, "+1"),            # traps: EIP after it
    ("bp", "#BP", 3, 0x0, "+1"),
    ("of", "#OF", 4, 0x0, "+1"),
    ("ud", "#UD", 6, 0x0, "+0"),
    ("np", "#NP", 11, 0x18, "+0"),          # error code: the selector
    ("gp_selector", "#GP", 13, 0x1238, "+0"),   # ... without its RPL bits
    ("gp_null_ss", "#GP", 13, 0x0, "+0"),
    ("np_gate", "#NP", 11, 0x31 * 8 + 2, "+0"),  # IDT entry: index * 8 + IDT bit
    ("soft", "int", 0x30, 0x0, "+2"),
]


@pytest.mark.parametrize("opt", OPTS)
def test_exceptions(boot, opt):
    status, out = boot("exceptions", opt)
    lines = out.splitlines()
    for name, mnemonic, vector, error, offset in EXCEPTION_LINES:
        want = (f"{name:<12} {mnemonic} vector={vector} error={error:08x} "
                f"eip={name}_site{offset}")
        assert want in lines, f"missing {want!r} in:\n{out}"
    assert f"exceptions: {len(EXCEPTION_LINES)} handled, 0 wrong" in lines


def test_compute(boot):
    outs = {opt: boot("compute", opt)[1] for opt in OPTS}
    out = outs["O2"]
    assert "25997 primes below 300000" in out             # pi(300000)
    assert '"123456789" -> cbf43926' in out               # the CRC-32 check value
    assert "(sorted)" in out and "NOT SORTED" not in out
    for kernel in ("sieve", "crc32", "matmul", "string", "qsort"):
        assert re.search(rf"^{kernel}:.*", out, re.M), f"no {kernel} line:\n{out}"
    assert re.search(r"^compute: final checksum [0-9a-f]{8}$", out, re.M)
    assert outs["O0"] == outs["O2"], "the checksums depend on the optimization level"


def test_selftest(boot):
    outs = {opt: boot("selftest", opt)[1] for opt in OPTS}
    out = outs["O2"]
    last = out.splitlines()[-1]
    m = re.fullmatch(r"selftest: (\d+) groups, (\d+) checks, (\d+) tests aborted, "
                     r"hash ([0-9a-f]{8})", last)
    assert m, f"bad last line {last!r}"
    groups, checks, aborted = int(m.group(1)), int(m.group(2)), int(m.group(3))
    assert aborted == 0, out
    assert groups > 150 and checks > 50000
    # one "name: value" line per group between the banner and the summary
    body = out.splitlines()[1:-1]
    assert len(body) == groups, "\n".join(body)
    assert all(re.fullmatch(r"[a-z0-9.]+: [0-9a-f]{8}( .*)?", line) for line in body)
    for family in ("add.32", "rcl.8", "bts", "daa", "idiv.32", "setg", "cmovle", "jb",
                   "cmpxchg8b", "rep.movs", "repne.scas", "int.0x40", "iret.cs",
                   "enter.leave", "far", "sreg", "smc"):
        assert re.search(rf"^{re.escape(family)}: ", out, re.M), f"no {family} line"
    assert outs["O0"] == outs["O2"], "selftest output depends on the optimization level"


def test_selftest_verbose(elf):
    status, out = run_qemu(elf("selftest", "O2"), append="verbose")
    assert status == EXIT_OK
    assert "(verbose)" in out.splitlines()[0]
    assert "  add.32[0] = " in out
    # the per-value lines are extra: the summary is the same as without them
    quiet = run_qemu(elf("selftest", "O2"))[1]
    strip = [ln for ln in out.splitlines()[1:] if not ln.startswith("  ")]
    assert strip == quiet.splitlines()[1:]
