/*
 * One entry stub per vector (all 256, so `int n` works for any n), and the common path
 * that saves registers and calls isr_dispatch(struct frame *) (idt.c).
 *
 * The CPU pushes an error code for vectors 8, 10-14 and 17 only. For the others the stub
 * pushes a dummy 0 so that every frame has the same layout. (A software `int n` with one
 * of those vectors pushes no error code, and its frame is then off by one word: don't.)
 */
    .text

    .macro stub vec
isr_stub_\vec:
    .if !((\vec == 8) || ((\vec >= 10) && (\vec <= 14)) || (\vec == 17))
    pushl $0                    /* dummy error code */
    .endif
    pushl $\vec
    jmp isr_common
    .endm

    .altmacro                   /* so %n below expands a symbol's value into a name */
    .macro stub_n n
    stub %n
    .endm
    .macro stub_addr n
    .long isr_stub_\n
    .endm

    .set vec, 0
    .rept 256
    stub_n %vec
    .set vec, vec + 1
    .endr

isr_common:
    pushal                      /* eax ecx edx ebx esp ebp esi edi */
    pushl %ds
    pushl %es
    pushl %fs
    pushl %gs
    movl $0x10, %eax            /* the C code runs with the kernel's flat data segment */
    movw %ax, %ds
    movw %ax, %es
    cld                         /* the interrupted code may have had DF = 1 */
    pushl %esp                  /* argument: struct frame * */
    call isr_dispatch
    addl $4, %esp
    popl %gs
    popl %fs
    popl %es
    popl %ds
    popal
    addl $8, %esp               /* vector and error code */
    iret

    .section .rodata
    .balign 4
    .global isr_stub_table
isr_stub_table:
    .set vec, 0
    .rept 256
    stub_addr %vec
    .set vec, vec + 1
    .endr

    .section .note.GNU-stack, "", @progbits
