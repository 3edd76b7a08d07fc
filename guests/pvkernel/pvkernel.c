/* pvkernel: one kernel source with paravirt operations, Linux's paravirt_ops in miniature.
 * At boot it looks for pyvmm's hypervisor (CPUID leaf 0x40000000, then the ABI version in
 * leaf 0x40000001) and fills its table of operations (paravirt.h) either with hypercalls
 * (pvops_pyvmm.c, docs/hypercall-abi.md) or with the privileged instructions of a bare
 * machine (pvops_native.c). Then it does the same work either way, every privileged step
 * through the table: its trap handlers and a kernel stack for ring 3; page tables for two
 * user address spaces (page-table pages mapped read-only, every entry written through a
 * batching set_pte); paging; a timer tick; three ring-3 tasks with system calls, preemption,
 * address-space switches, pages mapped on demand, and an idle halt. It prints only what
 * does not depend on the timing, so the output is the same on both paths but for the second
 * line, which says which one it took.
 */
#include "kernel.h"
#include "paravirt.h"
#include "pvkernel.h"

#define USER_CS        0x1B             /* GDT entry 3, RPL 3 */
#define USER_DS        0x23             /* GDT entry 4, RPL 3 */
#define TIMER_VECTOR   0x20
#define SYSCALL_VECTOR 0x80
#define TICK_US        1000
#define NTASKS         3

#define PAGE       4096u
#define PAGE_MASK  0xFFFFF000u
#define PTE_P      0x001u
#define PTE_RW     0x002u
#define PTE_US     0x004u
#define KERNEL_MAP (4u << 20)           /* the kernel's identity map: page-directory entry 0 */

struct pv_ops pv_ops;
uint32_t ptes_written;

/* What the CPU (or the hypervisor) and traps.S leave on the kernel stack for an entry from
   ring 3: the frame, then the task's ESP and SS. */
struct uframe {
    struct frame f;
    uint32_t user_esp, user_ss;
};

/* ---- memory ---------------------------------------------------------------------------- */
/* Every page directory and page table comes from here, and the kernel maps these pages
   read-only (the paravirtual path's rule); the frames of the tasks' pages from there. */
#define NTABLES 8
#define NFRAMES 8
static uint32_t tables[NTABLES][1024] __attribute__((aligned(4096)));
static uint8_t frames[NFRAMES][4096] __attribute__((aligned(4096)));
static int tables_used, frames_used;

extern char __start_user_text[], __stop_user_text[];        /* the linker's, for orphans */
extern char __start_user_rodata[], __stop_user_rodata[];
extern char _end[];

struct space {
    uint32_t *pgdir;
    uint32_t *user_pt;                  /* page-directory entry 256: data page, stacks */
    uint32_t *demand_pt;                /* entry 257, once a task touches it */
    uint32_t *data;                     /* the data page, through the kernel's map */
};

static uint32_t *kernel_pgdir, *kernel_pt;
static struct space spaces[2];
static int loaded_space = -1;

/* ---- tasks ----------------------------------------------------------------------------- */
enum { RUNNABLE, SLEEPING, WAITING, EXITED, KILLED };

struct task {
    struct uframe regs;                 /* saved while it does not run */
    const char *name;
    void (*entry)(void);
    int space, stack_slot;
    int state;
    int exit_code;
    uint32_t wake_tick, slept_from, slept;
    uint32_t syscalls, faults, runs;
    uint32_t demand[DEMAND_PAGES];      /* the pages mapped for it on demand */
    uint32_t fault_address, fault_error;
    char log[65];                       /* what it wrote (SYS_WRITE) */
    uint32_t log_len;
};

static struct task tasks[NTASKS] = {
    { .name = "sum", .entry = task_sum, .space = 0, .stack_slot = 0 },
    { .name = "pager", .entry = task_pager, .space = 1, .stack_slot = 0 },
    { .name = "sleeper", .entry = task_sleeper, .space = 0, .stack_slot = 1 },
};
static int current;

static uint8_t kernel_stack[16384] __attribute__((aligned(16)));

/* Counters. Only those that do not depend on when the ticks come are printed. */
static volatile uint32_t ticks;
static uint32_t idle_halts, tables_added, pages_on_demand, pages_unmapped;

static void shutdown(int code) __attribute__((noreturn));
static void shutdown(int code)
{
    pv_ops.shutdown(code);
    for (;;)
        ;
}

static void panic(const char *why) __attribute__((noreturn));
static void panic(const char *why)
{
    printf("pvkernel: panic: %s\n", why);
    shutdown(2);
}

static uint32_t *alloc_table(void)
{
    if (tables_used == NTABLES)
        panic("out of page-table pages");
    return tables[tables_used++];                   /* zero: .bss, never written directly */
}

static uint32_t alloc_frame(void)
{
    if (frames_used == NFRAMES)
        panic("out of frames");
    uint8_t *frame = frames[frames_used++];
    memset(frame, 0, PAGE);
    return (uint32_t)frame;
}

/* ---- page tables ----------------------------------------------------------------------- */
static int overlaps(uint32_t page, const char *start, const char *stop)
{
    return page < (uint32_t)stop && page + PAGE > (uint32_t)start;
}

/* The kernel's identity map: read/write, but the page tables read-only, and the tasks'
   code and constants read-only for ring 3 too. */
static uint32_t kernel_pte(uint32_t page)
{
    if (page >= (uint32_t)tables && page < (uint32_t)tables + sizeof tables)
        return page | PTE_P;
    if (overlaps(page, __start_user_text, __stop_user_text)
        || overlaps(page, __start_user_rodata, __stop_user_rodata))
        return page | PTE_P | PTE_US;
    return page | PTE_P | PTE_RW;
}

static void map_user_page(struct space *sp, uint32_t va, uint32_t frame)
{
    pv_ops.set_pte(&sp->user_pt[(va >> 12) & 1023], frame | PTE_P | PTE_RW | PTE_US);
}

static void build_page_tables(void)
{
    pv_ops.lazy_mmu_begin();
    kernel_pgdir = alloc_table();
    kernel_pt = alloc_table();
    for (uint32_t i = 1; i < 1024; i++)             /* page 0 stays out: NULL faults */
        pv_ops.set_pte(&kernel_pt[i], kernel_pte(i * PAGE));
    pv_ops.set_pte(&kernel_pgdir[0], (uint32_t)kernel_pt | PTE_P | PTE_RW);

    /* Two user address spaces: the kernel's map (shared, supervisor-only but for the
       user_* pages) and, at USER_BASE, a data page of their own and the tasks' stacks.
       Page-directory entry 1023 stays empty: under pyvmm the hypervisor owns it. */
    for (int s = 0; s < 2; s++) {
        struct space *sp = &spaces[s];
        sp->pgdir = alloc_table();
        sp->user_pt = alloc_table();
        sp->data = (uint32_t *)alloc_frame();
        for (int i = 0; i < 1024; i++)
            sp->data[i] = data_word(s, i);
        sp->data[PREEMPT_WORD] = 0;
        pv_ops.set_pte(&sp->pgdir[0], (uint32_t)kernel_pt | PTE_P | PTE_RW | PTE_US);
        pv_ops.set_pte(&sp->pgdir[USER_BASE >> 22], (uint32_t)sp->user_pt | PTE_P | PTE_RW | PTE_US);
        map_user_page(sp, USER_DATA, (uint32_t)sp->data);
    }
    for (int i = 0; i < NTASKS; i++)
        map_user_page(&spaces[tasks[i].space], USER_STACK_TOP(tasks[i].stack_slot) - PAGE,
                      alloc_frame());
    pv_ops.lazy_mmu_end();
}

/* A page fault from ring 3 in the demand area: a fresh page (and the page table for it,
   the first time), written through set_pte; the task then retries the access. No TLB
   flush: a not-present entry is never cached. */
static void map_on_demand(struct task *t, uint32_t va)
{
    struct space *sp = &spaces[t->space];
    uint32_t frame = alloc_frame();
    pv_ops.lazy_mmu_begin();
    if (!sp->demand_pt) {
        sp->demand_pt = alloc_table();
        pv_ops.set_pte(&sp->pgdir[va >> 22], (uint32_t)sp->demand_pt | PTE_P | PTE_RW | PTE_US);
        tables_added++;
    }
    pv_ops.set_pte(&sp->demand_pt[(va >> 12) & 1023], frame | PTE_P | PTE_RW | PTE_US);
    pv_ops.lazy_mmu_end();
    t->demand[t->faults++] = va;
    pages_on_demand++;
}

/* A task exits: its demand pages go (its address space is the one loaded: present entries
   cleared, so their translations are flushed), in one batch. */
static void unmap_demand(struct task *t)
{
    struct space *sp = &spaces[t->space];
    if (!t->faults)
        return;
    pv_ops.lazy_mmu_begin();
    for (uint32_t i = 0; i < t->faults; i++)
        pv_ops.set_pte(&sp->demand_pt[(t->demand[i] >> 12) & 1023], 0);
    for (uint32_t i = 0; i < t->faults; i++) {
        pv_ops.flush_tlb_one(t->demand[i]);
        pages_unmapped++;
    }
    pv_ops.lazy_mmu_end();
}

/* ---- scheduling (always with interrupts off) ------------------------------------------- */
static void finish(void) __attribute__((noreturn));

static int alive(void)
{
    int n = 0;
    for (int i = 0; i < NTASKS; i++)
        n += tasks[i].state < EXITED;
    return n;
}

/* Resume task `next` from the frame on the kernel stack: its address space, its registers. */
static void run(int next, struct uframe *u)
{
    struct task *t = &tasks[next];
    if (t->space != loaded_space) {
        pv_ops.load_cr3((uint32_t)spaces[t->space].pgdir);
        loaded_space = t->space;
    }
    current = next;
    t->runs++;
    *u = t->regs;
    u->f.eflags |= EFLAGS_IF;               /* tasks run with interrupts (events) on */
}

/* Give the CPU to the next runnable task after the current one; with none, idle until a
   tick wakes one (the halt operation), or finish when none is left. */
static void schedule(struct uframe *u, int save)
{
    if (save)
        tasks[current].regs = *u;
    for (;;) {
        for (int i = 1; i <= NTASKS; i++) {
            int next = (current + i) % NTASKS;
            if (tasks[next].state == RUNNABLE) {
                run(next, u);
                return;
            }
        }
        if (!alive())
            finish();
        idle_halts++;
        pv_ops.safe_halt();                 /* a tick comes, its handler runs, back here */
        pv_ops.irq_disable();
    }
}

static void task_exit(struct task *t, int code)
{
    t->state = EXITED;
    t->exit_code = code;
    unmap_demand(t);
    if (alive() == 1)                       /* the last one may be waiting for the others */
        for (int i = 0; i < NTASKS; i++)
            if (tasks[i].state == WAITING)
                tasks[i].state = RUNNABLE;
}

/* ---- traps ----------------------------------------------------------------------------- */
static void timer_tick(struct uframe *u)    /* events off */
{
    ticks++;
    for (int i = 0; i < NTASKS; i++) {
        struct task *t = &tasks[i];
        if (t->state == SLEEPING && (int32_t)(ticks - t->wake_tick) >= 0) {
            t->state = RUNNABLE;
            t->slept = ticks - t->slept_from;
        }
    }
    pv_ops.timer_ack();
    if ((u->f.cs & 3) == 3) {               /* preempt a task; the kernel is not preempted */
        spaces[tasks[current].space].data[PREEMPT_WORD]++;
        schedule(u, 1);
    }
}

static int user_readable(uint32_t start, uint32_t n)
{
    uint32_t end = start + n;
    if (end < start)
        return 0;
    if (start >= (uint32_t)__start_user_rodata && end <= (uint32_t)__stop_user_rodata)
        return 1;
    return start >= USER_BASE && end <= DEMAND_BASE + DEMAND_PAGES * PAGE;
}

/* INT 0x80 arrives through a trap gate: interrupts (events) stay on, and the kernel turns
   them off only around what the tick handler also touches. */
static void system_call(struct uframe *u)
{
    struct task *t = &tasks[current];
    struct frame *f = &u->f;
    t->syscalls++;
    if (f->eax == SYS_WRITE) {
        uint32_t n = f->ecx;
        if (!user_readable(f->ebx, n) || n > sizeof t->log - 1 - t->log_len) {
            f->eax = (uint32_t)-1;
            return;
        }
        memcpy(t->log + t->log_len, (const char *)f->ebx, n);   /* from the task's space */
        t->log_len += n;
        f->eax = n;
    } else if (f->eax == SYS_YIELD) {
        f->eax = 0;
        pv_ops.irq_disable();
        schedule(u, 1);
        pv_ops.irq_enable();
    } else if (f->eax == SYS_SLEEP) {
        uint32_t flags = pv_ops.save_fl();
        pv_ops.irq_disable();
        t->slept_from = ticks;
        t->wake_tick = ticks + f->ebx;
        t->state = SLEEPING;
        f->eax = 0;
        schedule(u, 1);
        pv_ops.restore_fl(flags);
    } else if (f->eax == SYS_WAIT) {
        f->eax = 0;
        pv_ops.irq_disable();
        if (alive() > 1)
            t->state = WAITING;
        schedule(u, 1);
        pv_ops.irq_enable();
    } else if (f->eax == SYS_EXIT) {
        pv_ops.irq_disable();
        task_exit(t, (int)f->ebx);
        schedule(u, 0);
        pv_ops.irq_enable();
    } else {
        f->eax = (uint32_t)-1;
    }
}

static void page_fault(struct uframe *u)    /* events off: CR2 is still this fault's */
{
    uint32_t address = pv_ops.read_cr2();
    struct task *t = &tasks[current];
    if ((u->f.cs & 3) != 3) {
        printf("pvkernel: kernel page fault at %08x, address %08x, error %x\n", u->f.eip,
               address, u->f.error_code);
        shutdown(2);
    }
    if (!(u->f.error_code & 1) && address >= DEMAND_BASE
        && address < DEMAND_BASE + DEMAND_PAGES * PAGE && t->faults < DEMAND_PAGES) {
        map_on_demand(t, address & PAGE_MASK);
        return;
    }
    t->fault_address = address;
    t->fault_error = u->f.error_code;
    task_exit(t, -1);
    t->state = KILLED;
    schedule(u, 0);
}

/* Called by traps.S for every vector; returns with interrupts (events) off, as the iret
   operation wants them. */
void trap_dispatch(struct frame *f);
void trap_dispatch(struct frame *f)
{
    struct uframe *u = (struct uframe *)f;
    if (f->vector == 14)
        page_fault(u);
    else if (f->vector == TIMER_VECTOR)
        timer_tick(u);
    else if (f->vector == SYSCALL_VECTOR)
        system_call(u);
    else {
        printf("pvkernel: unexpected %s (vector %u, error %x) at %04x:%08x\n",
               exception_name((int)f->vector), f->vector, f->error_code, f->cs & 0xFFFF, f->eip);
        shutdown(3);
    }
    pv_ops.irq_disable();
}

/* The handlers in the ABI's trap-table format: exceptions and the tick with events off
   (interrupt gates), the system call reachable from ring 3 with events left on (a trap
   gate). */
extern const uint32_t trap_entries[][2];    /* traps.S: { vector, stub } */
extern const uint32_t trap_entry_count;
static trap_info_t trap_table[32];

static int build_trap_table(void)
{
    uint32_t n = trap_entry_count;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t vector = trap_entries[i][0];
        trap_table[i].vector = (uint8_t)vector;
        trap_table[i].flags = vector == SYSCALL_VECTOR ? PYVMM_TRAP_DPL(3) : PYVMM_TRAP_EVENTS_OFF;
        trap_table[i].cs = KERNEL_CS;
        trap_table[i].address = trap_entries[i][1];
    }
    trap_table[n].address = 0;
    return (int)n;
}

/* ---- the end: results that do not depend on the timing --------------------------------- */
static uint32_t expected_sum(void)          /* what sum computes, computed here */
{
    uint32_t h = 2166136261u;
    for (uint32_t round = 0; round < SUM_ROUNDS; round++)
        for (int i = 0; i < PREEMPT_WORD; i++)
            h = (h ^ data_word(0, i)) * 16777619u + round;
    return h & 0x7FFFFFFF;
}

static uint32_t expected_pager(void)
{
    uint32_t seed = data_word(1, 0), h = 0;
    for (uint32_t pass = 0; pass < PAGER_PASSES; pass++)
        for (uint32_t i = 0; i < DEMAND_PAGES * 1024; i++)
            h = h * 31 + (seed ^ (i * 2654435761u)) + pass;
    return h & 0x7FFFFFFF;
}

static void finish(void)
{
    struct task *sum = &tasks[0], *pager = &tasks[1], *sleeper = &tasks[2];
    printf("all tasks have exited\n");
    for (int i = 0; i < NTASKS; i++) {
        struct task *t = &tasks[i];
        t->log[t->log_len] = '\0';
        printf("task %d %s (space %c) wrote: %s\n", i, t->name, 'A' + t->space, t->log);
        if (t->state == EXITED)
            printf("task %d %s: exit code %08x, %u system calls, %u pages mapped on demand\n",
                   i, t->name, (uint32_t)t->exit_code, t->syscalls, t->faults);
        else
            printf("task %d %s: killed by a page fault at %08x, error %x\n", i, t->name,
                   t->fault_address, t->fault_error);
    }
    printf("page tables: %u entries written through set_pte; on demand %u page table and "
           "%u pages, %u pages unmapped\n", ptes_written, tables_added, pages_on_demand,
           pages_unmapped);

    int exited = 1;
    for (int i = 0; i < NTASKS; i++)
        exited &= tasks[i].state == EXITED && tasks[i].runs > 0;
    verdict("every task ran and exited", exited);
    verdict("sum: its checksum of space A's data page", (uint32_t)sum->exit_code == expected_sum());
    verdict("pager: its checksum of the pages mapped on demand",
            (uint32_t)pager->exit_code == expected_pager());
    verdict("sleeper: read sum's result in their space A", sleeper->exit_code == sum->exit_code);
    verdict("space A's data page holds sum's result",
            (spaces[0].data[RESULT_WORD] & 0x7FFFFFFF) == (uint32_t)sum->exit_code);
    verdict("space B's page at that address kept its own",
            spaces[1].data[RESULT_WORD] == data_word(1, RESULT_WORD));
    int unmapped = pages_unmapped == DEMAND_PAGES;
    for (uint32_t i = 0; i < pager->faults; i++)
        unmapped &= spaces[1].demand_pt[(pager->demand[i] >> 12) & 1023] == 0;
    verdict("pager: 3 page faults, 3 pages and a page table",
            pager->faults == DEMAND_PAGES && pages_on_demand == DEMAND_PAGES && tables_added == 1);
    verdict("pager: its pages unmapped when it exited", unmapped);
    verdict("system calls: sum 6, pager 2, sleeper 4",
            sum->syscalls == 6 && pager->syscalls == 2 && sleeper->syscalls == 4);
    verdict("pager: spun in ring 3 until the tick preempted it",
            spaces[1].data[PREEMPT_WORD] > 0);
    verdict("sleeper slept 2 ticks, the kernel halted meanwhile",
            sleeper->slept >= 2 && idle_halts > 0);
    printf("pvkernel: %d checks, %d failed\n", verdicts, verdicts_failed);
    shutdown(verdicts_failed ? 1 : 0);
}

/* ---- boot ------------------------------------------------------------------------------ */
int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    (void)info;

    /* Which operations: pyvmm's hypercalls if it offers them, else the native ones. */
    uint32_t abi = pyvmm_abi_version();
    pv_ops = abi >= 1 ? pyvmm_ops : native_ops;
    console_write = pv_ops.console_write;           /* printf's output, verdict()'s too */
    if (abi >= 1)
        pyvmm_ops_init();
    else
        serial_init();
    printf("pvkernel: one kernel, its privileged operations chosen at boot\n");
    if (abi >= 1)
        printf("pvkernel: paravirtual (PyVMM ABI %u)\n", abi);
    else
        printf("pvkernel: native (no PyVMM hypercalls)\n");
    if ((uint32_t)_end > KERNEL_MAP)
        panic("the kernel is larger than its map");

    /* Segments: the flat kernel ones and the ring-3 ones (before the LGDT, so that a
       hypervisor that shadows the GDT at LGDT sees them). */
    gdt_set_entry(3, 0, 0xFFFFF, 0xFA, GDT_FLAT);   /* 0x1B: ring-3 code */
    gdt_set_entry(4, 0, 0xFFFFF, 0xF2, GDT_FLAT);   /* 0x23: ring-3 data */
    gdt_install();

    int handlers = build_trap_table();
    pv_ops.load_trap_table(trap_table);
    printf("traps: %d handlers, system calls through int 0x80 from ring 3\n", handlers);
    pv_ops.set_kernel_stack(KERNEL_DS, (uint32_t)kernel_stack + sizeof kernel_stack);
    printf("kernel stack for entries from ring 3: %u KiB\n", (uint32_t)sizeof kernel_stack / 1024);

    build_page_tables();
    printf("page tables: the kernel's map and 2 user address spaces, %u entries through "
           "set_pte, %d page-table pages mapped read-only\n", ptes_written, tables_used);
    pv_ops.load_cr3((uint32_t)kernel_pgdir);
    printf("paging on, in the kernel's address space\n");

    for (int i = 0; i < NTASKS; i++) {
        struct uframe *r = &tasks[i].regs;
        r->f.eip = (uint32_t)tasks[i].entry;
        r->f.cs = USER_CS;
        r->f.eflags = EFLAGS_IF | 0x2;
        r->f.ds = r->f.es = r->f.fs = r->f.gs = USER_DS;
        r->user_esp = USER_STACK_TOP(tasks[i].stack_slot);
        r->user_ss = USER_DS;
    }
    pv_ops.timer_start(TICK_US, TIMER_VECTOR);
    printf("timer: a tick every %u us at vector 0x%x\n", TICK_US, TIMER_VECTOR);
    printf("tasks: sum and sleeper in address space A, pager in B, in ring 3\n");

    /* Into task 0 as if it had been interrupted: its frame at the top of the kernel stack,
       then the way back from every trap. */
    pv_ops.irq_disable();
    struct uframe *first = (struct uframe *)(kernel_stack + sizeof kernel_stack) - 1;
    run(0, first);
    enter_frame(first);
}
