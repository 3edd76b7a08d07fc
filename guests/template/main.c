/* A starting point for your own guest: copy this folder, rename it, edit kmain. */
#include "kernel.h"

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    serial_init();                      /* COM1: printf goes there */
    printf("template guest: hello\n");

    /* Your code here. Integer C only (no float: the CPU has no FPU), no libc:
       kernel.h lists what guests/lib provides. For exceptions and interrupts:
       gdt_install(); idt_install(); set_handler(vector, fn); */
    uint32_t sum = 0;
    for (uint32_t i = 1; i <= 100; i++)
        sum += i;
    printf("template guest: 1 + 2 + ... + 100 = %u\n", sum);

    return 0;                           /* same as exit(0): QEMU exits with status 1 */
}
