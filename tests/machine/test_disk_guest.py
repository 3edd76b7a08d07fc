"""The `disk` guest on disk images made here: ATA IDENTIFY, reads, writes, FLUSH CACHE and
errors through the ports. On pyvmm it must pass every check and change exactly the sectors
it says it writes; on QEMU, given copies of the same images as IDE disks, it must print the
same, end with the same status and leave the same bytes in the images."""
import functools
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyvmm.machine import PC
from tests.guest_build import guests_build

ROOT = Path(__file__).resolve().parents[2]
QEMU = shutil.which("qemu-system-i386")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-i386 is not installed "
                                "(apt-get install qemu-system-x86)")
SECTORS = (1000, 777)                   # master, slave: sizes no power of two
CHECKS = {1: 21, 2: 37}                 # the guest's checks with one disk, with two


def make_images(folder, drives):
    folder.mkdir(exist_ok=True)
    return [guests_build.pattern_disk(folder / f"{('master', 'slave')[d]}.img", SECTORS[d], d)
            for d in range(drives)]


@functools.lru_cache(maxsize=None)
def after_the_guest(drive):
    """The image as the guest leaves it: it writes the ten sectors before the last one
    but one, each with its own pattern."""
    total = SECTORS[drive]
    written = range(total - 10, total - 1)
    return b"".join(guests_build.pattern_sector(drive, lba, guests_build.WRITTEN_MAGIC
                                                if lba in written else guests_build.PATTERN_MAGIC)
                    for lba in range(total))


def run_pyvmm(elf, disks, snapshot=False):
    out = io.BytesIO()
    pc = PC(console=out, debugcon=io.BytesIO(), disks=[str(d) for d in disks], snapshot=snapshot)
    pc.boot_multiboot(str(elf))
    result = pc.run(max_instructions=100_000_000)
    return out.getvalue(), result


def run_qemu(elf, disks):
    drives = []
    for index, disk in enumerate(disks):
        drives += ["-drive", f"file={disk},format=raw,if=ide,index={index}"]
    r = subprocess.run([QEMU, "-nodefaults", "-display", "none", "-serial", "stdio",
                        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                        "-kernel", str(elf), *drives],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    return r.stdout, r.returncode


def pyvmm_cli(*args):
    return subprocess.run([sys.executable, "-m", "pyvmm", *args], cwd=ROOT,
                          capture_output=True, timeout=300)


@pytest.mark.parametrize("drives", [1, 2])
@pytest.mark.parametrize("opt", ["O0", "O2"])
def test_the_guest_passes_and_writes_what_it_says(tmp_path, opt, drives):
    disks = make_images(tmp_path, drives)
    output, result = run_pyvmm(guests_build.build("disk", opt), disks)
    text = output.decode().replace("\r\n", "\n")
    assert result.reason == "exit" and result.status == 1, text + result.message
    assert "master: 1000 sectors (IDENTIFY words 60-61)" in text
    assert ("slave: 777 sectors (IDENTIFY words 60-61)" if drives == 2
            else "slave: absent (status 00 when selected)") in text
    assert "master: READ at LBA 1000 (the end): status 41, error 04" in text
    assert text.splitlines()[-1] == f"disk: {CHECKS[drives]} checks, 0 failed"
    for drive, disk in enumerate(disks):
        assert disk.read_bytes() == after_the_guest(drive), f"drive {drive}"


@needs_qemu
@pytest.mark.parametrize("drives", [1, 2])
@pytest.mark.parametrize("opt", ["O0", "O2"])
def test_the_guest_matches_qemu(tmp_path, opt, drives):
    elf = guests_build.build("disk", opt)
    ours, theirs = make_images(tmp_path / "pyvmm", drives), make_images(tmp_path / "qemu", drives)
    expected, expected_status = run_qemu(elf, theirs)
    output, result = run_pyvmm(elf, ours)
    assert output.decode(errors="replace") == expected.decode(errors="replace"), result.message
    assert result.status == expected_status == 1
    for drive, (mine, qemus) in enumerate(zip(ours, theirs)):
        assert mine.read_bytes() == qemus.read_bytes() == after_the_guest(drive), f"drive {drive}"


def test_pyvmm_run_with_two_disks_and_snapshot(tmp_path):
    disks = make_images(tmp_path, 2)
    before = [d.read_bytes() for d in disks]
    r = pyvmm_cli("run", "disk", "--disk", str(disks[0]), "--disk", str(disks[1]), "--snapshot")
    assert r.returncode == 1, r.stdout + r.stderr
    assert b"disk: 37 checks, 0 failed" in r.stdout
    assert [d.read_bytes() for d in disks] == before          # the writes stayed in memory
    r = pyvmm_cli("run", "disk", "--disk", str(disks[0]), "--disk", str(disks[1]), "-q")
    assert r.returncode == 1 and b"0 failed" in r.stdout
    assert [d.read_bytes() for d in disks] == [after_the_guest(0), after_the_guest(1)]


def test_without_a_disk_the_guest_says_so():
    r = pyvmm_cli("run", "disk", "-q")
    assert r.returncode == 5                                  # exit(2): nothing to check
    assert b"no ATA disk on the primary channel" in r.stdout


def test_a_disk_too_small_fails_clearly(tmp_path):
    small = guests_build.pattern_disk(tmp_path / "small.img", 64)
    output, result = run_pyvmm(guests_build.build("disk", "O2"), [small])
    assert result.status == 3
    assert b"master: 64 sectors, at least 300 needed" in output
