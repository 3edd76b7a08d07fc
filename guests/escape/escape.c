/* escape: a guest that tries to get out of its virtual machine, one way after another, and
 * reports on one line what became of each attempt:
 *
 *     attempt: <what it tried> -> <what happened>
 *
 * It runs at ring 0 with paging on (0-8 MiB identity-mapped) and maps the top 4 MiB of the
 * linear space - where pyvmm's VMMs keep their own memory (shadow GDT and IDT, shadow or
 * nested page tables, bt's translation cache) - onto one page of its own, frame_a. On a
 * bare machine every access there is an ordinary access to frame_a; a VMM that truncates
 * the guest's segments below its memory (trap, bt, pv) answers with a #GP instead, and the
 * guest's #GP/#PF/#UD... handlers record the fault and skip the attempt. Either way the
 * guest checks that whatever completed landed in its own memory.
 *
 * By default it runs the attempts every machine survives and ends with a summary line and
 * exit(0). An attempt that by design ends the machine (a triple fault, memory beyond RAM,
 * an endless loop...) runs alone, chosen on the command line: attempt=NAME (attempt=list
 * prints the names). guests/README.md lists what each mode answers.
 */
#include "kernel.h"

#define PTE_P   0x001u
#define PTE_RW  0x002u
#define CR0_PG  0x80000000u

#define VMM_LINEAR   0xFFC00000u        /* the VMMs' 4 MiB at the top of the linear space */
#define SELFMAP_PDE  1000u              /* a page directory entry pointing at the directory */
#define SELFMAP      (SELFMAP_PDE << 22)
#define UNMAPPED     0x40000000u        /* linear: PDE 256 is never present */
#define REMAPPED     0x00500000u        /* linear: an identity page the attempts remap */

static uint32_t pd[1024] __attribute__((aligned(4096)));
static uint32_t pt_low[2][1024] __attribute__((aligned(4096)));   /* identity, 0-8 MiB */
static uint32_t pt_top[1024] __attribute__((aligned(4096)));      /* top 4 MiB -> frame_a */
static uint8_t frame_a[4096] __attribute__((aligned(4096)));
static uint8_t frame_b[4096] __attribute__((aligned(4096)));
static uint8_t frame_c[4096] __attribute__((aligned(4096)));

static uint32_t beyond_ram;            /* the first 4 MiB boundary past the guest's RAM */

/* ---------------------------------------------------------------------------------------
 * Control registers and descriptor tables
 * ------------------------------------------------------------------------------------- */
static inline uint32_t read_cr0(void)
{
    uint32_t v;
    __asm__ volatile("mov %%cr0, %0" : "=r"(v));
    return v;
}

static inline void write_cr0(uint32_t v) { __asm__ volatile("mov %0, %%cr0" : : "r"(v) : "memory"); }
static inline void write_cr3(uint32_t v) { __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory"); }
static inline void invlpg(uint32_t a) { __asm__ volatile("invlpg (%0)" : : "r"(a) : "memory"); }

struct __attribute__((packed)) table_register {
    uint16_t limit;
    uint32_t base;
};

static void lgdt(uint32_t base, uint16_t limit)
{
    struct table_register r = { limit, base };
    __asm__ volatile("lgdt %0" : : "m"(r) : "memory");
}

static void lidt(uint32_t base, uint16_t limit)
{
    struct table_register r = { limit, base };
    __asm__ volatile("lidt %0" : : "m"(r) : "memory");
}

/* Every segment register from the current GDT: CS by a far jump, the rest with 0x10. */
static void reload_segments(void)
{
    __asm__ volatile(
        "ljmp $0x08, $1f\n"
        "1:\n\t"
        "movw $0x10, %%ax\n\t"
        "movw %%ax, %%ds\n\t"
        "movw %%ax, %%es\n\t"
        "movw %%ax, %%fs\n\t"
        "movw %%ax, %%gs\n\t"
        "movw %%ax, %%ss\n\t"
        : : : "eax", "memory");
}

static void sane_tables(void)
{
    lgdt(gdt_base(), GDT_ENTRIES * 8 - 1);
    lidt(idt_base(), 256 * 8 - 1);
}

/* ---------------------------------------------------------------------------------------
 * Paging
 * ------------------------------------------------------------------------------------- */
static void map_pages(void)
{
    for (int t = 0; t < 2; t++)
        for (uint32_t i = 0; i < 1024; i++)
            pt_low[t][i] = (((uint32_t)t << 22) | (i << 12)) | PTE_P | PTE_RW;
    for (uint32_t i = 0; i < 1024; i++) {
        pt_top[i] = (uint32_t)frame_a | PTE_P | PTE_RW;
        pd[i] = 0;
    }
    pd[0] = (uint32_t)pt_low[0] | PTE_P | PTE_RW;
    pd[1] = (uint32_t)pt_low[1] | PTE_P | PTE_RW;
    pd[SELFMAP_PDE] = (uint32_t)pd | PTE_P | PTE_RW;
    pd[1023] = (uint32_t)pt_top | PTE_P | PTE_RW;
}

static void paging_on(void)
{
    map_pages();
    write_cr3((uint32_t)pd);
    write_cr0(read_cr0() | CR0_PG);
}

static void paging_off(void)
{
    write_cr0(read_cr0() & ~CR0_PG);
}

/* Back to the state every attempt starts from: the flat GDT and the IDT, every segment
 * reloaded, the entries attempts change as paging_on made them, the TLB flushed. */
static void restore(void)
{
    sane_tables();
    reload_segments();
    pt_low[1][(REMAPPED >> 12) & 1023] = REMAPPED | PTE_P | PTE_RW;
    pd[256] = 0;
    pd[SELFMAP_PDE] = (uint32_t)pd | PTE_P | PTE_RW;
    pd[1023] = (uint32_t)pt_top | PTE_P | PTE_RW;
    write_cr3((uint32_t)pd);
    if (!(read_cr0() & CR0_PG))
        write_cr0(read_cr0() | CR0_PG);
}

/* ---------------------------------------------------------------------------------------
 * Faults: an attempt runs under try_call; a fault inside it is recorded and the attempt
 * abandoned (the handler resumes at try_recover, which returns 1 from try_call).
 * ------------------------------------------------------------------------------------- */
static volatile int in_try;
static volatile uint32_t fault_vector, fault_error, fault_cr2;
static volatile uint32_t soft_ints;
uint32_t try_esp;

int try_call(void (*fn)(void));
extern char try_recover[];
__asm__(
    ".text\n"
    ".global try_call, try_recover\n"
    "try_call:\n"
    "    pushl %ebp\n"
    "    pushl %ebx\n"
    "    pushl %esi\n"
    "    pushl %edi\n"
    "    movl %esp, try_esp\n"
    "    call *20(%esp)\n"
    "    xorl %eax, %eax\n"
    "1:  popl %edi\n"
    "    popl %esi\n"
    "    popl %ebx\n"
    "    popl %ebp\n"
    "    ret\n"
    "try_recover:\n"
    "    movl try_esp, %esp\n"
    "    movl $1, %eax\n"
    "    jmp 1b\n");

static void on_fault(struct frame *f)
{
    if (!in_try) {
        printf("escape: unexpected fault outside an attempt\n");
        dump_frame(f);
        exit(3);
    }
    fault_vector = f->vector;
    fault_error = f->error_code;
    if (f->vector == 14) {
        uint32_t cr2;
        __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
        fault_cr2 = cr2;
    }
    /* the attempt may have left hostile tables behind: the IRET below needs sane ones */
    sane_tables();
    f->ds = f->es = f->fs = f->gs = KERNEL_DS;
    f->cs = KERNEL_CS;
    f->eip = (uint32_t)try_recover;
    f->eflags &= ~0x100u;               /* no single-step into the recovery */
}

static void on_soft_int(struct frame *f)
{
    (void)f;
    soft_ints++;
}

static int attempts, faulted, completed;

/* Run one attempt: print what it tries, run it, and say how it ended. `check` (may be 0)
 * says whether what completed stayed in the guest's own memory. */
static void attempt(const char *what, void (*fn)(void), const char *(*check)(void))
{
    printf("attempt: %s ->", what);
    attempts++;
    in_try = 1;
    int fault = try_call(fn);
    in_try = 0;
    restore();
    if (fault) {
        faulted++;
        printf(" guest %s (error %04x)", exception_name(fault_vector), fault_error & 0xFFFF);
        if (fault_vector == 14)
            printf(" at %08x", fault_cr2);
        printf("\n");
        return;
    }
    completed++;
    printf(" %s\n", check ? check() : "completed");
}

/* ---------------------------------------------------------------------------------------
 * The VMM's linear range (mapped onto frame_a)
 * ------------------------------------------------------------------------------------- */
static volatile uint32_t target, value;

static uint32_t peek(const void *p) { return *(const volatile uint32_t *)p; }

static void do_write(void) { *(volatile uint32_t *)target = value; }

static const char *landed_in_frame_a(void)
{
    return peek(frame_a + (target & 0xFFF)) == value ? "landed in the guest's own frame"
                                                     : "completed, but NOT in the guest's own frame";
}

static void write_vmm(uint32_t linear, const char *what)
{
    char line[96];
    target = linear;
    value = 0x5E5E0000u | (linear >> 16);
    snprintf(line, sizeof line, "write linear %08x (%s)", linear, what);
    attempt(line, do_write, landed_in_frame_a);
}

static volatile uint32_t got;

static void do_read(void) { got = *(volatile uint32_t *)target; }

static const char *read_frame_a(void)
{
    return got == peek(frame_a + (target & 0xFFF)) ? "read the guest's own frame"
                                                   : "read something NOT in the guest's own frame";
}

static void do_rep_insb(void)
{
    uint32_t to = target, count = 4;
    __asm__ volatile("cld\n\t"
                     "rep insb"
                     : "+D"(to), "+c"(count) : "d"(0x2F8) : "memory");
}

static void do_exec(void)
{
    uint32_t (*fn)(void) = (uint32_t (*)(void))target;
    got = fn();
}

static const char *ran_frame_a(void)
{
    return got == 0x0BADF00Du ? "ran the guest's own code" : "returned something unexpected";
}

/* ---------------------------------------------------------------------------------------
 * Segments and descriptor tables
 * ------------------------------------------------------------------------------------- */
static volatile uint16_t selector;

static void do_fs_write(void)
{
    __asm__ volatile("movw %0, %%fs\n\t"
                     "movl %2, %%fs:(%1)"
                     : : "r"(selector), "r"(target), "r"(value) : "memory");
}

static void do_load_fs(void) { __asm__ volatile("movw %0, %%fs" : : "r"(selector) : "memory"); }

static void do_load_fs_from_no_ldt(void)
{
    __asm__ volatile("lldt %w0" : : "r"(0) : "memory");
    do_load_fs();
}

static const char *landed_in_frame_b(void)
{
    return peek(frame_b) == value ? "landed in the guest's own frame"
                                  : "completed, but NOT in the guest's own frame";
}

static void do_gdt_in_vmm(void)
{
    memcpy(frame_a, (const void *)gdt_base(), 3 * 8);
    lgdt(VMM_LINEAR, 3 * 8 - 1);
    reload_segments();
    got = peek(&value);
}

static const char *reloaded(void) { return "segments reloaded from the guest's own frame"; }

static void do_short_gdt(void)
{
    lgdt(gdt_base(), 3 * 8 - 1);
    do_load_fs();
}

static void do_idt_in_vmm_int(void)
{
    memcpy(frame_a + 0x800, (const void *)idt_base(), 0x800);
    lidt(VMM_LINEAR + 0x800, 0x7FF);
    soft_ints = 0;
    __asm__ volatile("int $0x40" : : : "memory");
    got = soft_ints;
}

static const char *delivered(void)
{
    return got == 1 ? "delivered through the guest's own frame" : "NOT delivered";
}

static void do_idt_in_vmm_fault(void)
{
    memcpy(frame_a + 0x800, (const void *)idt_base(), 0x800);
    lidt(VMM_LINEAR + 0x800, 0x7FF);
    selector = 0x1230;
    do_load_fs();
}

static void do_short_idt(void)
{
    lidt(idt_base(), 16 * 8 - 1);
    __asm__ volatile("int $0x30" : : : "memory");
}

static void do_int_not_present(void)
{
    __asm__ volatile("int $0x81" : : : "memory");
}

/* ---------------------------------------------------------------------------------------
 * Page tables pointing at themselves
 * ------------------------------------------------------------------------------------- */
static void do_read_own_directory(void)
{
    got = peek((const void *)(SELFMAP + (SELFMAP_PDE << 12)));
}

static const char *saw_own_directory(void)
{
    return got == pd[0] ? "read its own directory" : "read something else";
}

static void do_remap_through_selfmap(void)
{
    /* the PTE of REMAPPED, in pt_low[1], reached through the self-map: point it at frame_b */
    volatile uint32_t *pte = (volatile uint32_t *)(SELFMAP + (1u << 12) + ((REMAPPED >> 12) & 1023) * 4);
    *pte = (uint32_t)frame_b | PTE_P | PTE_RW;
    invlpg(REMAPPED);
    got = peek((const void *)REMAPPED);
}

static const char *saw_frame_b(void)
{
    return got == peek(frame_b) ? "the new mapping is in effect (guest-own memory)" : "stale mapping";
}

static void do_top_recursive(void)
{
    pd[1023] = (uint32_t)pd | PTE_P | PTE_RW;
    write_cr3((uint32_t)pd);
    got = peek((const void *)0xFFFFF000u);
}

/* ---------------------------------------------------------------------------------------
 * Ports
 * ------------------------------------------------------------------------------------- */
static volatile uint16_t port;

static void do_port(void)
{
    outb(port, 0xA5);
    outw(port, 0xA5A5);
    outl(port, 0xA5A5A5A5u);
    got = inl(port);
}

static const char *port_value(void)
{
    static char text[48];
    snprintf(text, sizeof text, "nothing there (reads %08x)", got);
    return text;
}

/* ---------------------------------------------------------------------------------------
 * Hypercalls (pyvmm's paravirtual ABI, docs/hypercall-abi.md): wild pointers and lengths
 * ------------------------------------------------------------------------------------- */
static volatile uint32_t hc[6];        /* number, EBX, ECX, EDX, ESI, EDI */
static uint32_t calls[16][7];          /* a multicall list: op, args[5], result */
static uint32_t requests[4][2];        /* mmu_update requests */

static void do_hypercall(void)
{
    uint32_t r;
    __asm__ volatile("vmcall"
                     : "=a"(r)
                     : "a"(hc[0]), "b"(hc[1]), "c"(hc[2]), "d"(hc[3]), "S"(hc[4]), "D"(hc[5])
                     : "memory");
    got = r;
}

static const char *hypercall_result(void)
{
    static char text[64];
    int32_t r = (int32_t)got;
    const char *name = r == -1 ? " EPERM" : r == -14 ? " EFAULT" : r == -22 ? " EINVAL" :
                       r == -38 ? " ENOSYS" : "";
    snprintf(text, sizeof text, "refused: %d%s", r, name);
    if (r >= 0)
        snprintf(text, sizeof text, "returned %d", r);
    return text;
}

static const char *multicall_result(void)
{
    static char text[64];
    snprintf(text, sizeof text, "returned %d, the nested call %d", (int32_t)got, (int32_t)calls[0][6]);
    return text;
}

static void hypercall(const char *what, uint32_t nr, uint32_t b, uint32_t c, uint32_t d)
{
    hc[0] = nr, hc[1] = b, hc[2] = c, hc[3] = d, hc[4] = 0, hc[5] = 0;
    attempt(what, do_hypercall, hypercall_result);
}

/* ---------------------------------------------------------------------------------------
 * The attempts every machine survives
 * ------------------------------------------------------------------------------------- */
static void survivable(void)
{
    /* the VMMs' own memory, by linear address */
    write_vmm(0xFFC00000u, "the VMM's first page: shadow GDT, nested page directory");
    write_vmm(0xFFC10000u, "trap's shadow IDT");
    write_vmm(0xFFC21000u, "shadow page tables");
    write_vmm(0xFFE00000u, "bt's virtual CPU");
    write_vmm(0xFFE01000u, "bt's translation cache");
    write_vmm(0xFFFFFFFCu, "the last dword of the address space");

    *(volatile uint32_t *)(frame_a + 0x40) = 0x0DDBA11u;
    target = 0xFFC10040u;
    attempt("read linear ffc10040 (the VMM's memory)", do_read, read_frame_a);

    static const uint8_t code[] = { 0xB8, 0x0D, 0xF0, 0xAD, 0x0B, 0xC3 };  /* mov eax, imm; ret */
    memcpy(frame_a + 0x700, code, sizeof code);
    target = 0xFFE01700u;
    attempt("call linear ffe01700 (bt's translation cache)", do_exec, ran_frame_a);

    /* the same range through an instruction the VMM emulates (it traps: IN/OUT) */
    target = 0xFFC00080u;
    value = 0xFFFFFFFFu;                  /* what a port nobody claims reads as */
    memset(frame_a + 0x80, 0, 4);
    attempt("REP INSB from port 02f8 to linear ffc00080 (an access the VMM makes)", do_rep_insb,
            landed_in_frame_a);

    /* a segment whose 4 GiB reach from base 4 MiB covers the VMM's range and wraps to 0 */
    gdt_set_entry(3, 0x00400000u, 0xFFFFF, GDT_DATA, GDT_FLAT);
    selector = 0x18;
    target = 0xFF800000u + 0x10;           /* linear ffc00010 */
    value = 0x5E6A0001u;
    attempt("write FS:ff800010 (base 00400000, 4 GiB limit: linear ffc00010)",
            do_fs_write, landed_in_frame_a);
    target = (uint32_t)frame_b - 0x00400000u;   /* wraps around 4 GiB to frame_b */
    value = 0x5E6A0002u;
    attempt("write FS:(frame_b - 00400000) (wraps around 4 GiB to the guest's frame_b)",
            do_fs_write, landed_in_frame_b);
    gdt_set_entry(3, 0, 0, 0, 0);

    /* descriptor tables with hostile bases and limits */
    attempt("LGDT at linear ffc00000 (the VMM's GDT), reload every segment", do_gdt_in_vmm, reloaded);
    selector = 0x18;
    attempt("load selector 0018 past a 3-entry GDT's limit", do_short_gdt, 0);
    selector = 0xFFF9;
    attempt("load selector fff9 (where bt keeps its own data segment)", do_load_fs, 0);
    selector = 0x0018 | 4;
    attempt("load selector 001c after LLDT 0 (no LDT)", do_load_fs_from_no_ldt, 0);
    attempt("LIDT at linear ffc00800 (the VMM's range), INT 0x40", do_idt_in_vmm_int, delivered);
    attempt("LIDT at linear ffc00800, then a #GP through it", do_idt_in_vmm_fault, 0);
    attempt("INT 0x30 past a 16-gate IDT's limit", do_short_idt, 0);
    idt_set_gate(0x81, idt_stub_address(0x81), KERNEL_CS, GATE_INT32 & 0x7F);
    attempt("INT 0x81 through a not-present gate", do_int_not_present, 0);
    idt_set_gate(0x81, idt_stub_address(0x81), KERNEL_CS, GATE_INT32);

    /* page tables pointing at themselves */
    attempt("read its page directory through a self-map (PDE 1000)", do_read_own_directory,
            saw_own_directory);
    *(volatile uint32_t *)frame_b = 0xB0B0B0B0u;
    attempt("rewrite a PTE through the self-map, INVLPG, read", do_remap_through_selfmap, saw_frame_b);
    target = 0xFFFFF000u;
    attempt("PDE 1023 (the VMM's range) pointing at the directory: read fffff000",
            do_top_recursive, saw_own_directory);

    /* ports nobody claims (on a PC, on QEMU and on pyvmm) */
    static const uint16_t ports[] = { 0x2F8, 0x1234, 0xFFFC };
    for (unsigned i = 0; i < sizeof ports / sizeof ports[0]; i++) {
        char line[64];
        port = ports[i];
        snprintf(line, sizeof line, "OUT and IN at port %04x (unassigned)", ports[i]);
        attempt(line, do_port, port_value);
    }

    /* hypercalls with wild pointers and lengths: #UD where there are none (VMCALL) */
    hypercall("console_write from an unmapped buffer", 0, UNMAPPED, 16, 0);
    hypercall("console_write of 2 GiB", 0, (uint32_t)frame_b, 0x80000000u, 0);
    hypercall("set_shared_info at ffc00000 (the VMM's memory)", 3, VMM_LINEAR, 0, 0);
    hypercall("set_cr3 at ffc00000 (the VMM's memory)", 5, VMM_LINEAR, 0, 0);
    hypercall("set_cr3 of a directory mapping its own tables writable", 5, (uint32_t)pd, 0, 0);
    requests[0][0] = VMM_LINEAR;
    requests[0][1] = (uint32_t)frame_c | PTE_P | PTE_RW;
    hypercall("mmu_update of an entry at ffc00000 (the VMM's memory)", 4, (uint32_t)requests, 1, 0);
    requests[0][0] = beyond_ram;
    hypercall("mmu_update of an entry past the end of RAM", 4, (uint32_t)requests, 1, 0);
    hypercall("mmu_update from an unmapped request list", 4, UNMAPPED, 1, 0);
    hypercall("mmu_update of 4 Gi requests", 4, (uint32_t)requests, 0xFFFFFFFFu, 0);
    hypercall("set_trap_table from an unmapped table", 1, UNMAPPED, 0, 0);
    hypercall("multicall of 5000 calls", 7, (uint32_t)calls, 5000, 0);
    calls[0][0] = 7;                          /* a multicall calling itself, forever */
    calls[0][1] = (uint32_t)calls;
    calls[0][2] = 1;
    calls[0][6] = 0x7FFFFFFF;
    hc[0] = 7, hc[1] = (uint32_t)calls, hc[2] = 1, hc[3] = hc[4] = hc[5] = 0;
    attempt("multicall of a multicall of itself", do_hypercall, multicall_result);
    hypercall("hypercall 0x1234 (none)", 0x1234, 0, 0, 0);
}

/* ---------------------------------------------------------------------------------------
 * The attempts that end the machine by design, one a run: attempt=NAME
 * ------------------------------------------------------------------------------------- */
static void do_loop(void)
{
    __asm__ volatile("cli\n1: jmp 1b" : : : "memory");
}

static void do_halt(void)
{
    __asm__ volatile("cli\n1: hlt\n jmp 1b" : : : "memory");
}

static void do_triple(void)
{
    lidt(0, 0);
    __asm__ volatile("int3" : : : "memory");
}

static void do_phys_beyond_ram(void)
{
    paging_off();
    *(volatile uint32_t *)beyond_ram = 0x5E5E5E5Eu;
    got = peek((const void *)beyond_ram);
}

static void map_remapped(uint32_t physical)
{
    pt_low[1][(REMAPPED >> 12) & 1023] = physical | PTE_P | PTE_RW;
    invlpg(REMAPPED);
}

static void do_pte(void)
{
    map_remapped(target);
    *(volatile uint32_t *)REMAPPED = 0x5E5E5E5Eu;
    got = peek((const void *)REMAPPED);
}

static void do_pde_vmm(void)
{
    pd[256] = VMM_LINEAR | PTE_P | PTE_RW;           /* a page table in the VMM's memory */
    write_cr3((uint32_t)pd);
    got = peek((const void *)UNMAPPED);
}

static void do_cr3_vmm(void)
{
    write_cr3(VMM_LINEAR);                           /* a directory in the VMM's memory */
    got = peek(&value);
}

static void do_vmm_phys(void)
{
    paging_off();
    *(volatile uint32_t *)VMM_LINEAR = 0x5E5E5E5Eu;  /* linear is physical now */
    got = peek((const void *)VMM_LINEAR);
}

static void do_idt_vmm_phys(void)
{
    paging_off();
    lidt(VMM_LINEAR + 0x10000, 0x7FF);               /* trap's shadow IDT, by address */
    __asm__ volatile("int $0x40" : : : "memory");
}

static void do_gdt_beyond_ram(void)
{
    paging_off();
    lgdt(beyond_ram, 0xFFFF);
    selector = 0x10;
    do_load_fs();
}

static void do_seg_vmm_base(void)
{
    gdt_set_entry(3, VMM_LINEAR, 0xFFF, GDT_DATA, 0x4);
    lgdt(gdt_base(), GDT_ENTRIES * 8 - 1);
    selector = 0x18;
    target = 0;
    value = 0x5E5E5E5Eu;
    do_fs_write();
}

static void do_seg_expand_down(void)
{
    gdt_set_entry(3, 0, 0, 0x96, 0x4);               /* expand-down: offsets 1..ffffffff */
    lgdt(gdt_base(), GDT_ENTRIES * 8 - 1);
    selector = 0x18;
    target = (uint32_t)frame_b;
    value = 0x5E5E5E5Eu;
    do_fs_write();
}

static void do_rep_outs(void)
{
    /* 4 Gi iterations of OUTSB from the guest's own memory to an unassigned port: the
     * instruction budget must stop it (the identity map's end would, after 8 Mi) */
    uint32_t from = 0x1000, count = 0xFFFFFFFFu;
    __asm__ volatile("cld\n\t"
                     "rep outsb"
                     : "+S"(from), "+c"(count) : "d"(0x2F8) : "memory");
}

struct terminal {
    const char *name, *what;
    void (*fn)(void);
    uint32_t target;
};

static struct terminal terminals[] = {
    { "loop", "an endless loop with interrupts off", do_loop, 0 },
    { "halt", "HLT with interrupts off", do_halt, 0 },
    { "triple", "INT3 with an empty IDT (a triple fault)", do_triple, 0 },
    { "phys-beyond-ram", "paging off, write the first address past RAM", do_phys_beyond_ram, 0 },
    { "pte-beyond-ram", "a PTE mapping the first page past RAM, write it", do_pte, 1 },
    { "pte-vmm", "a PTE mapping physical ffc00000 (the VMM's memory), write it", do_pte, VMM_LINEAR },
    { "pte-tc", "a PTE mapping physical ffe01000 (bt's translation cache), write it", do_pte,
      0xFFE01000u },
    { "pde-vmm", "a PDE using physical ffc00000 (the VMM's memory) as a page table", do_pde_vmm, 0 },
    { "cr3-vmm", "CR3 = ffc00000 (a page directory in the VMM's memory)", do_cr3_vmm, 0 },
    { "vmm-phys", "paging off, write physical ffc00000 (the VMM's memory)", do_vmm_phys, 0 },
    { "idt-vmm-phys", "paging off, LIDT at ffc10000 (trap's shadow IDT), INT 0x40", do_idt_vmm_phys, 0 },
    { "gdt-beyond-ram", "paging off, LGDT past the end of RAM, load a segment", do_gdt_beyond_ram, 0 },
    { "seg-vmm-base", "a data segment based at ffc00000, write through it", do_seg_vmm_base, 0 },
    { "seg-expand-down", "an expand-down data segment, write through it", do_seg_expand_down, 0 },
    { "rep-outs", "REP OUTSB with ECX = ffffffff", do_rep_outs, 0 },
};
#define TERMINALS (sizeof terminals / sizeof terminals[0])

static const char *completed_text(void) { return "completed"; }

/* "attempt=NAME" from the command line (QEMU: -append), or 0 */
static const char *option(const char *cmdline, char *buf, unsigned size)
{
    const char *p = strstr(cmdline, "attempt=");
    if (!p || (p != cmdline && p[-1] != ' '))
        return 0;
    p += 8;
    unsigned n = 0;
    while (p[n] && p[n] != ' ' && n + 1 < size)
        n++;
    memcpy(buf, p, n);
    buf[n] = 0;
    return buf;
}

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    static char name[32];
    const char *chosen = option(multiboot_cmdline(info), name, sizeof name);
    uint32_t ram_end = info && (info->flags & MULTIBOOT_INFO_MEMORY) ? (info->mem_upper + 1024) << 10
                                                                     : 128u << 20;
    beyond_ram = (ram_end + 0x3FFFFFu) & ~0x3FFFFFu;

    serial_init();
    gdt_install();
    idt_install();
    for (int v = 0; v < 32; v++)
        set_handler(v, on_fault);
    set_handler(0x30, on_fault);
    set_handler(0x81, on_fault);
    set_handler(0x40, on_soft_int);
    paging_on();
    printf("escape: reaching outside the guest's memory, one attempt a line\n");

    if (!chosen) {
        survivable();
    } else {
        unsigned i;
        for (i = 0; i < TERMINALS; i++)
            if (strcmp(chosen, terminals[i].name) == 0)
                break;
        if (i == TERMINALS) {
            printf("escape: no attempt '%s'; the one-a-run attempts:", chosen);
            for (i = 0; i < TERMINALS; i++)
                printf(" %s", terminals[i].name);
            printf("\n");
            return strcmp(chosen, "list") == 0 ? 0 : 2;
        }
        target = terminals[i].target == 1 ? beyond_ram : terminals[i].target;
        char line[112];
        snprintf(line, sizeof line, "%s: %s", terminals[i].name, terminals[i].what);
        attempt(line, terminals[i].fn, completed_text);
    }
    printf("escape: %d attempts, %d ended in a guest fault, %d completed inside the guest\n",
           attempts, faulted, completed);
    return 0;
}
