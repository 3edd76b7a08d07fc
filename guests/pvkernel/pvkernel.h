/* What the kernel (pvkernel.c) and its ring-3 tasks (tasks.c) agree on: system calls and
 * the layout of a user address space. */
#ifndef PVKERNEL_H
#define PVKERNEL_H

#include <stdint.h>

/* System calls: INT 0x80, number in EAX, arguments in EBX and ECX, result in EAX. */
#define SYS_EXIT   1            /* EBX: exit code */
#define SYS_YIELD  2
#define SYS_WRITE  3            /* EBX: buffer, ECX: length (up to 64 bytes); kept in the task's log */
#define SYS_SLEEP  4            /* EBX: timer ticks */
#define SYS_WAIT   5            /* until every other task has exited */

/* A user address space: page-directory entry 256 holds the task's pages, 257 is empty
   until a task touches it (demand paging); entry 0 maps the kernel, supervisor-only except
   the pages of user_text and user_rodata (the tasks' code and constants, read-only). */
#define USER_BASE      0x40000000u
#define USER_DATA      USER_BASE                /* one page of 1024 words the kernel filled */
#define PREEMPT_WORD   1022                     /* the kernel counts the tick's preemptions */
#define RESULT_WORD    1023                     /* where `sum` leaves its checksum */
#define USER_STACK_TOP(slot) (USER_BASE + 0x400000u - (slot) * 0x1000u)  /* one page each */
#define DEMAND_BASE    0x40400000u
#define DEMAND_PAGES   3

/* The kernel fills word i of space s's data page with this. */
static inline uint32_t data_word(int space, int i)
{
    uint32_t x = (uint32_t)i * 2654435761u ^ (uint32_t)(space + 1) * 0x9E3779B9u;
    return x ^ (x >> 13);
}

#define SUM_ROUNDS     32       /* sum: passes over the data page, a yield every 8 */
#define PAGER_PASSES   40       /* pager: passes over its demand-mapped pages */

/* the tasks (tasks.c, section user_text) */
void task_sum(void);
void task_pager(void);
void task_sleeper(void);
void user_iret_trampoline(void);    /* pops EAX, returns: see traps.S */

#define USER_SECTION   __attribute__((section("user_text")))
#define USER_CONST     __attribute__((section("user_rodata")))

#endif
