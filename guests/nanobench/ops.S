/*
 * The nanobenchmarks' loops and handlers, in assembly: every iteration is the same few
 * instructions at any optimization level, so a machine that counts instructions inside a
 * marker bracket can tell exactly what one iteration costs. The count per iteration, as
 * pyvmm counts (an instruction that faults is not counted, the delivery of its exception
 * is one step; INT n is one instruction that also enters its handler):
 *
 *   syscall   int 0x80, [incl, iret], dec, jnz                    5
 *   in        inb, andb, dec, jnz                                 4
 *   cli/sti   cli, sti, dec, jnz                                  4
 *   call/ret  call, [incl, ret], dec, jnz                         5
 *   pgfault   (#PF delivery), [incl, popl, addl, iret], dec, jnz  7
 *   divzero   (#DE delivery), [incl, addl, iret], dec, jnz        6
 *   ptemod    movl, invlpg, cmpl, jne, xchgl, dec, jnz            7
 *
 * Each op_* function is called from C with cdecl arguments and writes the begin marker
 * itself, right before its loop, and the end marker right after (see nanobench.h).
 */
#include "nanobench.h"

/* EAX = (op << 24) | ECX to the marker port; clobbers EAX and EDX */
    .macro mark_begin op
    movl %ecx, %eax
    orl $(\op << 24), %eax
    movl $MARKER_PORT, %edx
    outl %eax, %dx
    .endm

    .macro mark_end
    xorl %eax, %eax
    movl $MARKER_PORT, %edx
    outl %eax, %dx
    .endm

    .macro function name
    .global \name
    .type \name, @function
\name:
    .endm

    .text

/* ---- syscall: INT 0x80 from ring 3 to a ring-0 handler, IRET back ------------------- */
function op_syscall
    pushl %ebp
    pushl %ebx
    pushl %esi
    pushl %edi
    movl 20(%esp), %ecx
    movl $0, op_syscalls
    mark_begin OP_SYSCALL
    movl %esp, kernel_esp               /* op_syscall_return resumes here */
    movl $USER_DS, %eax
    movw %ax, %ds
    movw %ax, %es
    pushl $USER_DS                      /* an IRET frame into ring 3: SS, ESP, */
    pushl $user_stack_top
    pushl $0x002                        /* EFLAGS (IF = 0, IOPL 0), */
    pushl $USER_CS                      /* CS, EIP */
    pushl $1f
    iret
1:  int $SYSCALL_VECTOR                 /* ring 3 */
    decl %ecx
    jnz 1b
    int $RETURN_VECTOR

/* INT 0x81 from the ring-3 loop: CPL 0 on the TSS's stack. Back to op_syscall's frame. */
function op_syscall_return
    movl $KERNEL_DATA, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs                       /* the IRET to ring 3 nulled FS and GS (DPL 0) */
    movw %ax, %gs
    movl kernel_esp, %esp
    mark_end
    movl op_syscalls, %eax
    popl %edi
    popl %esi
    popl %ebx
    popl %ebp
    ret

/* The system call: count it and return. */
function op_syscall_handler
    incl op_syscalls
    iret

/* ---- in: a read of a device register (COM1's line status) --------------------------- */
function op_in
    pushl %ebx
    movl 8(%esp), %ecx
    mark_begin OP_IN
    movl $COM1_LSR, %edx
    movb $0xFF, %bl
1:  inb %dx, %al
    andb %al, %bl
    decl %ecx
    jnz 1b
    mark_end
    movzbl %bl, %eax
    popl %ebx
    ret

/* ---- cli/sti ------------------------------------------------------------------------ */
function op_cli_sti
    movl 4(%esp), %ecx
    mark_begin OP_CLI_STI
1:  cli
    sti
    decl %ecx
    jnz 1b
    mark_end
    pushfl
    popl %eax
    cli
    ret

/* ---- call/ret: a near call to a function that counts in EAX ------------------------- */
function op_call_ret
    movl 4(%esp), %ecx
    mark_begin OP_CALL_RET
    xorl %eax, %eax
1:  call callee
    decl %ecx
    jnz 1b
    movl %eax, %ecx
    mark_end
    movl %ecx, %eax
    ret

callee:
    incl %eax
    ret

/* ---- pgfault: a load from a not-present page; the handler skips the load ------------ */
function op_pgfault
    pushl %ebx
    movl 8(%esp), %ecx
    movl $0, op_pgfaults
    mark_begin OP_PGFAULT
    movl 12(%esp), %ebx
    movl $UNTOUCHED, %eax
1:
pgfault_site:
    movl (%ebx), %eax                   /* #PF: never completes */
pgfault_resume:
    decl %ecx
    jnz 1b
    movl %eax, %ecx
    mark_end
    movl %ecx, %eax
    popl %ebx
    ret

function op_pgfault_handler
    incl op_pgfaults
    popl op_pgfault_error               /* the error code the CPU pushed */
    addl $(pgfault_resume - pgfault_site), (%esp)   /* resume after the load */
    iret

/* ---- divzero: DIV by zero; the handler skips the DIV ------------------------------- */
function op_divzero
    pushl %ebx
    movl 8(%esp), %ecx
    movl $0, op_divide_errors
    mark_begin OP_DIVZERO
    xorl %ebx, %ebx
    xorl %edx, %edx
    movl $UNTOUCHED, %eax
1:
divzero_site:
    divl %ebx                           /* #DE: EDX:EAX stay as they were */
divzero_resume:
    decl %ecx
    jnz 1b
    movl %eax, %ecx
    mark_end
    movl %ecx, %eax
    popl %ebx
    ret

function op_divzero_handler
    incl op_divide_errors
    addl $(divzero_resume - divzero_site), (%esp)
    iret

/* ---- ptemod: point a PTE at frame A, then B, ..., INVLPG, read through it ----------- */
/* op_ptemod(n, pte, linear, pte_a, pte_b): each frame's first word holds its own PTE value,
   so a read through `linear` must equal the PTE just written. */
function op_ptemod
    pushl %ebp
    pushl %ebx
    pushl %esi
    pushl %edi
    movl 20(%esp), %ecx
    mark_begin OP_PTEMOD
    movl 24(%esp), %ebx
    movl 28(%esp), %edx
    movl 32(%esp), %esi
    movl 36(%esp), %edi
1:  movl %esi, (%ebx)                   /* the PTE: the next frame */
    invlpg (%edx)                       /* forget the old translation */
    cmpl (%edx), %esi                   /* read through it: the new frame's word? */
    jne 2f
    xchgl %esi, %edi
    decl %ecx
    jnz 1b
2:  mark_end                            /* ECX: iterations left, 0 if all went right */
    movl %ecx, %eax
    popl %edi
    popl %esi
    popl %ebx
    popl %ebp
    ret

    .data
    .balign 4
    .global op_syscalls, op_pgfaults, op_pgfault_error, op_divide_errors
op_syscalls:        .long 0
op_pgfaults:        .long 0
op_pgfault_error:   .long 0
op_divide_errors:   .long 0
kernel_esp:         .long 0

    .bss
    .balign 16
user_stack:
    .skip 4096
user_stack_top:

    .section .note.GNU-stack, "", @progbits
