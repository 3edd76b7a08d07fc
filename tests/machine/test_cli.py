"""`pyvmm run` and `pyvmm guests` as a user meets them: exit statuses, summary line,
clear one-line errors for bad input."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pyvmm(*args, stdin=b""):
    return subprocess.run([sys.executable, "-m", "pyvmm", *args], cwd=ROOT, input=stdin,
                          capture_output=True, timeout=300)


def test_run_hello_prints_and_exits_with_the_guest_status():
    r = pyvmm("run", "hello")
    assert b"Hello from pyvmm guest!" in r.stdout
    assert r.returncode == 1                         # exit(0) through isa-debug-exit
    assert b"instructions in" in r.stderr and b"MIPS" in r.stderr


def test_quiet_has_no_summary():
    r = pyvmm("run", "hello", "--quiet")
    assert r.returncode == 1 and b"MIPS" not in r.stderr


def test_cmdline_reaches_the_guest():
    r = pyvmm("run", "hello", "--cmdline", "answer=42", "-q")
    assert b"answer=42" in r.stdout


def test_a_bundled_guest_runs_the_same_wherever_the_checkout_is(tmp_path):
    """A bundled guest's command line starts with its path from the checkout's top, as
    the README's QEMU command gives it: not with where the checkout happens to be, which
    would change the instruction count of every guest that reads its command line."""
    def run(cwd):
        return subprocess.run([sys.executable, "-m", "pyvmm", "run", "hello", "--cmdline", "x=1"],
                              cwd=cwd, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              capture_output=True, timeout=300)
    here, elsewhere = run(ROOT), run(tmp_path)
    assert b'cmdline: "guests/build/O2/hello.elf x=1"' in here.stdout
    assert here.stdout == elsewhere.stdout
    count = [r.stderr.split(b" instructions")[0] for r in (here, elsewhere)]
    assert count[0] == count[1]


def test_guests_lists_the_bundled_guests():
    r = pyvmm("guests")
    assert r.returncode == 0
    names = r.stdout.decode().split()
    assert "hello" in names and "compute" in names


def test_realtime_runs_the_timer_guest_against_the_host_clock():
    # the interrupts guest's checks hold with host time too; the deterministic run's
    # instruction count includes the time skipped while halted, the realtime one does not
    fixed, real = pyvmm("run", "interrupts"), pyvmm("run", "interrupts", "--realtime")
    assert fixed.returncode == real.returncode == 1
    assert b"0 failed" in real.stdout
    count = lambda r: int(r.stderr.split(b" instructions")[0].split()[-1].replace(b",", b""))
    assert count(real) < count(fixed)


def test_max_instructions_stops_the_guest():
    r = pyvmm("run", "compute", "--max-instructions", "1000")
    assert r.returncode == 2 and b"stopped after 1,000 instructions" in r.stderr


def test_trace_shows_disassembly_and_changed_registers(tmp_path):
    trace = tmp_path / "trace.txt"
    r = pyvmm("run", "hello", "--trace", str(trace), "--max-instructions", "50", "-q")
    lines = trace.read_text().splitlines()
    assert len(lines) == 50
    assert any("mov" in line and "esp=" in line for line in lines)


@pytest.mark.parametrize("content, message", [
    (b"not an elf at all", b"not an ELF file"),
    (b"\x7fELF" + bytes(60), b"no Multiboot header"),
])
def test_bad_kernel_files_are_refused_in_one_line(tmp_path, content, message):
    bad = tmp_path / "bad.elf"
    bad.write_bytes(content)
    r = pyvmm("run", str(bad))
    assert r.returncode == 64
    assert message in r.stderr and b"Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_too_little_memory_is_refused():
    r = pyvmm("run", "hello", "--memory", "1M")
    assert r.returncode == 64 and b"at least 2 MiB" in r.stderr


def test_kernel_that_does_not_fit_is_refused(tmp_path):
    # hello's program headers, with the memory size of its last segment made enormous
    import struct

    from elftools.elf.elffile import ELFFile

    from tests.guest_build import guests_build
    elf = guests_build.build("hello", "O2")
    data = bytearray(Path(elf).read_bytes())
    with open(elf, "rb") as f:
        e = ELFFile(f)
        phoff, phentsize = e["e_phoff"], e["e_phentsize"]
        last = max(i for i, seg in enumerate(e.iter_segments()) if seg["p_type"] == "PT_LOAD")
    struct.pack_into("<I", data, phoff + last * phentsize + 20, 64 << 20)     # p_memsz
    big = tmp_path / "big.elf"
    big.write_bytes(bytes(data))
    r = pyvmm("run", str(big), "--memory", "16M")
    assert r.returncode == 64
    assert b"guest RAM ends at" in r.stderr and b"--memory" in r.stderr


def test_unknown_guest_is_refused():
    r = pyvmm("run", "no-such-guest")
    assert r.returncode == 64 and b"no guest 'no-such-guest'" in r.stderr


def test_run_boots_a_disk_image(tmp_path):
    from tests.machine.test_disk_boot import make_image
    image = make_image(tmp_path)
    before = image.read_bytes()
    r = pyvmm("run", "--disk", str(image), "--snapshot", "-q")
    assert r.returncode == 1 and r.stdout.startswith(b"booted from disk")
    assert image.read_bytes() == before


def test_run_needs_a_guest_or_a_disk():
    r = pyvmm("run")
    assert r.returncode == 64 and b"--disk" in r.stderr


def test_screen_shows_the_vga_text_buffer(tmp_path):
    # a boot sector that writes "Hi" at row 1, column 2 and puts the cursor after it
    from tests.asm import assemble
    boot = assemble("""
        mov ax, 0xB800
        mov es, ax
        mov word ptr es:[(80 + 2) * 2], 0x0748
        mov word ptr es:[(80 + 3) * 2], 0x0769
        mov dx, 0x3D4
        mov al, 0x0F
        out dx, al
        inc dx
        mov al, 80 + 4
        out dx, al
        mov al, 0
        out 0xF4, al
    """, 0x7C00, bits=16)
    image = tmp_path / "screen.img"
    image.write_bytes(boot.ljust(510, b"\0") + b"\x55\xaa")
    r = pyvmm("run", "--disk", str(image), "--screen", "-q")
    lines = r.stdout.decode().splitlines()
    assert lines[2] == "|  Hi" + " " * 76 + "|"
    assert lines[-1].endswith("cursor at row 1, column 4")


def test_guests_into_a_closed_pipe_is_quiet():
    r = subprocess.run(f"{sys.executable} -m pyvmm guests | head -n 1", shell=True, cwd=ROOT,
                       capture_output=True, timeout=60)
    assert len(r.stdout.splitlines()) == 1 and b"Traceback" not in r.stderr
