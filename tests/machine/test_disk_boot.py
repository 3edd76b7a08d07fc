"""Booting from a disk as a PC does: a 512-byte real-mode boot sector turns on A20, enters
protected mode, reads a small kernel off the disk through the ATA ports and runs it. The
same image boots on QEMU (`-drive file=IMAGE,format=raw`) and must print the same."""
import io
import shutil
import subprocess

import pytest

from pyvmm.machine import PC
from tests.asm import assemble

BOOT_SECTOR = r"""
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7C00
    in al, 0x92                     /* A20 on through System Control Port A */
    or al, 2
    and al, 0xFE
    out 0x92, al
    lgdt [gdtr]
    mov eax, cr0
    or al, 1
    mov cr0, eax
    jmp 0x08:pm32
.code32
pm32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, 0x90000
    /* ATA: read KERNEL_SECTORS sectors from LBA 1 to 0x100000 */
    mov dx, 0x1F6
    mov al, 0xE0                    /* master, LBA */
    out dx, al
    mov dx, 0x1F2
    mov al, KERNEL_SECTORS
    out dx, al
    mov dx, 0x1F3
    mov al, 1
    out dx, al
    xor al, al
    mov dx, 0x1F4
    out dx, al
    mov dx, 0x1F5
    out dx, al
    mov dx, 0x1F7
    mov al, 0x20                    /* READ SECTORS */
    out dx, al
    mov edi, 0x100000
    mov ebx, KERNEL_SECTORS
next_sector:
    mov dx, 0x1F7
wait_drq:
    in al, dx
    test al, 0x80                   /* BSY */
    jnz wait_drq
    test al, 0x08                   /* DRQ */
    jz wait_drq
    mov ecx, 256
    mov dx, 0x1F0
    rep insw
    dec ebx
    jnz next_sector
    mov eax, 0x100000
    jmp eax
.align 8
gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF
    .quad 0x00CF92000000FFFF
gdtr:
    .word 23
    .long gdt
"""

KERNEL = r"""
    mov esi, offset message
print:
    lodsb
    test al, al
    jz done
    mov ah, al
    mov dx, 0x3FD
wait_thr:
    in al, dx
    test al, 0x20
    jz wait_thr
    mov al, ah
    mov dx, 0x3F8
    out dx, al
    jmp print
done:
    /* write the message to LBA 5 and read it back from the drive's data port */
    mov dx, 0x1F6
    mov al, 0xE0
    out dx, al
    mov dx, 0x1F2
    mov al, 1
    out dx, al
    mov dx, 0x1F3
    mov al, 5
    out dx, al
    xor al, al
    mov dx, 0x1F4
    out dx, al
    mov dx, 0x1F5
    out dx, al
    mov dx, 0x1F7
    mov al, 0x30                    /* WRITE SECTORS */
    out dx, al
wait_w:
    in al, dx
    test al, 0x08
    jz wait_w
    mov esi, offset message
    mov ecx, 256
    mov dx, 0x1F0
    rep outsw
    mov dx, 0x1F7
    mov al, 0xE7                    /* FLUSH CACHE */
    out dx, al
wait_f:
    in al, dx
    test al, 0x80
    jnz wait_f
    mov al, 0
    out 0xF4, al
message:
    .asciz "booted from disk: sector 0 ran in real mode, the kernel in protected mode\n"
    .fill 512, 1, 0
"""


def make_image(tmp_path):
    kernel = assemble(KERNEL, 0x100000)
    sectors = (len(kernel) + 511) // 512
    boot = bytearray(assemble(BOOT_SECTOR.replace("KERNEL_SECTORS", str(sectors)), 0x7C00, bits=16))
    assert len(boot) <= 510
    boot = boot.ljust(510, b"\0") + b"\x55\xaa"
    image = bytes(boot) + kernel.ljust(sectors * 512, b"\0")
    image = image.ljust(64 * 512, b"\0")                    # room for LBA 5 and more
    path = tmp_path / "boot.img"
    path.write_bytes(image)
    return path


def run_pyvmm(path, snapshot=False):
    out = io.BytesIO()
    pc = PC(console=out, debugcon=io.BytesIO(), disks=[str(path)], snapshot=snapshot)
    pc.boot_disk()
    result = pc.run(max_instructions=5_000_000)
    return out.getvalue(), result


def test_boot_sector_loads_and_runs_a_kernel_from_disk(tmp_path):
    path = make_image(tmp_path)
    output, result = run_pyvmm(path)
    assert output.startswith(b"booted from disk")
    assert result.reason == "exit" and result.status == 1
    assert path.read_bytes()[5 * 512:5 * 512 + 6] == b"booted"      # the guest's own write


def test_snapshot_keeps_the_image_untouched(tmp_path):
    path = make_image(tmp_path)
    before = path.read_bytes()
    output, result = run_pyvmm(path, snapshot=True)
    assert result.status == 1 and path.read_bytes() == before


def test_a_bios_call_stops_cleanly_naming_the_service(tmp_path):
    boot = assemble("mov ah, 0x0E\n mov al, 0x41\n int 0x10\n hlt", 0x7C00, bits=16)
    path = tmp_path / "bios.img"
    path.write_bytes(boot.ljust(510, b"\0") + b"\x55\xaa" + bytes(512))
    pc = PC(console=io.BytesIO(), debugcon=io.BytesIO(), disks=[str(path)])
    pc.boot_disk()
    result = pc.run(max_instructions=1000)
    assert result.reason == "stopped" and "INT 0x10" in result.message


def test_unbootable_disk_is_refused(tmp_path):
    from pyvmm.machine.multiboot import KernelError
    path = tmp_path / "blank.img"
    path.write_bytes(bytes(1024))
    pc = PC(console=io.BytesIO(), debugcon=io.BytesIO(), disks=[str(path)])
    with pytest.raises(KernelError, match="not bootable"):
        pc.boot_disk()


@pytest.mark.skipif(shutil.which("qemu-system-i386") is None, reason="qemu-system-i386 is not installed")
def test_the_image_boots_the_same_on_qemu(tmp_path):
    path = make_image(tmp_path)
    qemu_copy = tmp_path / "qemu.img"
    qemu_copy.write_bytes(path.read_bytes())
    r = subprocess.run(["qemu-system-i386", "-nodefaults", "-display", "none", "-serial", "stdio",
                        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                        "-drive", f"file={qemu_copy},format=raw"], capture_output=True, timeout=60)
    output, result = run_pyvmm(path)
    assert r.stdout == output and r.returncode == result.status
    assert qemu_copy.read_bytes() == path.read_bytes()      # both wrote the same sector
