/*
 * Trap entry and exit, the same code on both paths: one stub per vector the kernel handles,
 * a common path that saves the registers as a struct frame (guests/lib/idt.h) and calls
 * trap_dispatch(), and a return path that restores them and leaves through the paravirt
 * iret operation, pv_ops.iret: native_iret (IRET) or pyvmm_iret (the iret hypercall).
 *
 * The iret hypercall pops EIP, CS, EFLAGS (and ESP, SS when CS is a ring-3 selector) from
 * the kernel stack, but it needs EAX for the hypercall number: the interrupted code's EAX
 * would be lost. So pyvmm_iret puts that EAX and the EIP to return to on the stack the
 * interrupted code resumes on, and has the hypercall return to a two-instruction
 * trampoline, `popl %eax; ret`, which leaves every register and flag as the interrupted
 * code had them (Xen's 32-bit iret takes EAX from the stack for the same reason). Ring 3
 * resumes on its own stack (the eight bytes below its ESP are free: the i386 ABI has no
 * red zone), through a trampoline in user_text (tasks.c); the kernel, on the stack the frame
 * is on, moved down eight bytes to make room. An event that comes before a trampoline's
 * first instruction leaves a frame that returns to the trampoline itself: that one goes
 * back as it is (pushing again would grow the stack by eight bytes at each such event).
 */
#include "pyvmm_hypercall.h"

#define KERNEL_DS 0x10

    .text

    .macro stub vec
trap_stub_\vec:
    .if !((\vec == 8) || ((\vec >= 10) && (\vec <= 14)) || (\vec == 17))
    pushl $0                    /* the CPU pushes no error code for this one: a dummy */
    .endif
    pushl $\vec
    jmp trap_common
    .endm

    .altmacro
    .macro stub_n n
    stub %n
    .endm
    .macro entry_n n
    .long \n, trap_stub_\n
    .endm

    /* the exceptions 0-19, the tick (0x20) and the system call (0x80) */
    .set vec, 0
    .rept 20
    stub_n %vec
    .set vec, vec + 1
    .endr
    stub 32
    stub 128

trap_common:
    pushal
    pushl %ds
    pushl %es
    pushl %fs
    pushl %gs
    movl $KERNEL_DS, %eax
    movw %ax, %ds
    movw %ax, %es
    cld
    pushl %esp                  /* struct frame * */
    call trap_dispatch          /* returns with interrupts (events) off */
    addl $4, %esp
trap_return:
    popl %gs
    popl %fs
    popl %es
    popl %ds
    popal
    addl $8, %esp               /* vector and error code */
    jmp *pv_ops                 /* pv_ops.iret, the first member */

/* void enter_frame(void *frame): start a task (a struct frame with ESP and SS after it)
   as if it had been interrupted. */
    .global enter_frame
enter_frame:
    movl 4(%esp), %esp
    jmp trap_return

/* The native iret operation. */
    .global native_iret
native_iret:
    iret

/* The paravirtual iret operation: ESP at EIP, CS, EFLAGS [, ESP, SS]; events off (the
   stack below the frame is scratch); every register the interrupted code's. */
    .global pyvmm_iret
pyvmm_iret:
    /* Back to a trampoline that has not run yet (an event came before its first
       instruction): what it pops is already in place, and EAX is about to be popped. */
    cmpl $kernel_iret_trampoline, (%esp)
    je 2f
    cmpl $user_iret_trampoline, (%esp)
    je 2f
    pushl %ebx
    movl 8(%esp), %ebx          /* CS */
    andl $3, %ebx
    cmpl $3, %ebx
    popl %ebx
    je 1f

    /* Back into the kernel. The frame at A (EIP, CS, EFLAGS) becomes one at A - 8
       (trampoline, CS, EFLAGS) followed by EAX and EIP at A + 4 and A + 8, where the
       trampoline pops them, leaving ESP at A + 12 as IRET would. */
    subl $8, %esp               /* ESP = A - 8 */
    movl %eax, -4(%esp)         /* EAX, for now at A - 12 */
    movl 8(%esp), %eax
    movl %eax, -8(%esp)         /* EIP, for now at A - 16 */
    movl 12(%esp), %eax
    movl %eax, 4(%esp)          /* CS */
    movl 16(%esp), %eax
    movl %eax, 8(%esp)          /* EFLAGS */
    movl -4(%esp), %eax
    movl %eax, 12(%esp)         /* EAX */
    movl -8(%esp), %eax
    movl %eax, 16(%esp)         /* EIP */
    movl $kernel_iret_trampoline, (%esp)
    movl $PYVMM_HC_iret, %eax
    vmcall
    jmp .                       /* the iret hypercall does not come back */

1:  /* Out to ring 3: EAX and EIP go below the task's ESP, the frame returns to the user
       trampoline with that ESP. Frame: EIP at 4(%esp) once EBX is pushed, CS 8, EFLAGS
       12, ESP 16, SS 20. */
    pushl %ebx
    movl 16(%esp), %ebx
    subl $8, %ebx
    movl %eax, %ss:(%ebx)
    movl 4(%esp), %eax
    movl %eax, %ss:4(%ebx)
    movl %ebx, 16(%esp)
    movl $user_iret_trampoline, 4(%esp)
    popl %ebx
2:  movl $PYVMM_HC_iret, %eax
    vmcall
    jmp .

kernel_iret_trampoline:
    popl %eax
    ret

    .section .rodata
    .balign 4
    .global trap_entries, trap_entry_count
trap_entries:                   /* { vector, stub } pairs */
    .set vec, 0
    .rept 20
    entry_n %vec
    .set vec, vec + 1
    .endr
    .long 32, trap_stub_32
    .long 128, trap_stub_128
trap_entry_count:
    .long (trap_entry_count - trap_entries) / 8

    .section .note.GNU-stack, "", @progbits
