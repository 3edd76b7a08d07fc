/*
 * Multiboot v1 header and kernel entry point, shared by every guest.
 *
 * The loader (QEMU -kernel, later pyvmm) finds the header in the first 8 KiB of the ELF,
 * loads the ELF segments at 1 MiB and jumps to _start in 32-bit protected mode with
 * EAX = 0x2BADB002, EBX = physical address of the multiboot info struct, flat CS/DS,
 * interrupts off. We are not given a stack, so make one, clear .bss (a loader may or may
 * not zero it), and call kmain(magic, info). If kmain returns, exit with its result.
 */
#define MB_MAGIC        0x1BADB002
#define MB_PAGE_ALIGN   (1 << 0)        /* modules page aligned (we load none; harmless) */
#define MB_MEMORY_INFO  (1 << 1)        /* please fill mem_lower/mem_upper */
#define MB_FLAGS        (MB_PAGE_ALIGN | MB_MEMORY_INFO)   /* bit 16 clear: a plain ELF */

#define STACK_SIZE      (64 * 1024)

    .section .multiboot, "a"            /* not "ax": objdump -d must not decode it */
    .balign 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)        /* magic + flags + checksum == 0 */

    .section .bss
    .balign 16
    .global stack_bottom, stack_top
stack_bottom:
    .skip STACK_SIZE
stack_top:

    .text
    .global _start
    .type _start, @function
_start:
    cli                                 /* already off; say so for readers */
    cld                                 /* the C ABI expects DF = 0 */
    movl $stack_top, %esp
    /* Clear .bss (it holds the stack itself, so nothing is pushed yet). rep stosl uses
       EAX/ECX/EDI: keep magic in ESI; EBX (info) is not touched. */
    movl %eax, %esi
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx                       /* __bss_start/__bss_end are 4-byte aligned */
    xorl %eax, %eax
    rep stosl
    xorl %ebp, %ebp                     /* end of the frame-pointer chain (debuggers) */
    pushl $0                            /* (keeps the stack 16-byte aligned at the call) */
    pushl $0
    pushl %ebx                          /* EBX still holds info: stosl does not touch it */
    pushl %esi                          /* magic */
    call kmain
    pushl %eax                          /* kmain returned: exit(its result) */
    call exit
1:  cli
    hlt
    jmp 1b
    .size _start, . - _start

    .section .note.GNU-stack, "", @progbits
