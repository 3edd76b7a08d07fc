"""The binary translator: guest kernel code in, x86 code for the translation cache out.

One *block* is a run of guest instructions (at most MAX_BLOCK) ending at a control
transfer or at an instruction the translator hands to the VMM. Each guest instruction
becomes one of:

* itself, unchanged ("innocuous": arithmetic, loads and stores through the guest's own
  segments, string instructions...);
* inline code on the virtual CPU in the VMM's memory, reached through GS (which the VMM
  keeps for itself while translated code runs, as VMware's monitor did): CLI and STI write
  the virtual IF; PUSHF pushes the flags with the virtual IF and IOPL; POPF loads the
  virtual IF and IOPL from the value it pops; PUSH CS pushes the guest's CS;
* a branch: direct jumps, conditional jumps, calls and loops jump to the translation of
  their target, first through a stub that asks the VMM to translate it and then *chained*
  (the VMM patches the jump to go straight to the new block); a CALL pushes the guest's
  return address, so the guest only ever sees its own addresses;
* a *callout*: a UD2 the VMM catches, for everything privileged or sensitive and for
  indirect branches (RET, JMP/CALL through a register or memory): the VMM emulates the
  instruction, or runs it once in place as trap-and-emulate would, and continues with the
  translation of wherever the guest went.

STI and POPF end with a 5-byte NOP the VMM can patch into a jump to a callout: the
*interrupt window*, used when an interrupt is waiting for the guest to turn IF back on.
"""
import struct
from dataclasses import dataclass, field

from capstone import x86

from .decoder import decode

MAX_BLOCK = 12
UD2 = b"\x0f\x0b"
WINDOW_NOP = b"\x0f\x1f\x44\x00\x00"
GS = b"\x65"

# Privileged or sensitive: the VMM takes them (emulates, or runs them once in place).
CALLOUT = {
    "cli", "sti", "hlt", "in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd",
    "lgdt", "lidt", "lldt", "ltr", "sgdt", "sidt", "sldt", "str", "smsw", "lmsw", "clts",
    "invlpg", "wbinvd", "invd", "rdmsr", "wrmsr", "rdtsc", "rdpmc", "cpuid", "lar", "lsl",
    "verr", "verw", "iret", "iretd", "retf", "ljmp", "lcall", "int", "int3", "into", "int1",
    "lds", "les", "lfs", "lgs", "lss", "ud2", "vmcall", "pushf", "popf", "jcxz",
}
INDIRECT = {"ret", "jmp", "call"}       # (when not a direct relative branch)
RET_TABLE_ENTRIES = 1 << 16             # return targets by their low 16 bits
JCC = {"jo", "jno", "jb", "jae", "je", "jne", "jbe", "ja", "js", "jns", "jp", "jnp", "jl",
       "jge", "jle", "jg"}
LOOPS = {"loop": 0xE2, "loope": 0xE1, "loopne": 0xE0, "jecxz": 0xE3}


@dataclass
class Callout:
    kind: str               # "branch", "window", "emulate"
    guest_eip: int          # the guest instruction it stands for (branch: its target)
    patch_at: int = 0       # branch: where the rel32 to patch is
    resume: int = 0         # window: translated code to resume at
    after_sti: bool = False


@dataclass
class Block:
    guest_eip: int
    linear: int             # where its guest code starts (CS base + EIP)
    tc: int                 # its address in the translation cache
    code: bytes = b""
    guest_code: bytes = b""
    frames: set = field(default_factory=set)     # guest-physical pages its code came from
    listing: list = field(default_factory=list)  # (guest eip, guest bytes, tc address, tc bytes)


class TranslationCache:
    """Where translated code lives: the VMM's memory, which the guest cannot address."""

    def __init__(self, cpu, start, end):
        self.cpu, self.start, self.end = cpu, start, end
        self.reset()

    def reset(self):
        self.top = self.start
        self.blocks = {}            # linear address of guest code -> Block
        self.by_frame = {}          # guest-physical page -> set of linear addresses
        self.page_frames = {}       # linear page of translated code -> its guest-physical page
        self.map = {}               # tc address -> (guest eip, ESP delta, boundary?, restore
                                    # EAX and ECX from the scratch words?)
        self.callouts = {}          # tc address of a UD2 -> Callout
        self.windows = []           # (tc address of an STI/POPF window NOP, its stub)
        self.entry = {}             # linear address of a guest instruction -> its tc address
        self.flushes = getattr(self, "flushes", -1) + 1

    def room(self, size):
        return self.top + size <= self.end

    def put(self, data):
        at = self.top
        self.cpu.mem_write(at, data)
        self.top += len(data)
        return at


class Translator:
    def __init__(self, vmm, tc, vif, viopl, scratch, ret_table=None):
        self.vmm = vmm
        self.tc = tc
        # a table in the VMM's GS segment: for each value of a return address's low 16 bits,
        # the translation-cache address of a chain of landing pads (ending at the miss stub)
        self.ret_table = ret_table
        # offsets in the VMM's GS segment of the virtual IF (a byte), the virtual IOPL bits
        # (a dword, IOPL << 12) and a scratch dword for borrowing EAX
        self.vif, self.viopl, self.scratch = vif, viopl, scratch

    def translate(self, guest_eip, cs_base, virtual_cs):
        """Translate the block at guest EIP; returns the Block (already in the cache)."""
        vmm, tc = self.vmm, self.tc
        linear = (cs_base + guest_eip) & 0xFFFFFFFF
        out = bytearray()
        fixups = []             # (offset of a rel32 in out, guest target)
        callouts = []           # (offset of a UD2 in out, Callout)
        windows = []            # offsets of window NOPs
        marks = []              # (offset in out, guest eip, ESP delta, boundary)
        listing = []
        frames = set()
        eip = guest_eip
        ended = False
        for _ in range(MAX_BLOCK):
            lin = (cs_base + eip) & 0xFFFFFFFF
            code = vmm.read_code(lin)
            insn = decode(code, eip) if code else None
            # the pages of the instruction's first and last bytes, which an instruction
            # that straddles a page boundary may have from two different frames
            for at in {lin, (lin + (insn.length if insn is not None else 1) - 1) & 0xFFFFFFFF}:
                frame = vmm.code_frame(at)
                frames.add(frame)
                tc.page_frames[at >> 12] = frame
            start = len(out)
            marks.append((start, eip, 0, True))
            if insn is None:
                callouts.append((len(out), Callout("emulate", eip)))
                out += UD2
                listing.append((eip, code[:1], start, UD2))
                ended = True
                break
            nxt = (eip + insn.length) & 0xFFFFFFFF
            kind = self.classify(insn)
            if kind == "copy":
                out += insn.bytes
            elif kind == "cli":
                out += GS + b"\xc6\x05" + struct.pack("<I", self.vif) + b"\x00"
            elif kind == "sti":
                out += GS + b"\xc6\x05" + struct.pack("<I", self.vif) + b"\x01"
                windows.append((len(out), nxt, True))
                out += WINDOW_NOP
            elif kind == "pushf":
                self.emit_pushf(out, marks, eip)
            elif kind == "popf":
                self.emit_popf(out, marks, eip, windows, nxt)
            elif kind == "ret":
                self.emit_ret(out, marks, eip, insn)
                ended = True
            elif kind == "indirect":
                self.emit_indirect(out, marks, eip, insn, nxt)
                ended = True
            elif kind == "push cs":
                out += b"\x68" + struct.pack("<I", virtual_cs)
            elif kind == "jmp":
                out += b"\xe9"
                fixups.append((len(out), insn.operands[0].imm & 0xFFFFFFFF))
                out += b"\0\0\0\0"
                ended = True
            elif kind == "jcc":
                cc = self.condition(insn)
                out += bytes([0x0F, 0x80 | cc])
                fixups.append((len(out), insn.operands[0].imm & 0xFFFFFFFF))
                out += b"\0\0\0\0"
                out += b"\xe9"
                fixups.append((len(out), nxt))
                out += b"\0\0\0\0"
                ended = True
            elif kind == "call":
                out += b"\x68" + struct.pack("<I", nxt)             # the guest's return address
                marks.append((len(out), eip, -4, False))
                out += b"\xe9"
                fixups.append((len(out), insn.operands[0].imm & 0xFFFFFFFF))
                out += b"\0\0\0\0"
                ended = True
            elif kind == "loop":
                # loop/jecxz have only rel8: loop over a jump that skips the long taken jump
                out += bytes([LOOPS[insn.mnemonic], 0x02, 0xEB, 0x05, 0xE9])
                fixups.append((len(out), insn.operands[0].imm & 0xFFFFFFFF))
                out += b"\0\0\0\0"
                out += b"\xe9"
                fixups.append((len(out), nxt))
                out += b"\0\0\0\0"
                ended = True
            else:                                                   # callout
                callouts.append((len(out), Callout("emulate", eip)))
                out += UD2
                ended = True
            listing.append((eip, insn.bytes, start, bytes(out[start:])))
            eip = nxt
            if ended:
                break
        guest_bytes = vmm.read_code(linear, (eip - guest_eip) & 0xFFFFFFFF)
        if not ended:                                               # on to the next block
            start = len(out)
            out += b"\xe9"
            fixups.append((len(out), eip))
            out += b"\0\0\0\0"
            listing.append((None, b"", start, bytes(out[start:])))
        # stubs: one UD2 a branch exit, until the VMM chains the jump to its target, and
        # one a window NOP, for when it is patched into a jump
        stubs = []
        for offset, target in fixups:
            stubs.append((offset, target, len(out)))
            out += UD2
        window_stubs = []
        for offset, resume_eip, after_sti in windows:
            window_stubs.append((offset, resume_eip, after_sti, len(out)))
            out += UD2
        if not tc.room(len(out)):
            vmm.flush_translations()
        base = tc.top
        for offset, target, stub in stubs:
            existing = tc.blocks.get((cs_base + target) & 0xFFFFFFFF)
            dest = existing.tc if existing is not None else base + stub
            struct.pack_into("<i", out, offset, dest - (base + offset + 4))
            if existing is None:
                tc.callouts[base + stub] = Callout("branch", target, patch_at=base + offset)
        for offset, callout in callouts:
            tc.callouts[base + offset] = callout
        for offset, resume_eip, after_sti, stub in window_stubs:
            tc.windows.append((base + offset, base + stub))
            tc.callouts[base + stub] = Callout("window", resume_eip, resume=base + offset + 5,
                                               after_sti=after_sti)
        for mark in marks:
            offset, geip, delta, boundary = mark[:4]
            tc.map[base + offset] = (geip, delta, boundary, len(mark) > 4 and mark[4])
            if boundary:
                tc.entry.setdefault((cs_base + geip) & 0xFFFFFFFF, base + offset)
        block = Block(guest_eip, linear, base, bytes(out), guest_bytes, frames,
                      [(g, b, base + o, t) for g, b, o, t in listing])
        tc.put(bytes(out))
        tc.blocks[linear] = block
        for frame in frames:
            tc.by_frame.setdefault(frame, set()).add(linear)
        return block

    # -- classification --------------------------------------------------------------------
    def classify(self, insn):
        m = insn.mnemonic
        prefixes = insn.insn.prefix
        segment_override = prefixes[1] if len(prefixes) > 1 else 0
        if segment_override in (x86.X86_PREFIX_GS, x86.X86_PREFIX_CS):
            return "callout"            # GS is the VMM's; CS is the VMM's code segment
        opsize16 = x86.X86_PREFIX_OPSIZE in prefixes
        addr16 = x86.X86_PREFIX_ADDRSIZE in prefixes
        if m == "cli":
            return "cli"
        if m == "sti":
            return "sti"
        if m in ("pushfd", "pushf") and not opsize16 and insn.bytes[-1] == 0x9C:
            return "pushf"
        if m in ("popfd", "popf") and not opsize16 and insn.bytes[-1] == 0x9D:
            return "popf"
        if m == "push" and insn.bytes == b"\x0e":
            return "push cs"
        if m in CALLOUT or m in ("pushfd", "popfd"):
            return "callout"
        ops = insn.operands
        direct = len(ops) == 1 and ops[0].type == x86.X86_OP_IMM
        if m in ("jmp", "call") and direct and not opsize16:
            return "jmp" if m == "jmp" else "call"
        if m in JCC and direct and not opsize16:
            return "jcc"
        if m in LOOPS and not opsize16 and not addr16:
            return "loop"
        if m == "ret" and not opsize16 and self.ret_table is not None:
            return "ret"
        if m in ("call", "jmp") and not opsize16 and self.ret_table is not None and \
                insn.insn.opcode[0] == 0xFF and (insn.insn.modrm >> 3) & 7 in (2, 4) and \
                not (ops[0].type == x86.X86_OP_MEM and ops[0].mem.segment in
                     (x86.X86_REG_GS, x86.X86_REG_CS)):
            return "indirect"
        if m in INDIRECT or m in JCC or m in LOOPS or m == "jcxz":
            return "callout"
        sregs = [insn.insn.reg_name(o.reg) for o in ops if o.type == x86.X86_OP_REG and
                 insn.insn.reg_name(o.reg) in ("cs", "ss", "ds", "es", "fs", "gs")]
        if m in ("mov", "push", "pop") and sregs:
            # Reading DS, ES or FS is innocuous: the VMM loads them with the guest's own
            # selectors, so the real ones are what the guest expects. CS and SS show the
            # real ring, and GS holds the VMM's segment while translated code runs; every
            # load must be checked (the VMM's descriptors share the real GDT).
            reads_only = (m == "push" or (m == "mov" and ops[1].type == x86.X86_OP_REG and
                                          insn.insn.reg_name(ops[1].reg) == sregs[0] and
                                          len(sregs) == 1))
            if reads_only and sregs[0] in ("ds", "es", "fs"):
                return "copy"
            return "callout"            # segment registers: the guest's are virtual
        if m in ("movsb", "movsw", "movsd", "cmpsb", "cmpsw", "cmpsd") and segment_override:
            return "callout"
        for o in ops:
            if o.type == x86.X86_OP_REG and insn.insn.reg_name(o.reg).startswith(("cr", "dr")):
                return "callout"
        return "copy"

    def condition(self, insn):
        return insn.insn.opcode[0] & 0xF if insn.insn.opcode[0] != 0x0F else insn.insn.opcode[1] & 0xF

    # -- inline PUSHF / POPF on the virtual CPU --------------------------------------------------
    def emit_pushf(self, out, marks, eip):
        """PUSHFD with the virtual IF and IOPL, leaving the real flags as they were (EAX is
        borrowed through a scratch word in the VMM's memory, never the guest's stack)."""
        vif, viopl, scratch = (struct.pack("<I", a) for a in (self.vif, self.viopl, self.scratch))
        out += b"\x9c"                                          # pushfd: the value to fix
        marks.append((len(out), eip, -4, False))
        out += b"\x9c"                                          # pushfd: the flags to keep
        out += b"\x81\x64\x24\x04\xff\xcd\xff\xff"              # and [esp+4], ~(IOPL|IF)
        out += GS + b"\x80\x3d" + vif + b"\x00"                 # cmp byte gs:[vif], 0
        out += b"\x74\x08"                                      # je +8
        out += b"\x81\x4c\x24\x04\x00\x02\x00\x00"              # or [esp+4], IF
        out += GS + b"\xa3" + scratch                          # mov gs:[scratch], eax
        out += GS + b"\xa1" + viopl                            # mov eax, gs:[viopl]
        out += b"\x09\x44\x24\x04"                              # or [esp+4], eax
        out += GS + b"\xa1" + scratch                          # mov eax, gs:[scratch]
        out += b"\x9d"                                          # popfd: the flags back

    def emit_popf(self, out, marks, eip, windows, nxt):
        """POPFD: the virtual IF and IOPL from the value, the rest into the real flags. The
        window comes before the final POPFD, so that POPFD stays the last instruction (a TF
        it sets traps after the guest's next instruction, as it should)."""
        vif, viopl, scratch = (struct.pack("<I", a) for a in (self.vif, self.viopl, self.scratch))
        out += b"\xf6\x44\x24\x01\x02"                          # test byte [esp+1], IF>>8
        out += GS + b"\x0f\x95\x05" + vif                       # setnz gs:[vif]
        out += GS + b"\xa3" + scratch                          # mov gs:[scratch], eax
        out += b"\x8b\x04\x24"                                  # mov eax, [esp]
        out += b"\x25\x00\x30\x00\x00"                          # and eax, IOPL
        out += GS + b"\xa3" + viopl                            # mov gs:[viopl], eax
        out += GS + b"\xa1" + scratch                          # mov eax, gs:[scratch]
        windows.append((len(out), nxt, False))
        out += WINDOW_NOP
        out += b"\x9d"                                          # popfd (IF, IOPL untouched)

    # -- RET: an inline lookup of the return target's translation ---------------------------------
    def emit_ret(self, out, marks, eip, insn):
        """RET (imm16): pop the guest's return address and jump through the return table to
        a landing pad that checks it, restores EAX and ECX, and jumps to its translation;
        every step leaves the flags alone (LEA, MOVZX, JECXZ)."""
        s_eax, s_ecx = struct.pack("<I", self.scratch + 4), struct.pack("<I", self.scratch + 8)
        out += GS + b"\xa3" + s_eax                            # mov gs:[s_eax], eax
        out += GS + b"\x89\x0d" + s_ecx                        # mov gs:[s_ecx], ecx
        marks.append((len(out), eip, 0, False))                 # (a fault here: nothing done)
        out += b"\x58"                                          # pop eax: the return address
        if insn.operands:
            out += b"\x8d\xa4\x24" + struct.pack("<i", insn.operands[0].imm & 0xFFFF)
        out += b"\x0f\xb7\xc8"                                  # movzx ecx, ax
        out += GS + b"\xff\x24\x8d" + struct.pack("<I", self.ret_table)   # jmp gs:[table+ecx*4]

    def emit_indirect(self, out, marks, eip, insn, nxt):
        """CALL/JMP r/m32: the target read with the instruction's own operand (re-encoded as
        MOV EAX, r/m32 before anything moves), the guest's return address pushed for a
        CALL, then the same lookup as RET."""
        s_eax, s_ecx = struct.pack("<I", self.scratch + 4), struct.pack("<I", self.scratch + 8)
        raw = insn.bytes
        at = raw.index(0xFF)                                    # after the prefixes
        modrm = raw[at + 1]
        load = raw[:at] + bytes([0x8B, modrm & 0xC7]) + raw[at + 2:]   # mov eax, r/m32
        out += GS + b"\xa3" + s_eax                            # mov gs:[s_eax], eax
        out += GS + b"\x89\x0d" + s_ecx                        # mov gs:[s_ecx], ecx
        marks.append((len(out), eip, 0, False))                 # (a fault here: nothing done)
        out += load
        if (modrm >> 3) & 7 == 2:                               # CALL: the guest's return address
            marks.append((len(out), eip, 0, False, True))       # (a fault: EAX, ECX back)
            out += b"\x68" + struct.pack("<I", nxt)
        out += b"\x0f\xb7\xc8"                                  # movzx ecx, ax
        out += GS + b"\xff\x24\x8d" + struct.pack("<I", self.ret_table)   # jmp gs:[table+ecx*4]

    def landing_pad(self, target, next_pad, destination):
        """The code that takes a return to guest `target`: (bytes, offset of the rel32 that
        goes to its translation). `next_pad` is where a different address goes."""
        s_eax, s_ecx = struct.pack("<I", self.scratch + 4), struct.pack("<I", self.scratch + 8)
        code = bytearray()
        code += b"\x8d\x88" + struct.pack("<I", -target & 0xFFFFFFFF)      # lea ecx, [eax - target]
        code += b"\xe3\x05"                                    # jecxz hit
        code += b"\xe9" + struct.pack("<I", 0)                  # jmp next pad (patched below)
        chain_at = len(code) - 4
        code += GS + b"\x8b\x0d" + s_ecx                        # hit: mov ecx, gs:[s_ecx]
        code += GS + b"\xa1" + s_eax                            # mov eax, gs:[s_eax]
        code += b"\xe9" + struct.pack("<I", 0)                  # jmp to the translation
        return code, chain_at, len(code) - 4
