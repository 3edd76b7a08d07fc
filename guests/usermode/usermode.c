/* Usermode: a tiny preemptive multitasking kernel. Three ring-3 tasks share the CPU; the
 * PIT preempts them, INT 0x80 is their system call, and the TSS gives the CPU the kernel
 * stack for every entry from ring 3. One task reads kernel memory and is killed for it.
 * Output comes only from the kernel, in a fixed order, so it is the same whatever the
 * timing of the preemptions.
 */
#include "kernel.h"

#define USER_CS 0x1B                    /* GDT entry 3, RPL 3 */
#define USER_DS 0x23                    /* GDT entry 4, RPL 3 */
#define TSS_SEL 0x28                    /* GDT entry 5 */
#define SYS_EXIT 1
#define SYS_YIELD 2
#define NTASKS 3

/* What the CPU and isr.S leave on the kernel stack for an entry from ring 3. */
struct uframe {
    struct frame f;
    uint32_t user_esp, user_ss;
};

struct task {
    struct uframe regs;                 /* saved while the task does not run */
    int state;                          /* 0 runnable, 1 exited, 2 killed */
    int exit_code;
    uint32_t fault_address, fault_error;
    uint32_t runs;                      /* how often it was given the CPU */
};

static struct tss tss;
static uint8_t kernel_stack[8192] __attribute__((aligned(16)));
static uint8_t user_stacks[NTASKS][4096] __attribute__((aligned(16)));
static struct task tasks[NTASKS];
static int current;
static uint32_t switches;

/* Page tables: everything user-accessible except the page holding kernel_secret. */
static uint32_t page_dir[1024] __attribute__((aligned(4096)));
static uint32_t page_table[1024] __attribute__((aligned(4096)));
static volatile uint32_t kernel_secret[1024] __attribute__((aligned(4096))) = { 0x5EC12E7 };

/* ---- the tasks (ring 3) ------------------------------------------------------------ */
static inline int syscall1(int number, int arg)
{
    int ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(number), "b"(arg) : "memory");
    return ret;
}

static void task_sum(void)                  /* 1 + 2 + ... + 3000, yielding now and then */
{
    uint32_t sum = 0;
    for (uint32_t i = 1; i <= 3000; i++) {
        sum += i;
        if (i % 1000 == 0)
            syscall1(SYS_YIELD, 0);
    }
    syscall1(SYS_EXIT, (int)(sum & 0x7FFFFFFF));
}

static void task_collatz(void)              /* the longest Collatz chain below 3000 */
{
    uint32_t best = 0, best_n = 0;
    for (uint32_t n = 1; n < 3000; n++) {
        uint32_t x = n, steps = 0;
        while (x != 1) {
            x = (x & 1) ? 3 * x + 1 : x / 2;
            steps++;
        }
        if (steps > best) {
            best = steps;
            best_n = n;
        }
    }
    syscall1(SYS_EXIT, (int)(best_n * 1000 + best));
}

static void task_snoop(void)                /* reads kernel memory: must not survive */
{
    volatile uint32_t stolen = kernel_secret[0];
    syscall1(SYS_EXIT, (int)stolen);
}

static void (*const task_entry[NTASKS])(void) = { task_sum, task_collatz, task_snoop };

/* ---- the kernel (ring 0) ------------------------------------------------------------- */
static void finish(void)
{
    static const char *names[NTASKS] = { "sum", "collatz", "snoop" };
    for (int i = 0; i < NTASKS; i++) {
        if (tasks[i].state == 1)
            printf("task %d (%s): exited with %d\n", i, names[i], tasks[i].exit_code);
        else
            printf("task %d (%s): killed: page fault at %08x, error code %x\n", i, names[i],
                   tasks[i].fault_address, tasks[i].fault_error);
    }
    int ran = 1;
    for (int i = 0; i < NTASKS; i++)
        ran &= tasks[i].runs > 0;
    printf("every task ran: %s; context switches: %s\n", ran ? "yes" : "no",
           switches >= NTASKS ? "several" : "too few");
    printf("kernel secret intact: %s\n", kernel_secret[0] == 0x5EC12E7 ? "yes" : "no");
    int ok = tasks[0].exit_code == 4501500 && tasks[1].state == 1 && tasks[2].state == 2
             && tasks[2].fault_error == 5 && ran;
    printf("usermode: %s\n", ok ? "all as expected" : "UNEXPECTED");
    exit(ok ? 0 : 1);
}

/* Give the CPU to the next runnable task: its saved registers replace the frame on the
 * kernel stack, and the handler's IRET resumes it. */
static void schedule(struct uframe *frame, int save)
{
    if (save)
        tasks[current].regs = *frame;
    for (int i = 1; i <= NTASKS; i++) {
        int next = (current + i) % NTASKS;
        if (tasks[next].state == 0) {
            if (next != current)
                switches++;
            current = next;
            tasks[current].runs++;
            *frame = tasks[current].regs;
            return;
        }
    }
    finish();                               /* nothing left to run */
}

static void timer(struct frame *f)
{
    outb(0x20, 0x20);                       /* EOI */
    if ((f->cs & 3) == 3)                   /* preempt a task; the kernel is never preempted */
        schedule((struct uframe *)f, 1);
}

static void system_call(struct frame *f)
{
    struct uframe *frame = (struct uframe *)f;
    if (f->eax == SYS_EXIT) {
        tasks[current].state = 1;
        tasks[current].exit_code = (int)f->ebx;
        schedule(frame, 0);
    } else if (f->eax == SYS_YIELD) {
        f->eax = 0;
        schedule(frame, 1);
    } else {
        f->eax = (uint32_t)-1;
    }
}

static void page_fault(struct frame *f)
{
    uint32_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    if ((f->cs & 3) != 3) {
        printf("kernel page fault at eip=%08x cr2=%08x\n", f->eip, cr2);
        exit(2);
    }
    tasks[current].state = 2;
    tasks[current].fault_address = cr2;
    tasks[current].fault_error = f->error_code;
    schedule((struct uframe *)f, 0);
}

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    serial_init();
    gdt_install();
    gdt_set_entry(3, 0, 0xFFFFF, 0xFA, GDT_FLAT);       /* ring-3 code */
    gdt_set_entry(4, 0, 0xFFFFF, 0xF2, GDT_FLAT);       /* ring-3 data */
    tss_install(TSS_SEL / 8, &tss, (uint32_t)kernel_stack + sizeof kernel_stack);

    idt_install();
    set_handler(0x20, timer);
    set_handler(0x80, system_call);
    set_handler(14, page_fault);
    idt_set_gate(0x80, idt_stub_address(0x80), KERNEL_CS, 0xEE);    /* DPL 3: callable */

    /* identity map 0-4 MiB, user-accessible except kernel_secret's page */
    for (uint32_t i = 0; i < 1024; i++)
        page_table[i] = (i << 12) | 0x7;
    page_table[(uint32_t)kernel_secret >> 12] &= ~0x4u;
    page_dir[0] = (uint32_t)page_table | 0x7;
    __asm__ volatile("mov %0, %%cr3" :: "r"(page_dir));
    uint32_t cr0;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" :: "r"(cr0 | 0x80000000u));

    /* PICs at 0x20/0x28, only IRQ 0; PIT at ~1 kHz */
    outb(0x20, 0x11); outb(0xA0, 0x11);
    outb(0x21, 0x20); outb(0xA1, 0x28);
    outb(0x21, 0x04); outb(0xA1, 0x02);
    outb(0x21, 0x01); outb(0xA1, 0x01);
    outb(0x21, 0xFE); outb(0xA1, 0xFF);
    outb(0x43, 0x34); outb(0x40, 1193 & 0xFF); outb(0x40, 1193 >> 8);

    for (int i = 0; i < NTASKS; i++) {
        struct uframe *r = &tasks[i].regs;
        r->f.eip = (uint32_t)task_entry[i];
        r->f.cs = USER_CS;
        r->f.eflags = 0x202;                            /* IF: preemptible */
        r->f.ds = r->f.es = r->f.fs = r->f.gs = USER_DS;
        r->user_esp = (uint32_t)user_stacks[i] + sizeof user_stacks[i];
        r->user_ss = USER_DS;
    }
    printf("usermode: %d ring-3 tasks, INT 0x80 system calls, PIT preemption\n", NTASKS);

    /* Enter task 0 in ring 3: an IRET with the frame a ring-3 interrupt would have left. */
    current = 0;
    tasks[0].runs = 1;
    struct uframe *r = &tasks[0].regs;
    __asm__ volatile(
        "mov %0, %%ds\n\t"
        "mov %0, %%es\n\t"
        "mov %0, %%fs\n\t"
        "mov %0, %%gs\n\t"
        "pushl %1\n\t"
        "pushl %2\n\t"
        "pushl %3\n\t"
        "pushl %4\n\t"
        "pushl %5\n\t"
        "iret"
        :: "r"(USER_DS), "r"(r->user_ss), "r"(r->user_esp), "r"(r->f.eflags),
           "r"(r->f.cs), "r"(r->f.eip));
    return 1;                                           /* not reached */
}
