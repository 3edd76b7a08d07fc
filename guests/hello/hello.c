/* The smallest useful guest: say hello, show what the loader handed us, exit 0. */
#include "kernel.h"

int kmain(uint32_t magic, struct multiboot_info *info)
{
    serial_init();
    printf("Hello from pyvmm guest!\n");
    printf("multiboot magic: %08x%s\n", magic,
           magic == MULTIBOOT_BOOTLOADER_MAGIC ? " (ok)" : " (not a multiboot loader?)");
    if (info->flags & MULTIBOOT_INFO_MEMORY)
        printf("mem_lower: %u KiB, mem_upper: %u KiB\n", info->mem_lower, info->mem_upper);
    else
        printf("mem_upper: unknown (flags %08x)\n", info->flags);
    printf("cmdline: \"%s\"\n", multiboot_cmdline(info));
    printf("bye\n");
    exit(0);
}
