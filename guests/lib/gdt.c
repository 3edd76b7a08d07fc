/* Flat GDT. QEMU's loader leaves us a GDT of its own somewhere in low memory; a guest
   must not rely on it (a later LGDT or segment load would read whatever is there), so
   every guest that touches segments installs this one. */
#include "gdt.h"

static uint64_t gdt[GDT_ENTRIES] __attribute__((aligned(8)));

void gdt_set_entry(int index, uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
    /* The descriptor layout is split for 286 compatibility (SDM Vol. 3, 3.4.5). */
    uint64_t d = 0;
    d |= (uint64_t)(limit & 0xFFFF);
    d |= (uint64_t)(base & 0xFFFFFF) << 16;
    d |= (uint64_t)access << 40;
    d |= (uint64_t)((limit >> 16) & 0xF) << 48;
    d |= (uint64_t)(flags & 0xF) << 52;
    d |= (uint64_t)((base >> 24) & 0xFF) << 56;
    gdt[index] = d;
}

uint64_t gdt_get_entry(int index)
{
    return gdt[index];
}

uint32_t gdt_base(void)
{
    return (uint32_t)gdt;
}

void tss_install(int index, struct tss *tss, uint32_t esp0)
{
    tss->ss0 = KERNEL_DS;
    tss->esp0 = esp0;
    tss->iomap = sizeof *tss;           /* the map would start past the limit: none */
    gdt_set_entry(index, (uint32_t)tss, sizeof *tss - 1, 0x89, 0x4);
    __asm__ volatile("ltr %w0" :: "r"(index * 8) : "memory");
}

void gdt_install(void)
{
    struct __attribute__((packed)) {
        uint16_t limit;
        uint32_t base;
    } gdtr = { sizeof(gdt) - 1, (uint32_t)gdt };

    gdt_set_entry(0, 0, 0, 0, 0);
    gdt_set_entry(1, 0, 0xFFFFF, GDT_CODE, GDT_FLAT);
    gdt_set_entry(2, 0, 0xFFFFF, GDT_DATA, GDT_FLAT);

    /* A segment register caches its descriptor: reload every one after LGDT. CS can only
       be reloaded by a far transfer. */
    __asm__ volatile(
        "lgdt %0\n\t"
        "ljmp %1, $1f\n"
        "1:\n\t"
        "movw %2, %%ax\n\t"
        "movw %%ax, %%ds\n\t"
        "movw %%ax, %%es\n\t"
        "movw %%ax, %%fs\n\t"
        "movw %%ax, %%gs\n\t"
        "movw %%ax, %%ss\n\t"
        :
        : "m"(gdtr), "i"(KERNEL_CS), "i"(KERNEL_DS)
        : "eax", "memory");
}
