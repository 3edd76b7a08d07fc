/* The ring-3 tasks. They run in place, in the kernel image, from the pages of the sections
 * user_text (their code) and user_rodata (their constants), which the kernel maps
 * user-readable; everything else they touch is in their own address space (USER_DATA, the
 * stack, the demand-paged pages). So: no string literals, no switch (a jump table would be
 * in .rodata), no library calls. Their output goes through SYS_WRITE into a log the kernel
 * prints at the end, so it comes out in the same order whatever the preemptions.
 */
#include "pvkernel.h"

/* user_text starts on a page of its own, with the trampoline through which the paravirtual
   iret returns to ring 3 (traps.S): it pops the task's EAX and returns to its EIP. */
__asm__(".pushsection user_text, \"ax\"\n"
        ".p2align 12\n"
        ".global user_iret_trampoline\n"
        "user_iret_trampoline:\n"
        "    popl %eax\n"
        "    ret\n"
        ".popsection");

static inline USER_SECTION int syscall2(int number, uint32_t a, uint32_t b)
{
    int ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(number), "b"(a), "c"(b) : "memory");
    return ret;
}

static const char sum_says[] USER_CONST = "adding up space A's data page";
static const char pager_says[] USER_CONST = "spinning until preempted, then touching 3 pages";
static const char sleeper_says[] USER_CONST = "waiting for the others, then sleeping";

/* sum (space A): a hash of the data page (up to PREEMPT_WORD), SUM_ROUNDS times, yielding every 8 rounds; the
   result stays in the page for the sleeper, which shares the address space. */
USER_SECTION void task_sum(void)
{
    volatile uint32_t *data = (volatile uint32_t *)USER_DATA;
    syscall2(SYS_WRITE, (uint32_t)sum_says, sizeof sum_says - 1);
    uint32_t h = 2166136261u;
    for (uint32_t round = 0; round < SUM_ROUNDS; round++) {
        for (int i = 0; i < PREEMPT_WORD; i++)
            h = (h ^ data[i]) * 16777619u + round;
        if (round % 8 == 7)
            syscall2(SYS_YIELD, 0, 0);
    }
    data[RESULT_WORD] = h;
    syscall2(SYS_EXIT, h & 0x7FFFFFFF, 0);
}

/* pager (space B): spins until the tick has preempted it (no system call: only the timer
   can take the CPU from it, and the kernel counts that in the data page), then fills
   DEMAND_PAGES pages at DEMAND_BASE, where nothing is mapped (each first write is a page
   fault the kernel answers with a fresh page), and hashes them. */
USER_SECTION void task_pager(void)
{
    volatile uint32_t *data = (volatile uint32_t *)USER_DATA;
    volatile uint32_t *pages = (volatile uint32_t *)DEMAND_BASE;
    syscall2(SYS_WRITE, (uint32_t)pager_says, sizeof pager_says - 1);
    while (data[PREEMPT_WORD] == 0)
        ;
    uint32_t seed = data[0];
    for (uint32_t i = 0; i < DEMAND_PAGES * 1024; i++)
        pages[i] = seed ^ (i * 2654435761u);
    uint32_t h = 0;
    for (uint32_t pass = 0; pass < PAGER_PASSES; pass++)
        for (uint32_t i = 0; i < DEMAND_PAGES * 1024; i++)
            h = h * 31 + pages[i] + pass;
    syscall2(SYS_EXIT, h & 0x7FFFFFFF, 0);
}

/* sleeper (space A): once it is the last task, reads what sum left in their shared data
   page and sleeps two ticks, with nothing else to run. */
USER_SECTION void task_sleeper(void)
{
    volatile uint32_t *data = (volatile uint32_t *)USER_DATA;
    syscall2(SYS_WRITE, (uint32_t)sleeper_says, sizeof sleeper_says - 1);
    syscall2(SYS_WAIT, 0, 0);
    uint32_t seen = data[RESULT_WORD];
    syscall2(SYS_SLEEP, 2, 0);
    syscall2(SYS_EXIT, seen & 0x7FFFFFFF, 0);
}
