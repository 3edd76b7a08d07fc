/* What nanobench.c and ops.S share: the benchmark marker protocol, the operations' ids,
   and the selectors (C and assembly both include this file). */
#ifndef NANOBENCH_H
#define NANOBENCH_H

/* The benchmark marker: a 32-bit OUT of (op << 24) | iterations before an operation's
   loop and of 0 after it (guests/README.md). QEMU has nothing at this port. */
#define MARKER_PORT 0x504

#define OP_SYSCALL  1
#define OP_IN       2
#define OP_CLI_STI  3
#define OP_CALL_RET 4
#define OP_PGFAULT  5
#define OP_DIVZERO  6
#define OP_PTEMOD   7

#define USER_CS 0x1B                    /* GDT entry 3, RPL 3 */
#define USER_DS 0x23                    /* GDT entry 4, RPL 3 */
#define TSS_SEL 0x28                    /* GDT entry 5 */
#define KERNEL_DATA 0x10                /* = KERNEL_DS of gdt.h (not included by ops.S) */

#define SYSCALL_VECTOR 0x80             /* the measured system call */
#define RETURN_VECTOR  0x81             /* the ring-3 loop's way back to the kernel */

#define COM1_LSR 0x3FD

#ifndef __ASSEMBLER__
#include <stdint.h>

/* ops.S: each runs its loop `n` times (1 <= n < 2^24) between the two markers. */
uint32_t op_syscall(uint32_t n);                /* -> calls the INT 0x80 handler counted */
uint32_t op_in(uint32_t n);                     /* -> the AND of every LSR value read */
uint32_t op_cli_sti(uint32_t n);                /* -> EFLAGS after the last STI */
uint32_t op_call_ret(uint32_t n);               /* -> how often the callee ran */
uint32_t op_pgfault(uint32_t n, uint32_t address);  /* -> EAX after the loop: untouched */
uint32_t op_divzero(uint32_t n);                /* -> EAX after the loop: untouched */
uint32_t op_ptemod(uint32_t n, uint32_t *pte, uint32_t linear, uint32_t pte_a, uint32_t pte_b);
                                                /* -> iterations left: 0 = every read right */

/* The handlers ops.S installs for the duration of an operation, and what they count. */
void op_syscall_handler(void), op_syscall_return(void);
void op_pgfault_handler(void), op_divzero_handler(void);
extern volatile uint32_t op_syscalls, op_pgfaults, op_pgfault_error, op_divide_errors;
#endif

#define UNTOUCHED 0x600DF00D            /* EAX before a load or DIV that never completes */

#endif
