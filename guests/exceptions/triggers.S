/*
 * One function per exception we provoke. Each has a global label at the faulting (or
 * trapping) instruction, <name>_site, and one where execution should continue,
 * <name>_resume. The C handler reports EIP relative to the site, then sets EIP to
 * resume (past the instruction that faulted, or, for traps, where EIP already is).
 * Assembly rather than inline asm: the labels must exist exactly once at any -O level.
 */
    .text

    .macro trigger name
    .global trigger_\name, \name\()_site, \name\()_resume
    .type trigger_\name, @function
trigger_\name:
    .endm

/* #DE (0): divide by zero. DIV r/m32 is a fault: EIP points at the DIV. */
trigger de
    pushl %ebx
    movl $1234, %eax
    xorl %edx, %edx
    xorl %ebx, %ebx
de_site:
    divl %ebx
de_resume:
    popl %ebx
    ret

/* #DE (0) again, for the other cause: the quotient does not fit (INT_MIN / -1). */
trigger de_overflow
    pushl %ebx
    movl $0x80000000, %eax
    movl $0xFFFFFFFF, %edx              /* EDX:EAX = -2^31 */
    movl $-1, %ebx
de_overflow_site:
    idivl %ebx
de_overflow_resume:
    popl %ebx
    ret

/* #DB (1): single step. POPF sets TF; the trap comes after the instruction after it. */
trigger db
    pushfl
    orl $0x100, (%esp)
    popfl
db_site:
    nop
db_resume:
    ret

/* #BP (3): INT3 is a trap: the saved EIP is already past it (site + 1). */
trigger bp
bp_site:
    int3
bp_resume:
    ret

/* #OF (4): INTO traps only when OF = 1. */
trigger of
    movl $0x7FFFFFFF, %eax
    addl $1, %eax                       /* signed overflow: OF = 1 */
of_site:
    into
of_resume:
    ret

/* #UD (6): UD2 is the architecturally reserved invalid opcode (2 bytes, 0F 0B). */
trigger ud
ud_site:
    ud2
ud_resume:
    ret

/* #NP (11): a segment descriptor with P = 0 (GDT entry 3, set up by kmain). The error
   code is the selector. The faulting MOV leaves ES unchanged. */
trigger np
    movl $0x18, %eax
np_site:
    movw %ax, %es
np_resume:
    ret

/* #GP (13): a selector beyond the GDT limit. The error code is the selector with its
   RPL bits cleared: 0x123B -> 0x1238. */
trigger gp_selector
    movl $0x123B, %eax
gp_selector_site:
    movw %ax, %ds
gp_selector_resume:
    ret

/* #GP (13): the null selector may go into DS..GS, but never into SS. Error code 0. */
trigger gp_null_ss
    xorl %eax, %eax
gp_null_ss_site:
    movw %ax, %ss
gp_null_ss_resume:
    ret

/* #NP (11) through the IDT: INT 0x31 hits a gate with P = 0. The error code names the
   IDT entry: vector * 8 + 2 (bit 1 = IDT). */
trigger np_gate
np_gate_site:
    int $0x31
np_gate_resume:
    ret

/* A plain software interrupt: INT 0x30 (no error code; EIP is past the INT). */
trigger soft
soft_site:
    int $0x30
soft_resume:
    ret

    .section .note.GNU-stack, "", @progbits
