/*
 * The parts of the self-test that play with ESP, EBP, CS and the segment registers,
 * where inline asm inside a C function would fight the compiler's own use of them.
 *
 * Each st_* test is `int st_xxx(uint32_t *out)`: it stores values into out[] and returns
 * how many. Every value is relative (a difference of two stack addresses, a selector, a
 * stored constant) so that the output is the same at -O0 and -O2.
 *
 * Selectors (set up by selftest.c): 0x08 code and 0x10 data (the kernel's), 0x18 a second
 * flat code segment, 0x20 a data segment whose base is seg_buf - 0x100.
 */
#define ALT_CS  0x18
#define ALT_DS  0x20

    .text

    .macro func name
    .global \name
    .type \name, @function
\name:
    .endm

    /* Save the callee-saved registers; EDI = out. */
    .macro prologue
    pushl %ebp
    pushl %ebx
    pushl %esi
    pushl %edi
    movl 20(%esp), %edi
    .endm

    .macro epilogue count
    movl $\count, %eax
    popl %edi
    popl %esi
    popl %ebx
    popl %ebp
    ret
    .endm

/* ---- st_setjmp / st_longjmp: how the self-test survives an unexpected exception ------
   jb[0..5] = EBX ESI EDI EBP ESP EIP. st_longjmp is called from an exception handler:
   it drops the handler's frame with the rest of the stack (ring 0: nothing else to undo),
   reloads the kernel's data segments and clean EFLAGS, and returns from st_setjmp again. */
func st_setjmp
    movl 4(%esp), %eax
    movl %ebx, 0(%eax)
    movl %esi, 4(%eax)
    movl %edi, 8(%eax)
    movl %ebp, 12(%eax)
    leal 4(%esp), %ecx              /* ESP as it will be after our RET */
    movl %ecx, 16(%eax)
    movl (%esp), %ecx               /* the return address */
    movl %ecx, 20(%eax)
    xorl %eax, %eax
    ret

func st_longjmp
    movl 4(%esp), %edx
    movl 8(%esp), %eax
    movl $0x10, %ecx
    movw %cx, %ds
    movw %cx, %es
    movw %cx, %fs
    movw %cx, %gs
    pushl $2                        /* EFLAGS: only the always-1 bit (DF, AC, NT... off) */
    popfl
    movl 0(%edx), %ebx
    movl 4(%edx), %esi
    movl 8(%edx), %edi
    movl 12(%edx), %ebp
    movl 16(%edx), %esp
    jmp *20(%edx)

/* ---- ENTER / LEAVE ------------------------------------------------------------------ */
func st_enter
    prologue
    movl %esp, %esi                 /* ESI: ESP before each ENTER */

    /* level 0: push EBP, EBP = ESP, ESP -= 16 */
    movl $0x11111111, %ebp
    enter $16, $0
    movl %esi, %eax
    subl %esp, %eax
    movl %eax, 0(%edi)              /* 4 + 16 */
    movl %esi, %eax
    subl %ebp, %eax
    movl %eax, 4(%edi)              /* 4 */
    movl (%ebp), %eax
    movl %eax, 8(%edi)              /* the old EBP */
    leave
    movl %esi, %eax
    subl %esp, %eax
    movl %eax, 12(%edi)             /* 0 */
    movl %ebp, 16(%edi)             /* 0x11111111 again */

    /* level 3: also copies 2 frame pointers from the old frame (EBP-4, EBP-8) and pushes
       the new frame pointer. Build that old frame as a fake "display" on the stack. */
    subl $32, %esp
    movl %esp, %ebx                 /* EBX: the fake frame */
    movl $0xAAAA0003, 4(%ebx)
    movl $0xAAAA0002, 8(%ebx)
    movl $0xAAAA0001, 12(%ebx)
    movl $0xF0F0F0F0, 16(%ebx)
    leal 16(%ebx), %ebp
    movl %esp, %esi
    enter $8, $3
    movl %esi, %eax
    subl %esp, %eax
    movl %eax, 20(%edi)             /* 4 (EBP) + 8 (2 copies) + 4 (frame ptr) + 8 */
    movl %esi, %eax
    subl %ebp, %eax
    movl %eax, 24(%edi)             /* 4 */
    movl (%ebp), %eax
    subl %ebx, %eax
    movl %eax, 28(%edi)             /* old EBP - fake frame = 16 */
    movl -4(%ebp), %eax
    movl %eax, 32(%edi)             /* 0xAAAA0001 */
    movl -8(%ebp), %eax
    movl %eax, 36(%edi)             /* 0xAAAA0002 */
    movl -12(%ebp), %eax
    subl %ebp, %eax
    movl %eax, 40(%edi)             /* the pushed frame pointer == new EBP: 0 */
    leave
    movl %ebp, %eax
    subl %ebx, %eax
    movl %eax, 44(%edi)             /* 16 */
    movl %esi, %eax
    subl %esp, %eax
    movl %eax, 48(%edi)             /* 0 */

    /* level 1: push EBP, push the new frame pointer, no copies */
    enter $4, $1
    movl %esi, %eax
    subl %esp, %eax
    movl %eax, 52(%edi)             /* 4 + 4 + 4 */
    leave
    /* the level is taken mod 32: 33 behaves as 1 */
    enter $0, $33
    movl %esi, %eax
    subl %esp, %eax
    movl %eax, 56(%edi)             /* 4 + 4 */
    leave
    addl $32, %esp
    epilogue 15

/* ---- stack edge cases ----------------------------------------------------------------- */
func st_stack
    prologue
    movl %esp, %esi

    pushl %esp                      /* pushes ESP as it was before the push */
    popl %eax
    subl %esi, %eax
    movl %eax, 0(%edi)              /* 0 */

    pushl $0xB0B0B0B0
    pushl $0xA0A0A0A0
    popl (%esp)                     /* address computed AFTER ESP is incremented: */
    popl %eax                       /* ...so A landed where B was */
    movl %eax, 4(%edi)              /* 0xA0A0A0A0 */

    pushl $0x22222222
    pushl $0x11111111
    pushl (%esp)                    /* push memory: duplicates the top */
    popl %eax
    movl %eax, 8(%edi)              /* 0x11111111 */
    popl %eax
    popl %eax

    leal -64(%esp), %eax            /* POP ESP: ESP = the popped value */
    pushl %eax
    popl %esp
    movl %esi, %eax
    subl %esp, %eax
    movl %eax, 12(%edi)             /* 64 */
    movl %esi, %esp

    pushw $0x1234                   /* 16-bit push: ESP -= 2 */
    movl %esi, %eax
    subl %esp, %eax
    movl %eax, 16(%edi)             /* 2 */
    xorl %eax, %eax
    popw %ax
    movl %eax, 20(%edi)             /* 0x1234 */

    pushl $-2                       /* push imm8, sign-extended */
    popl %eax
    movl %eax, 24(%edi)             /* 0xFFFFFFFE */

    movl $0x0000000A, %eax          /* PUSHAD/POPAD: the ESP slot holds the ESP before   */
    movl $0x0000000B, %ebx          /* PUSHAD, and POPAD skips it                         */
    movl $0x0000000C, %ecx
    movl $0x0000000D, %edx
    pushl %esi
    movl %esp, %ebp
    pushal
    movl 12(%esp), %eax             /* the saved ESP */
    subl %ebp, %eax
    movl %eax, 28(%edi)             /* 0 */
    movl $0x99999999, 12(%esp)      /* POPAD ignores this */
    movl $0x0000BEEF, 16(%esp)      /* EBX */
    popal
    movl %ebp, %eax
    subl %esp, %eax
    movl %eax, 32(%edi)             /* 0 */
    movl %ebx, 36(%edi)             /* 0xBEEF */
    popl %esi

    /* RET imm16: the callee removes its arguments */
    pushl $1
    pushl $2
    call ret8
    movl %esi, %eax
    subl %esp, %eax
    movl %eax, 40(%edi)             /* 0 */

    /* indirect calls and jumps, through a register and through memory */
    movl $ret_eax_7, %eax
    call *%eax
    movl %eax, 44(%edi)             /* 7 */
    call *fnptr
    movl %eax, 48(%edi)             /* 7 */
    movl $2, %ecx
    jmp *jump_table(, %ecx, 4)
jt_0:
    movl $100, %eax
    jmp 4f
jt_1:
    movl $200, %eax
    jmp 4f
jt_2:
    movl $300, %eax
4:  movl %eax, 52(%edi)             /* 300 */

    /* 16-bit and 32-bit pushes of a segment register */
    pushl $0x55AA55AA               /* leave garbage in the slot */
    popl %eax
    movl %esp, %ebx
    pushw %ds
    movl %ebx, %eax
    subl %esp, %eax
    movl %eax, 56(%edi)             /* 2 */
    popw %ax
    movzwl %ax, %eax
    movl %eax, 60(%edi)             /* 0x10 */
    pushl %ds
    movl %ebx, %eax
    subl %esp, %eax
    movl %eax, 64(%edi)             /* 4 */
    popl %eax
    andl $0xFFFF, %eax              /* a 32-bit push may write 2 or 4 bytes: low half only */
    movl %eax, 68(%edi)
    epilogue 18

ret8:
    ret $8
ret_eax_7:
    movl $7, %eax
    ret

/* ---- far transfers: JMP, CALL, RET through a second code segment ---------------------- */
func st_far
    prologue
    movl %esp, %esi

    ljmp $ALT_CS, $1f               /* direct far jump: EA ptr16:32 */
1:  movl %cs, %eax
    movl %eax, 0(%edi)              /* 0x18 */
    ljmp $0x08, $2f
2:  movl %cs, %eax
    movl %eax, 4(%edi)              /* 0x08 */

    movl $3f, far_ptr               /* indirect far jump: FF /5 m16:32 */
    movw $ALT_CS, far_ptr + 4
    ljmp *far_ptr
3:  movl %cs, %eax
    movl %eax, 8(%edi)              /* 0x18 */

    /* now running in 0x18: far call into 0x08 and back */
    lcall $0x08, $far_func
far_call_ret:
    movl %eax, 12(%edi)             /* CS inside: 0x08 */
    movl %edx, 16(%edi)             /* the CS pushed as return address: 0x18 */
    movl %ecx, 20(%edi)             /* the EIP pushed, relative to far_call_ret: 0 */
    movl %cs, %eax
    movl %eax, 24(%edi)             /* back in 0x18 */
    movl %esi, %eax
    subl %esp, %eax
    movl %eax, 28(%edi)             /* 0 */

    /* indirect far call (FF /3) to a RETF imm16 that drops 2 arguments */
    movl $far_func_ret8, far_ptr
    movw $0x08, far_ptr + 4
    pushl $0x1111
    pushl $0x2222
    lcall *far_ptr
    movl %eax, 32(%edi)             /* 0x2222 + 0x1111 */
    movl %esi, %eax
    subl %esp, %eax
    movl %eax, 36(%edi)             /* 0 */

    ljmp $0x08, $6f                 /* home */
6:  movl %cs, %eax
    movl %eax, 40(%edi)             /* 0x08 */
    epilogue 11

far_func:
    movl %cs, %eax
    movl 4(%esp), %edx              /* the caller's CS (a 32-bit slot: low half only) */
    andl $0xFFFF, %edx
    movl (%esp), %ecx               /* the caller's EIP, relative to where it should be */
    subl $far_call_ret, %ecx
    lret

far_func_ret8:
    movl 8(%esp), %eax              /* the arguments sit above CS:EIP */
    addl 12(%esp), %eax
    lret $8

/* ---- segment registers: MOV, PUSH/POP, a segment with a base --------------------------- */
func st_sreg
    prologue
    movl %ds, %eax                  /* MOV r32, Sreg: upper half zeroed */
    movl %eax, 0(%edi)              /* 0x10 */

    movl $0xFFFFFFFF, sreg_mem
    movw %gs, sreg_mem              /* MOV m16, Sreg: stores 2 bytes only */
    movl sreg_mem, %eax
    movl %eax, 4(%edi)              /* 0xFFFF0010 */

    pushl $ALT_DS                   /* POP FS: a full descriptor load */
    popl %fs
    movl %fs, %eax
    movl %eax, 8(%edi)              /* 0x20 */
    movl %fs:0x100, %eax            /* = seg_buf[0], through FS's base */
    movl %eax, 12(%edi)
    movl $0xCAFEBABE, %fs:0x104     /* -> seg_buf[1] */
    movl $0x100, %esi
    lodsl %fs:(%esi)                /* segment override on a string source */
    movl %eax, 16(%edi)             /* seg_buf[0] again */

    movw sel_alt_ds, %gs            /* MOV Sreg, m16 */
    movl $0x108, %ebx
    movl $0x0D15EA5E, %gs:(%ebx)    /* -> seg_buf[2] */

    pushl %es                       /* STOS always writes ES:EDI: give ES a base too */
    pushl $ALT_DS
    popl %es
    movl $0x10C, %edi
    movl $0x12345678, %eax
    stosl                           /* -> seg_buf[3] */
    movl %edi, %ecx                 /* 0x110 */
    popl %es
    movl 20(%esp), %edi             /* out again */
    movl %ecx, 20(%edi)

    pushl %ds                       /* back to flat FS and GS */
    popl %fs
    movw %ds, %ax
    movw %ax, %gs
    movl %fs, %eax
    movl %eax, 24(%edi)             /* 0x10 */

    pushl %ss                       /* POP SS (reloads the stack segment) */
    popl %ss
    movl %ss, %eax
    movl %eax, 28(%edi)             /* 0x10 */
    pushl %cs
    popl %eax
    andl $0xFFFF, %eax
    movl %eax, 32(%edi)             /* 0x08 */
    epilogue 9

    .data
    .balign 4
far_ptr:    .long 0, 0
fnptr:      .long ret_eax_7
jump_table: .long jt_0, jt_1, jt_2
sreg_mem:   .long 0
sel_alt_ds: .word ALT_DS

    .section .note.GNU-stack, "", @progbits
