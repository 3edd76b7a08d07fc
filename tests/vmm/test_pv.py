"""Paravirtualization (`--mode pv`): the hypercall ABI of docs/hypercall-abi.md, driven by
a small kernel written here against it, and kernels that make no hypercalls running as
under trap-and-emulate."""
import io

import pytest

from pyvmm.vmm import create
from tests.guest_build import guests_build
from tests.vmm.test_trap import boot, machine

PV_KERNEL = """
    .macro hypercall nr
        mov eax, \\nr
        vmcall
    .endm
        /* find the hypervisor */
        mov eax, 0x40000000
        cpuid
        mov [sig], ebx
        mov [sig + 4], ecx
        mov [sig + 8], edx
        mov eax, 0x40000001
        cpuid
        mov [abi], eax
        /* console */
        mov ebx, offset hello
        mov ecx, 6
        hypercall 0
        mov [written], eax
        /* events: shared info, trap table, a timer, block until it fires */
        mov ebx, 0x80000
        hypercall 3
        mov ebx, offset traps
        hypercall 1
        mov ebx, 10                     /* 10 microseconds */
        mov ecx, 0x30
        hypercall 8
        hypercall 9                     /* block: events on, sleep */
        /* direct paging: identity-map 4 MiB with the page-table pages (0x200000 the
           directory, 0x201000 and 0x202000 tables) read-only */
        mov dword ptr [0x202000], 0x150003      /* for later: 0x400000 -> frame 0x150000 */
        mov dword ptr [0x150000], 0xfeedface
        mov edi, 0x201000
        xor ecx, ecx
    1:  mov eax, ecx
        shl eax, 12
        or eax, 3
        cmp ecx, 0x200
        jb 3f
        cmp ecx, 0x202
        ja 3f
    2:  and eax, ~2
    3:  mov [edi + ecx * 4], eax
        inc ecx
        cmp ecx, 1024
        jne 1b
        mov dword ptr [0x200000], 0x201003
        mov ebx, 0x200000
        hypercall 5                     /* set_cr3: validated, paging on */
        mov [cr3_result], eax
        /* a batch: map 0x400000 (PDE 1 -> table 0x202000, filled above) */
        mov ebx, offset batch
        mov ecx, 1
        mov edx, offset done
        hypercall 4
        mov [batch_result], eax
        mov eax, [0x400000]
        mov [through], eax
        /* refused: the page table writable */
        mov ebx, offset bad
        mov ecx, 1
        xor edx, edx
        hypercall 4
        mov [bad_result], eax
        /* refused: PDE 1023 is the hypervisor's */
        mov ebx, offset hole
        mov ecx, 1
        xor edx, edx
        hypercall 4
        mov [hole_result], eax
        mov ebx, 7
        hypercall 11                    /* shutdown(7) */
    tick:
        inc dword ptr [ticks]
        hypercall 10                    /* iret */
        .align 4
    hello: .ascii "hello\\n"
    traps:  .byte 0x30, 4
            .word 0x08
            .long tick
            .long 0, 0
    batch:  .long 0x200004, 0x202003
    bad:    .long 0x201800, 0x201003    /* entry 0x200 of the table: the table itself, RW */
    hole:   .long 0x200ffc, 0x203003
    sig: .long 0, 0, 0
    abi: .long 0
    written: .long 0
    ticks: .long 0
    cr3_result: .long -1
    batch_result: .long -1
    done: .long 0
    through: .long 0
    bad_result: .long 0
    hole_result: .long 0
"""


def test_a_paravirtual_kernel_uses_the_abi():
    from tests.asm import assemble
    pc = machine(PV_KERNEL)
    pc.uart.sink = io.BytesIO()
    vmm = create("pv", pc)
    result = pc.run(1_000_000)
    assert result.reason == "exit" and result.status == 15, result.message
    assert pc.uart.sink.getvalue() == b"hello\n"
    code = assemble(PV_KERNEL, 0x100000)
    # the result words sit at the end of the program, in the order declared
    mem = lambda a: int.from_bytes(pc.cpu.mem_read(a, 4), "little")
    base = 0x100000 + len(code) - 4 * 12
    sig = pc.cpu.mem_read(base, 12)
    abi, written, ticks, cr3_result, batch_result, done, through, bad, hole = \
        (mem(base + 12 + 4 * i) for i in range(9))
    assert sig == b"PyVMM PyVMM " and abi == 1 and written == 6
    assert ticks == 1                       # the timer event reached the trap-table handler
    assert cr3_result == 0 and batch_result == 1 and done == 1 and through == 0xFEEDFACE
    assert bad == (-1) & 0xFFFFFFFF         # EPERM: a page table may not be mapped writable
    assert hole == (-1) & 0xFFFFFFFF        # EPERM: PDE 1023 is the hypervisor's
    counts = vmm.stats.count
    assert counts["hypercall set_cr3"] == 1 and counts["hypercall mmu_update"] == 3
    assert counts["event (delivered)"] == 1 and counts["hypercall iret"] == 1
    assert counts["cpuid"] == 2


@pytest.mark.parametrize("name", ["hello", "interrupts", "paging", "usermode"])
def test_kernels_without_hypercalls_are_trapped_and_emulated(name):
    bare, bare_result, _ = boot(name, "emulate")
    out, result, vmm = boot(name, "pv")
    assert out == bare and result.instructions == bare_result.instructions
    assert not any(reason.startswith("hypercall") for reason in vmm.stats.count)


def test_vmcall_outside_pv_is_an_invalid_opcode():
    pc = machine("""
        mov eax, offset handler
        mov word ptr [idt + 6 * 8], ax
        mov word ptr [idt + 6 * 8 + 2], 0x08
        mov word ptr [idt + 6 * 8 + 4], 0x8E00
        shr eax, 16
        mov word ptr [idt + 6 * 8 + 6], ax
        lidt [idtr]
        vmcall
    handler:
        mov al, 9
        out 0xF4, al
        .align 4
    idtr: .word 7 * 8 - 1
          .long idt
    idt: .rept 7
         .quad 0
         .endr
    """)
    create("trap", pc)
    result = pc.run(100_000)
    assert result.reason == "exit" and result.status == 19


DIRECT_PAGING = """
    .macro hypercall nr
        mov eax, \\nr
        vmcall
    .endm
        mov eax, cr4
        or eax, {cr4_bits}
        mov cr4, eax
        mov edi, 0x201000
        xor ecx, ecx
    1:  mov eax, ecx
        shl eax, 12
        or eax, 3
        cmp ecx, 0x200
        jb 3f
        cmp ecx, 0x201
        ja 3f
        and eax, ~2
    3:  mov [edi + ecx * 4], eax
        inc ecx
        cmp ecx, 1024
        jne 1b
        mov dword ptr [0x200000], 0x201003
        mov ebx, 0x200000
        hypercall 5
        mov ebx, offset request
        mov ecx, 1
        xor edx, edx
        hypercall 4
        mov [result], eax
        mov eax, cr4
        xor eax, 0x80           /* PGE: no shadow to flush in direct paging */
        mov cr4, eax
        mov eax, cr0
        mov cr0, eax            /* paging stays direct */
        mov eax, [result]
        neg eax
        mov ebx, eax
        hypercall 11
        .align 4
    request: .long 0x200004, {pde}
    result: .long 0
"""


@pytest.mark.parametrize("cr4_bits, pde, why", [
    (0, 0x200003, "the directory mapped as a table, writable (a self-map)"),
    (0x10, 0x83, "a writable 4 MiB page over the page tables"),
])
def test_direct_paging_refuses_mappings_that_would_make_page_tables_writable(cr4_bits, pde, why):
    pc = machine(DIRECT_PAGING.format(cr4_bits=cr4_bits, pde=pde))
    vmm = create("pv", pc)
    result = pc.run(1_000_000)
    # shutdown(-result): EPERM (1) gives status 3
    assert result.reason == "exit" and result.status == 3, (why, result.message)
    assert vmm.direct and pc.cpu.cr3 == 0x200000


# Events from the local APIC: a self-IPI (vector 0x41) sent while events are off. The
# shared info page is at 0x80000, the results from 0x81000 on.
APIC_EVENTS = """
    .macro hypercall nr
        mov eax, \\nr
        vmcall
    .endm
    .set shared, 0x80000
    .set out, 0x81000
        mov ebx, shared
        hypercall 3                     /* set_shared_info: events are the byte from now on */
        {delivery}
        mov dword ptr [0xfee000f0], 0x1ff        /* the APIC on */
        {events_off}
        mov dword ptr [0xfee00300], 0x44041      /* self-IPI, vector 0x41 */
        mov ecx, 50
    1:  loop 1b
        mov eax, [count]
        mov [out], eax                  /* 0: it waits */
        movzx eax, byte ptr [shared + 1]
        mov [out + 4], eax              /* event_pending */
        mov eax, [shared + 4]
        mov [out + 8], eax              /* pending_vector */
        {events_on}
        mov [out + 12], eax             /* the count in the shadow (STI), or 0 */
        mov eax, [count]
        mov [out + 16], eax             /* 1: in exactly once */
        movzx eax, byte ptr [shared + 1]
        mov [out + 20], eax             /* event_pending, cleared */
        movzx eax, byte ptr [shared]
        mov [out + 24], eax             /* events back on after the handler's IRET */
        /* again, and halt right after STI: the waiting event wakes the kernel at once */
        cli
        mov dword ptr [0xfee00300], 0x44041
        sti
        hlt
        mov eax, [count]
        mov [out + 32], eax             /* 2 */
        mov ebx, 0
        hypercall 11
    handler:
        push eax
        inc dword ptr [count]
        movzx eax, byte ptr [shared]
        mov [out + 28], eax             /* events off in the handler */
        pop eax
        iretd                           /* trapped and emulated: events back on */
        .align 8
    traps:  .byte 0x41, 4
            .word 0x08
            .long handler
            .long 0, 0
    idtr: .word 0x42 * 8 - 1
          .long idt
    idt: .rept 0x42
         .quad 0
         .endr
    count: .long 0
"""
THROUGH_THE_IDT = """
        mov eax, offset handler
        mov word ptr [idt + 0x41 * 8], ax
        mov word ptr [idt + 0x41 * 8 + 2], 0x08
        mov word ptr [idt + 0x41 * 8 + 4], 0x8E00
        shr eax, 16
        mov word ptr [idt + 0x41 * 8 + 6], ax
        lidt [idtr]                     /* trapped: the kernel keeps its IDT */
"""
THROUGH_THE_TRAP_TABLE = """
        mov ebx, offset traps
        hypercall 1
"""


@pytest.mark.parametrize("delivery, events_off, events_on, shadow", [
    # the byte written directly, then nop: the ABI's way (guests/pvkernel, popek-goldberg)
    (THROUGH_THE_IDT, "mov byte ptr [shared], 0",
     "mov byte ptr [shared], 1\n mov ecx, 50\n 2: loop 2b\n mov eax, [count]\n"
     " mov [out + 36], eax\n hypercall 13\n xor eax, eax", None),
    # CLI and STI, trapped and emulated on the same byte: the event waits out STI's shadow
    (THROUGH_THE_TRAP_TABLE, "cli", "sti\n mov eax, [count]", 0),
], ids=["idt-store-and-nop", "trap-table-cli-sti"])
def test_apic_interrupts_become_events_delivered_when_the_kernel_allows(
        delivery, events_off, events_on, shadow):
    pc = machine(APIC_EVENTS.format(delivery=delivery, events_off=events_off,
                                    events_on=events_on))
    vmm = create("pv", pc)
    result = pc.run(1_000_000)
    assert result.reason == "exit" and result.status == 1, result.message
    word = lambda i: int.from_bytes(pc.cpu.mem_read(0x81000 + 4 * i, 4), "little")
    waiting, pending, vector, in_shadow, once, cleared, back_on, in_handler, woken = \
        (word(i) for i in range(9))
    assert (waiting, pending, vector) == (0, 1, 0x41)       # events off: it waits, marked
    if shadow is None:
        assert word(9) == 0             # events on by a store: nothing until the hypercall
    else:
        assert in_shadow == shadow      # the instruction after STI runs first
    assert once == 1 and cleared == 0
    assert in_handler == 0 and back_on == 1
    assert woken == 2                   # STI; HLT with an event waiting did not halt for good
    assert vmm.stats.count["event (delivered)"] == 2
