"""Assemble test snippets with the system's GNU assembler (binutils), Intel syntax."""
import functools
import os
import subprocess
import tempfile


@functools.lru_cache(maxsize=None)
def assemble(source, base=0x1000, bits=32):
    """Flat binary for `source` (Intel syntax) linked at `base`."""
    with tempfile.TemporaryDirectory() as d:
        s, o, b = (os.path.join(d, n) for n in ("a.s", "a.o", "a.bin"))
        with open(s, "w") as f:
            f.write(f".intel_syntax noprefix\n.code{bits}\n.globl _start\n_start:\n{source}\n")
        r = subprocess.run(["as", "--32", "-o", o, s], capture_output=True, text=True)
        if r.returncode:
            raise ValueError(f"the assembler refused the test snippet:\n{r.stderr}")
        subprocess.run(["ld", "-m", "elf_i386", "-Ttext", hex(base), "--oformat", "binary",
                        "-o", b, o], check=True, capture_output=True, text=True)
        with open(b, "rb") as f:
            return f.read()
