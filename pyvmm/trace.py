"""Instruction traces: per instruction, capstone's disassembly and the registers it changed.

    00100010  89 e5                 mov ebp, esp            ebp=0010bff8
"""
import capstone

from ._core.exits import ExitReason

REGISTERS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eflags",
             "cs", "ss", "ds", "es", "fs", "gs")


class Tracer:
    """Runs a CPU one instruction at a time, writing a line per instruction to `out`."""

    def __init__(self, cpu, out):
        self.cpu = cpu
        self.out = out
        self.md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)

    def _state(self):
        return {r: self.cpu.reg_read(r) for r in REGISTERS}

    def _text(self, eip):
        base = self.cpu.segments["cs"][1]
        code = b""
        for i in range(15):
            try:
                code += self.cpu.mem_read((base + eip + i) & 0xFFFFFFFF, 1)
            except Exception:
                break
        for insn in self.md.disasm(code, eip):
            return insn.bytes, f"{insn.mnemonic} {insn.op_str}".strip()
        return code[:1], "(undecodable)"

    def run(self, budget):
        cpu = self.cpu
        before = self._state()
        while cpu.icount < budget:
            eip = cpu.eip
            raw, text = self._text(eip)
            reason = ExitReason(cpu.run(cpu.icount + 1))
            after = self._state()
            changed = " ".join(f"{r}={after[r]:08x}" if r in ("eflags",) or r[0] == "e" and r != "es"
                               else f"{r}={after[r]:04x}" for r in REGISTERS if after[r] != before[r])
            if cpu.eip != eip + len(raw):
                changed = (changed + f" eip={cpu.eip:08x}").strip()
            self.out.write(f"{eip:08x}  {raw.hex(' '):<30} {text:<36} {changed}\n")
            before = after
            if reason != ExitReason.COUNT:
                self.out.flush()
                return reason
        self.out.flush()
        return ExitReason.COUNT
