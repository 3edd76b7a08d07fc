#!/usr/bin/env python3
"""Build pyvmm's guest kernels: Multiboot v1 ELF32 images linked at 1 MiB.

Each guest is a folder guests/<name>/ of .c, .S and .s files; all are linked with the
shared library guests/lib/ into guests/build/<opt>/<name>.elf, for opt in O0 and O2.
Only what is out of date is rebuilt (a changed header, linker script or this script
rebuilds everything that could depend on it), so callers can simply ask for an image:

    python3 guests/build.py                  # every guest, at O0 and O2
    python3 guests/build.py hello --opt O2   # one guest, one level; prints the ELF's path
    python3 guests/build.py --list           # guest names
    python3 guests/build.py --clean          # remove guests/build/
    python3 guests/build.py --pattern-disk master.img [--sectors N] [--slave]
                                             # a disk image for the `disk` guest

    # from Python (e.g. `pyvmm run`):
    build = runpy.run_path("guests/build.py")["build"]
    elf = build("hello", "O2")               # -> pathlib.Path of the ELF

Tools: gcc (with -m32; no 32-bit libc is needed), as and ld from binutils.
"""
import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GUESTS = Path(__file__).resolve().parent
LIB = GUESTS / "lib"
BUILD = GUESTS / "build"
LINKER_SCRIPT = LIB / "linker.ld"
OPTS = ("O0", "O2")
SOURCE_SUFFIXES = (".c", ".S", ".s")

# Integer-only IA-32, ring 0, no libc. Why each flag:
CFLAGS = [
    "-m32", "-march=i686",              # nothing newer than the P6 integer set (CMOV ok)
    "-mgeneral-regs-only",              # no x87/MMX/SSE: the CPU has no FPU
    "-ffreestanding", "-fno-builtin", "-nostdlib",
    "-fno-pic", "-fno-pie",             # absolute addresses at 1 MiB
    "-fno-stack-protector",             # there is no __stack_chk_fail
    "-fcf-protection=none",             # no ENDBR32 (a CET hint the CPU does not decode)
    "-fno-asynchronous-unwind-tables",  # no .eh_frame to carry around
    "-fno-tree-loop-distribute-patterns",  # don't turn memset's own loop into memset()
    "-fno-isolate-erroneous-paths-dereference",  # no surprise ud2 on provable NULL paths
    "-std=gnu11", "-Wall", "-Wextra", "-g",
]
ASFLAGS = ["--32", "-g"]
LDFLAGS = ["-m", "elf_i386", "-nostdlib", "--build-id=none", "-T", str(LINKER_SCRIPT)]


class BuildError(RuntimeError):
    pass


def describe(name):
    """One line about a guest: the first sentence of the comment that opens its main source."""
    import re
    for src in _sources(GUESTS / name):
        m = re.match(r"\s*/\*(.*?)\*/", src.read_text(errors="replace"), re.S)
        if m:
            lines = [line.strip().lstrip("*").strip() for line in m.group(1).splitlines()]
            text = " ".join(line for line in lines if line)
            text = re.sub(rf"^{re.escape(name)}:\s*", "", text, flags=re.I)  # "compute: an ..."
            sentence = re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(".")
            if len(sentence) > 80:                      # one line in `pyvmm guests`
                sentence = sentence[:78].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
            return sentence[:1].upper() + sentence[1:]
    return ""


def guest_names():
    """Every folder of guests/ with sources in it, except lib/ and build/."""
    return sorted(p.name for p in GUESTS.iterdir()
                  if p.is_dir() and p.name not in ("lib", "build")
                  and any(f.suffix in SOURCE_SUFFIXES for f in p.iterdir()))


def _sources(folder):
    return sorted(f for f in folder.iterdir() if f.suffix in SOURCE_SUFFIXES)


def _headers(folder):
    return [f for f in folder.iterdir() if f.suffix in (".h", ".inc")]


def _newest(paths):
    return max((p.stat().st_mtime for p in paths), default=0.0)


def _stale(target, newest_input):
    return not target.exists() or target.stat().st_mtime < newest_input


def _run(cmd, verbose):
    if verbose:
        print(" ".join(str(c) for c in cmd))
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError(f"{' '.join(str(c) for c in cmd)}\n{r.stdout}{r.stderr}")
    if r.stderr and verbose:
        sys.stderr.write(r.stderr)


def _replace_from_tmp(target, make):
    """Write `target` through a temporary file in its folder, then rename: two builds
    running at once (parallel tests) never see a half-written object or ELF."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        make(Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _compile(src, obj, opt, includes, verbose):
    def make(tmp):
        if src.suffix == ".s":          # plain assembly: no preprocessor
            _run(["as", *ASFLAGS, "-o", tmp, src], verbose)
        else:                           # .c, and .S through the C preprocessor (-> as --32)
            inc = [f"-I{d}" for d in includes]
            _run(["gcc", *CFLAGS, f"-{opt}", *inc, "-c", "-o", tmp, src], verbose)
    _replace_from_tmp(obj, make)


BOOT_SECTOR = "bootsector.asm16"      # a guest with this file also gets a bootable disk image
DISK_SECTORS = 2048                   # the image's size: 1 MiB


def build(name, opt="O2", force=False, verbose=False):
    """Build guests/<name> at `opt` ("O0" or "O2") if out of date; return the ELF path.

    A guest folder with a bootsector.asm16 also gets guests/build/<opt>/<name>.img: a disk
    whose sector 0 is that boot sector and whose following sectors hold the kernel."""
    folder = GUESTS / name
    if name in ("lib", "build") or not folder.is_dir():
        raise BuildError(f"no guest {name!r} (guests: {', '.join(guest_names())})")
    elf = _build(folder, name, BUILD / opt, BUILD / opt / name, opt, force, verbose)
    if (folder / BOOT_SECTOR).exists():
        _disk_image(folder, elf, elf.with_suffix(".img"), verbose)
    return elf


def disk_image(name, opt="O2"):
    """The disk image of a guest that has a boot sector (built if out of date), or None."""
    elf = build(name, opt)
    image = elf.with_suffix(".img")
    return image if image.exists() else None


def _disk_image(folder, elf, image, verbose):
    source = folder / BOOT_SECTOR
    if not _stale(image, max(elf.stat().st_mtime, source.stat().st_mtime)):
        return image
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _run(["objcopy", "-O", "binary", str(elf), str(tmp / "kernel.bin")], verbose)
        kernel = (tmp / "kernel.bin").read_bytes()
        entry = int.from_bytes(elf.read_bytes()[24:28], "little")      # e_entry of the ELF32
        sectors = (len(kernel) + 511) // 512
        if sectors > 255:
            raise BuildError(f"{folder.name}: the kernel needs {sectors} sectors, one READ takes 255")
        _run(["as", "--32", f"--defsym=KERNEL_SECTORS={sectors}", f"--defsym=KERNEL_ENTRY={entry}",
              "-o", str(tmp / "boot.o"), str(source)], verbose)
        _run(["ld", "-m", "elf_i386", "-Ttext", "0x7C00", "--oformat", "binary",
              "-o", str(tmp / "boot.bin"), str(tmp / "boot.o")], verbose)
        boot = (tmp / "boot.bin").read_bytes()
        if len(boot) != 512 or boot[510:] != b"\x55\xaa":
            raise BuildError(f"{source}: the boot sector must be 512 bytes ending in 55 AA")
        disk = (boot + kernel.ljust(sectors * 512, b"\0")).ljust(DISK_SECTORS * 512, b"\0")
        _replace_from_tmp(image, lambda t: t.write_bytes(disk))
    return image


# Disk images with a known pattern, for the `disk` guest (guests/disk/disk.c has the same
# functions in C). Sector `lba` of drive 0 (master) or 1 (slave) holds 128 little-endian
# words: the magic, the drive, the LBA, 124 words mixed from those, and a CRC-32 (zlib's)
# of the 508 bytes before it.
PATTERN_MAGIC = 0x4B534450            # "PDSK": the image as made here
WRITTEN_MAGIC = 0x54495257            # "WRIT": the sectors the guest writes


def _mix(magic, drive, lba, i):
    m = 0xFFFFFFFF
    x = magic ^ ((lba * 0x9E3779B1) & m) ^ ((drive * 0x85EBCA77) & m) ^ ((i * 0xC2B2AE3D) & m)
    x ^= x >> 16
    x = (x * 0x7FEB352D) & m
    return x ^ (x >> 15)


def pattern_sector(drive, lba, magic=PATTERN_MAGIC):
    """The 512 bytes of sector `lba` of a pattern disk (magic=WRITTEN_MAGIC: what the `disk`
    guest writes there)."""
    words = [magic, drive, lba] + [_mix(magic, drive, lba, i) for i in range(3, 127)]
    body = struct.pack("<127I", *words)
    return body + struct.pack("<I", zlib.crc32(body))


def pattern_disk(path, sectors=1000, drive=0):
    """Write a disk image of `sectors` pattern sectors for drive 0 (master) or 1 (slave)."""
    Path(path).write_bytes(b"".join(pattern_sector(drive, lba) for lba in range(sectors)))
    return Path(path)


def build_folder(folder, opt="O2", force=False, verbose=False):
    """Build a guest kept in any folder (a copy of guests/template, say) into
    <folder>/build/<opt>/<folder name>.elf, with the shared library; return the ELF path."""
    folder = Path(folder).resolve()
    if folder.parent == GUESTS:
        return build(folder.name, opt, force, verbose)
    out = folder / "build" / opt
    return _build(folder, folder.name, out, out / "obj", opt, force, verbose)


def _build(folder, name, out, obj_dir, opt, force, verbose):
    if opt not in OPTS:
        raise ValueError(f"opt must be one of {OPTS}, not {opt!r}")
    sources = _sources(folder)
    if not sources:
        raise BuildError(f"guest {name!r} has no .c/.S/.s files in {folder}")

    elf = out / f"{name}.elf"
    lib_out = BUILD / opt / "lib"
    # Anything that can change every object: headers, this script (the flags).
    common = _newest(_headers(LIB) + [Path(__file__).resolve()])
    guest_headers = _newest(_headers(folder))
    jobs = []
    objs = []
    for src in _sources(LIB):
        obj = lib_out / (src.name + ".o")
        objs.append(obj)
        if force or _stale(obj, max(common, src.stat().st_mtime)):
            jobs.append((src, obj, [LIB]))
    for src in sources:
        obj = obj_dir / (src.name + ".o")
        objs.append(obj)
        if force or _stale(obj, max(common, guest_headers, src.stat().st_mtime)):
            jobs.append((src, obj, [folder, LIB]))

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for f in [pool.submit(_compile, s, o, opt, inc, verbose) for s, o, inc in jobs]:
            f.result()

    if force or jobs or _stale(elf, _newest(objs + [LINKER_SCRIPT])):
        # <out>/<name>.map: where every symbol landed (handy in a debugger).
        _replace_from_tmp(elf, lambda tmp: _run(
            ["ld", *LDFLAGS, "-Map", out / f"{name}.map", "-o", tmp, *objs], verbose))
        if verbose:
            print(f"built {elf}")
    return elf


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="guests to build (default: all)")
    ap.add_argument("--opt", choices=OPTS + ("all",), default="all")
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    ap.add_argument("--list", action="store_true", help="print the guest names and stop")
    ap.add_argument("--clean", action="store_true", help="remove guests/build/ and stop")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each command")
    ap.add_argument("--pattern-disk", metavar="IMAGE",
                    help="write a pattern disk image for the disk guest and stop")
    ap.add_argument("--sectors", type=int, default=1000, help="its size in sectors (default 1000)")
    ap.add_argument("--slave", action="store_true", help="the pattern of the slave (drive 1)")
    args = ap.parse_args(argv)

    if args.pattern_disk:
        print(pattern_disk(args.pattern_disk, args.sectors, 1 if args.slave else 0))
        return 0

    if args.list:
        print("\n".join(guest_names()))
        return 0
    if args.clean:
        shutil.rmtree(BUILD, ignore_errors=True)
        return 0
    names = args.names or guest_names()
    opts = OPTS if args.opt == "all" else (args.opt,)
    try:
        for name in names:
            for opt in opts:
                print(build(name, opt, force=args.force, verbose=args.verbose))
    except BuildError as e:
        print(f"build failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
