/* Bootdisk: a kernel that a 512-byte boot sector loaded from the disk (not a Multiboot
 * loader). It reports how it was started, then checks the disk it came from: it reads its
 * own boot sector back through the ATA ports, writes a sector and reads it back.
 */
#include "kernel.h"

static void ata_wait(void)
{
    while (inb(0x1F7) & 0x80) { }
}

static int ata_command(uint8_t command, uint32_t lba)
{
    outb(0x1F6, 0xE0 | ((lba >> 24) & 0x0F));
    outb(0x1F2, 1);
    outb(0x1F3, lba & 0xFF);
    outb(0x1F4, (lba >> 8) & 0xFF);
    outb(0x1F5, (lba >> 16) & 0xFF);
    outb(0x1F7, command);
    ata_wait();
    return (inb(0x1F7) & 0x09) == 0x08;         /* DRQ and no ERR */
}

static int read_sector(uint32_t lba, uint16_t *buffer)
{
    if (!ata_command(0x20, lba))
        return 0;
    for (int i = 0; i < 256; i++)
        buffer[i] = inw(0x1F0);
    return 1;
}

static int write_sector(uint32_t lba, const uint16_t *buffer)
{
    if (!ata_command(0x30, lba))
        return 0;
    for (int i = 0; i < 256; i++)
        outw(0x1F0, buffer[i]);
    ata_wait();
    outb(0x1F7, 0xE7);                          /* FLUSH CACHE */
    ata_wait();
    return 1;
}

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)info;
    static uint16_t sector[256], check[256];
    serial_init();
    if (magic == MULTIBOOT_BOOTLOADER_MAGIC) {
        /* booted as a kernel file (-kernel): there is no disk of ours to check */
        printf("bootdisk: started by a Multiboot loader; boot the disk image to test the disk\n");
        exit(0);
    }
    printf("bootdisk: started by our own boot sector\n");
    int ok = 1;
    if (read_sector(0, sector)) {
        const uint8_t *bytes = (const uint8_t *)sector;
        printf("sector 0 ends with %02x %02x\n", bytes[510], bytes[511]);
        ok &= bytes[510] == 0x55 && bytes[511] == 0xAA;
    } else {
        printf("reading sector 0 failed\n");
        ok = 0;
    }
    for (int i = 0; i < 256; i++)
        sector[i] = (uint16_t)(i * 257 + 1);
    ok &= write_sector(40, sector) && read_sector(40, check) && memcmp(sector, check, 512) == 0;
    printf("wrote and read back sector 40: %s\n", ok ? "same" : "DIFFERENT");
    printf("bootdisk: %s\n", ok ? "ok" : "FAILED");
    exit(ok ? 0 : 1);
}
