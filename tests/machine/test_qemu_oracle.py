"""Every bundled guest, at -O0 and -O2, must print the same serial output and end with the
same exit status on pyvmm as on QEMU (`qemu-system-i386 -kernel`), the whole-machine oracle."""
import io
import shutil
import subprocess
from pathlib import Path

import pytest

from pyvmm.machine import PC

from tests.guest_build import guests_build

QEMU = shutil.which("qemu-system-i386")
QEMU_COMMAND = ["-nodefaults", "-display", "none", "-serial", "stdio",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
# Guests whose output depends on the machine by design are compared in their own tests.
GUEST_NAMES = [n for n in guests_build.guest_names() if n != "template"]


def relative(elf):
    """The kernel path as both machines get it (it is the first word of the command line)."""
    return str(Path(elf).resolve().relative_to(Path.cwd())) if Path(elf).resolve().is_relative_to(Path.cwd()) else str(elf)


def run_qemu(elf):
    r = subprocess.run([QEMU, *QEMU_COMMAND, "-kernel", elf], capture_output=True, timeout=120)
    return r.stdout, r.returncode


def run_pyvmm(elf):
    out = io.BytesIO()
    pc = PC(console=out, debugcon=io.BytesIO())
    pc.boot_multiboot(elf)
    result = pc.run(max_instructions=2_000_000_000)
    return out.getvalue(), result.status, result


@pytest.mark.skipif(QEMU is None, reason="qemu-system-i386 is not installed (apt-get install qemu-system-x86)")
@pytest.mark.parametrize("opt", ["O0", "O2"])
@pytest.mark.parametrize("name", GUEST_NAMES)
def test_guest_matches_qemu(name, opt):
    elf = relative(guests_build.build(name, opt))
    expected, expected_status = run_qemu(elf)
    output, status, result = run_pyvmm(elf)
    assert output.decode(errors="replace") == expected.decode(errors="replace"), result.message
    assert status == expected_status, result.message
    assert result.reason == "exit"


DISK_GUESTS = [n for n in GUEST_NAMES if (Path(guests_build.GUESTS) / n / guests_build.BOOT_SECTOR).exists()]


@pytest.mark.skipif(QEMU is None, reason="qemu-system-i386 is not installed (apt-get install qemu-system-x86)")
@pytest.mark.parametrize("opt", ["O0", "O2"])
@pytest.mark.parametrize("name", DISK_GUESTS)
def test_disk_image_boots_as_on_qemu(name, opt, tmp_path):
    """Booting the guest's disk image like a PC: same output, status and disk writes."""
    image = guests_build.disk_image(name, opt)
    qemu_disk, pyvmm_disk = tmp_path / "qemu.img", tmp_path / "pyvmm.img"
    qemu_disk.write_bytes(image.read_bytes())
    pyvmm_disk.write_bytes(image.read_bytes())
    r = subprocess.run([QEMU, *QEMU_COMMAND, "-drive", f"file={qemu_disk},format=raw"],
                       capture_output=True, timeout=120)
    out = io.BytesIO()
    pc = PC(console=out, debugcon=io.BytesIO(), disks=[str(pyvmm_disk)])
    pc.boot_disk()
    result = pc.run(max_instructions=500_000_000)
    assert out.getvalue() == r.stdout, result.message
    assert result.status == r.returncode
    assert pyvmm_disk.read_bytes() == qemu_disk.read_bytes()
