/* Disk: reads and writes sectors through the ATA ports and verifies them. It drives the
 * primary channel as a driver without interrupts does (nIEN set, polling BSY and DRQ):
 * a software reset and the device signature, IDENTIFY DEVICE on the master and the slave,
 * reads of the pattern the disk image was made with (one sector, several in one command,
 * 32-bit data transfers, a sector count of 0 meaning 256), writes read back after FLUSH
 * CACHE, reads and writes past the end of the disk, a command the device must abort, and
 * an absent slave. The images come from `python3 guests/build.py --pattern-disk IMAGE`:
 *
 *     pyvmm run disk --disk master.img [--disk slave.img]
 *
 * Every line is the same on any machine that follows the ATA standard as QEMU does: only
 * the sector counts (given by the images) vary. Without a disk it says so and exits with
 * code 2.
 */
#include "kernel.h"

#define ATA_DATA     0x1F0
#define ATA_ERROR    0x1F1
#define ATA_COUNT    0x1F2
#define ATA_LBA_LOW  0x1F3
#define ATA_LBA_MID  0x1F4
#define ATA_LBA_HIGH 0x1F5
#define ATA_DEVICE   0x1F6
#define ATA_STATUS   0x1F7      /* read; a write is the command register */
#define ATA_CONTROL  0x3F6      /* write: device control; read: alternate status */

#define ST_BSY  0x80
#define ST_DRDY 0x40
#define ST_DF   0x20
#define ST_DRQ  0x08
#define ST_ERR  0x01
#define ER_IDNF 0x10
#define ER_ABRT 0x04
#define CTL_SRST 0x04
#define CTL_NIEN 0x02

#define CMD_READ      0x20
#define CMD_WRITE     0x30
#define CMD_FLUSH     0xE7
#define CMD_IDENTIFY  0xEC
#define CMD_NOP       0x00

/* The sector patterns, as guests/build.py writes them (pattern_sector). */
#define MAGIC_IMAGE   0x4B534450u       /* "PDSK": written by the harness */
#define MAGIC_WRITTEN 0x54495257u       /* "WRIT": written by this guest */
#define MIN_SECTORS   300               /* reads use 0..271, writes the last ten */

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc32(const void *data, uint32_t n)
{
    const uint8_t *p = data;
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static uint32_t mix(uint32_t magic, uint32_t drive, uint32_t lba, uint32_t i)
{
    uint32_t x = magic ^ (lba * 0x9E3779B1u) ^ (drive * 0x85EBCA77u) ^ (i * 0xC2B2AE3Du);
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    return x;
}

/* Word 0 the magic, 1 the drive, 2 the LBA, 3-126 mixed from those, 127 a CRC-32 of the
   508 bytes before it. */
static void fill(uint32_t *s, uint32_t magic, int drive, uint32_t lba)
{
    s[0] = magic;
    s[1] = drive;
    s[2] = lba;
    for (uint32_t i = 3; i < 127; i++)
        s[i] = mix(magic, drive, lba, i);
    s[127] = crc32(s, 508);
}

static int matches(const uint32_t *s, uint32_t magic, int drive, uint32_t lba)
{
    if (s[0] != magic || s[1] != (uint32_t)drive || s[2] != lba || s[127] != crc32(s, 508))
        return 0;
    for (uint32_t i = 3; i < 127; i++)
        if (s[i] != mix(magic, drive, lba, i))
            return 0;
    return 1;
}

static int mismatches;                  /* the first few bad sectors are named */

static int check_sectors(const uint32_t *buf, uint32_t magic, int drive, uint32_t lba, uint32_t n)
{
    int ok = 1;
    for (uint32_t k = 0; k < n; k++, buf += 128) {
        if (!matches(buf, magic, drive, lba + k)) {
            if (mismatches++ < 8)
                printf("  drive %d LBA %u: unexpected contents (%08x %08x %08x ...)\n",
                       drive, lba + k, buf[0], buf[1], buf[2]);
            ok = 0;
        }
    }
    return ok;
}

/* -- the channel -------------------------------------------------------------------------- */

static inline void insw(uint16_t port, void *buf, uint32_t words)
{
    __asm__ volatile("rep insw" : "+D"(buf), "+c"(words) : "d"(port) : "memory");
}

static inline void insl(uint16_t port, void *buf, uint32_t dwords)
{
    __asm__ volatile("rep insl" : "+D"(buf), "+c"(dwords) : "d"(port) : "memory");
}

static inline void outsw(uint16_t port, const void *buf, uint32_t words)
{
    __asm__ volatile("rep outsw" : "+S"(buf), "+c"(words) : "d"(port) : "memory");
}

static int timeouts;

/* The 400 ns a device may take to show its status after a command or a selection: four
   reads of the alternate status register (which, unlike 0x1F7, acknowledges nothing). */
static void settle(void)
{
    for (int i = 0; i < 4; i++)
        inb(ATA_CONTROL);
}

/* Wait while BSY is set; the status then. QEMU does its disk I/O in the background, so BSY
   can stay up for many polls there (pyvmm finishes within the OUT). */
static uint8_t wait_ready(void)
{
    for (uint32_t n = 0; n < 50000000; n++) {
        uint8_t s = inb(ATA_STATUS);
        if (!(s & ST_BSY))
            return s;
    }
    if (timeouts++ < 4)
        printf("  timeout: BSY stays set\n");
    return ST_BSY;
}

static void select_drive(int drive, uint32_t lba)
{
    outb(ATA_DEVICE, 0xE0 | (drive << 4) | ((lba >> 24) & 0x0F));   /* LBA addressing */
    settle();
}

static uint8_t command(int drive, uint8_t cmd, uint32_t lba, uint8_t count)
{
    select_drive(drive, lba);
    outb(ATA_COUNT, count);
    outb(ATA_LBA_LOW, lba & 0xFF);
    outb(ATA_LBA_MID, (lba >> 8) & 0xFF);
    outb(ATA_LBA_HIGH, (lba >> 16) & 0xFF);
    outb(ATA_STATUS, cmd);
    settle();
    return wait_ready();
}

static uint32_t lba_registers(void)
{
    return ((inb(ATA_DEVICE) & 0x0F) << 24) | (inb(ATA_LBA_HIGH) << 16)
        | (inb(ATA_LBA_MID) << 8) | inb(ATA_LBA_LOW);
}

enum mode { WORDS, REP_WORDS, DWORDS };

/* READ SECTORS: count sectors (0 means 256) into buf, moving each as `mode` says. Every
   sector must come with DRQ and no ERR, and DRQ must drop after the last. */
static int read_sectors(int drive, uint32_t lba, uint8_t count, uint32_t *buf, enum mode mode)
{
    uint32_t n = count ? count : 256;
    uint8_t s = command(drive, CMD_READ, lba, count);
    for (uint32_t k = 0; k < n; k++, buf += 128) {
        if (k)
            s = wait_ready();
        if ((s & (ST_ERR | ST_DRQ | ST_DF)) != ST_DRQ) {
            printf("  drive %d, reading LBA %u: status %02x, error %02x\n",
                   drive, lba + k, s, inb(ATA_ERROR));
            return 0;
        }
        if (mode == WORDS) {
            uint16_t *w = (uint16_t *)buf;
            for (int i = 0; i < 256; i++)
                w[i] = inw(ATA_DATA);
        } else if (mode == REP_WORDS) {
            insw(ATA_DATA, buf, 256);
        } else {
            insl(ATA_DATA, buf, 128);
        }
    }
    s = wait_ready();
    return (s & (ST_ERR | ST_DRQ | ST_DRDY)) == ST_DRDY;
}

/* WRITE SECTORS then FLUSH CACHE: each sector when DRQ asks for it; done when neither
   the write nor the flush reports ERR and DRQ is down. */
static int write_sectors(int drive, uint32_t lba, uint8_t count, const uint32_t *buf, enum mode mode)
{
    uint32_t n = count ? count : 256;
    uint8_t s = command(drive, CMD_WRITE, lba, count);
    for (uint32_t k = 0; k < n; k++, buf += 128) {
        if (k)
            s = wait_ready();
        if ((s & (ST_ERR | ST_DRQ | ST_DF)) != ST_DRQ) {
            printf("  drive %d, writing LBA %u: status %02x, error %02x\n",
                   drive, lba + k, s, inb(ATA_ERROR));
            return 0;
        }
        if (mode == REP_WORDS) {
            outsw(ATA_DATA, buf, 256);
        } else {
            const uint16_t *w = (const uint16_t *)buf;
            for (int i = 0; i < 256; i++)
                outw(ATA_DATA, w[i]);
        }
    }
    s = wait_ready();
    if ((s & (ST_ERR | ST_DRQ | ST_DRDY)) != ST_DRDY)
        return 0;
    s = command(drive, CMD_FLUSH, 0, 0);
    return (s & (ST_ERR | ST_DRQ | ST_DRDY)) == ST_DRDY;
}

static uint16_t ident[2][256];

static int identify(int drive)
{
    uint8_t s = command(drive, CMD_IDENTIFY, 0, 0);
    if ((s & (ST_ERR | ST_DRQ)) != ST_DRQ)
        return 0;
    insw(ATA_DATA, ident[drive], 256);
    s = wait_ready();
    return !(s & (ST_DRQ | ST_ERR));
}

static uint32_t sector_count(int drive)
{
    return ident[drive][60] | ((uint32_t)ident[drive][61] << 16);
}

/* The model number (words 27-46): 40 characters, two per word, the first in the high byte. */
static int model_is_text(int drive)
{
    int letters = 0;
    for (int i = 27; i < 47; i++) {
        uint8_t c[2] = { ident[drive][i] >> 8, ident[drive][i] & 0xFF };
        for (int j = 0; j < 2; j++) {
            if (c[j] < 0x20 || c[j] > 0x7E)
                return 0;
            letters += c[j] != ' ';
        }
    }
    return letters > 0;
}

/* -- the checks ----------------------------------------------------------------------------- */

static uint32_t buf[256 * 128];         /* 256 sectors */
static uint32_t expect[8 * 128];
static const char *const names[2] = { "master", "slave" };

static void check_identify(int drive)
{
    char what[80];
    const uint16_t *w = ident[drive];
    snprintf(what, sizeof what, "%s: ATA, LBA, 32-bit I/O (words 0, 49, 48)", names[drive]);
    verdict(what, !(w[0] & 0x8000) && (w[49] & 0x0200) && (w[48] & 1));
    snprintf(what, sizeof what, "%s: FLUSH CACHE supported (word 83 bit 12)", names[drive]);
    verdict(what, (w[83] & 0xC000) == 0x4000 && (w[83] & 0x1000));
    snprintf(what, sizeof what, "%s: model number is printable text", names[drive]);
    verdict(what, model_is_text(drive));
}

static void check_reads(int drive, uint32_t total)
{
    char what[80];
    const char *name = names[drive];

    snprintf(what, sizeof what, "%s: read LBA 0 (16-bit IN)", name);
    verdict(what, read_sectors(drive, 0, 1, buf, WORDS) && check_sectors(buf, MAGIC_IMAGE, drive, 0, 1));

    snprintf(what, sizeof what, "%s: read LBA 1-8 in one command", name);
    verdict(what, read_sectors(drive, 1, 8, buf, WORDS) && check_sectors(buf, MAGIC_IMAGE, drive, 1, 8));

    snprintf(what, sizeof what, "%s: read LBA 9 with 32-bit REP INSD", name);
    verdict(what, read_sectors(drive, 9, 1, buf, DWORDS) && check_sectors(buf, MAGIC_IMAGE, drive, 9, 1));

    snprintf(what, sizeof what, "%s: count 0 reads 256 sectors (LBA 16-271)", name);
    verdict(what, read_sectors(drive, 16, 0, buf, REP_WORDS)
            && check_sectors(buf, MAGIC_IMAGE, drive, 16, 256));

    snprintf(what, sizeof what, "%s: read the last sector, LBA %u", name, total - 1);
    verdict(what, read_sectors(drive, total - 1, 1, buf, REP_WORDS)
            && check_sectors(buf, MAGIC_IMAGE, drive, total - 1, 1));
}

static void check_errors(int drive, uint32_t total)
{
    char what[80];
    const char *name = names[drive];
    uint8_t s, e;

    /* one sector past the end */
    s = command(drive, CMD_READ, total, 1);
    e = inb(ATA_ERROR);
    printf("%s: READ at LBA %u (the end): status %02x, error %02x\n", name, total, s, e);
    snprintf(what, sizeof what, "%s: read past the end fails: ERR, IDNF or ABRT", name);
    verdict(what, (s & (ST_ERR | ST_DRQ | ST_BSY)) == ST_ERR && (e & (ER_IDNF | ER_ABRT)));

    /* two sectors from the last one: the last comes, then the error, naming the sector */
    s = command(drive, CMD_READ, total - 1, 2);
    int first = (s & (ST_ERR | ST_DRQ)) == ST_DRQ;
    if (first) {
        insw(ATA_DATA, buf, 256);
        first = check_sectors(buf, MAGIC_IMAGE, drive, total - 1, 1);
    }
    s = wait_ready();
    e = inb(ATA_ERROR);
    uint32_t at = lba_registers();
    printf("%s: READ of 2 at LBA %u: the first %s, then status %02x, error %02x, LBA %u\n",
           name, total - 1, first ? "arrives" : "DOES NOT ARRIVE", s, e, at);
    snprintf(what, sizeof what, "%s: read across the end: a sector, then ERR", name);
    verdict(what, first && (s & (ST_ERR | ST_DRQ)) == ST_ERR && (e & (ER_IDNF | ER_ABRT)) && at == total);

    /* a write past the end: the device may ask for the data first, then fails */
    s = command(drive, CMD_WRITE, total, 1);
    int took_data = 0;
    if ((s & (ST_ERR | ST_DRQ)) == ST_DRQ) {
        fill(buf, MAGIC_WRITTEN, drive, total);
        outsw(ATA_DATA, buf, 256);
        took_data = 1;
        s = wait_ready();
    }
    e = inb(ATA_ERROR);
    printf("%s: WRITE at LBA %u (the end): %s, status %02x, error %02x\n", name, total,
           took_data ? "data taken" : "refused at once", s, e);
    snprintf(what, sizeof what, "%s: write past the end fails: ERR, IDNF or ABRT", name);
    verdict(what, (s & (ST_ERR | ST_DRQ | ST_BSY)) == ST_ERR && (e & (ER_IDNF | ER_ABRT)));

    snprintf(what, sizeof what, "%s: after the errors, LBA 0 reads fine", name);
    verdict(what, read_sectors(drive, 0, 1, buf, WORDS) && check_sectors(buf, MAGIC_IMAGE, drive, 0, 1));
}

/* The guest writes the last ten sectors but one: total-10 alone, then total-9..total-2 in
   one command. The harness's sectors around them stay as they were. */
static void check_writes(int drive, uint32_t total)
{
    char what[80];
    const char *name = names[drive];
    uint32_t one = total - 10, eight = total - 9;

    fill(expect, MAGIC_WRITTEN, drive, one);
    snprintf(what, sizeof what, "%s: write LBA %u (16-bit OUT), flush, read back", name, one);
    verdict(what, write_sectors(drive, one, 1, expect, WORDS)
            && read_sectors(drive, one, 1, buf, WORDS)
            && check_sectors(buf, MAGIC_WRITTEN, drive, one, 1));

    for (int k = 0; k < 8; k++)
        fill(expect + 128 * k, MAGIC_WRITTEN, drive, eight + k);
    snprintf(what, sizeof what, "%s: write LBA %u-%u in one command, read back", name, eight, eight + 7);
    verdict(what, write_sectors(drive, eight, 8, expect, REP_WORDS)
            && read_sectors(drive, eight, 8, buf, REP_WORDS)
            && check_sectors(buf, MAGIC_WRITTEN, drive, eight, 8));

    snprintf(what, sizeof what, "%s: the sectors around them are untouched", name);
    verdict(what, read_sectors(drive, one - 1, 1, buf, REP_WORDS)
            && check_sectors(buf, MAGIC_IMAGE, drive, one - 1, 1)
            && read_sectors(drive, total - 1, 1, buf, REP_WORDS)
            && check_sectors(buf, MAGIC_IMAGE, drive, total - 1, 1));
}

/* What each drive wrote is still there, and its own: the slave's writes did not reach
   the master and the other way round. */
static void check_written(int drive, uint32_t total)
{
    char what[80];
    snprintf(what, sizeof what, "%s: its writes intact after the other's",
             names[drive]);
    verdict(what, read_sectors(drive, total - 10, 9, buf, REP_WORDS)
            && check_sectors(buf, MAGIC_WRITTEN, drive, total - 10, 9));
}

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    serial_init();
    crc_init();
    printf("disk: the primary ATA channel, polled (nIEN set)\n");

    /* Select the master. Writes to the device register are ignored while the selected
       device is busy, and the firmware may have left the slave selected: so select until
       the register reads back device 0 (DEV, bit 4, clear) and BSY is down. */
    outb(ATA_CONTROL, CTL_NIEN);
    uint8_t s = ST_BSY, dev = 0x10;
    for (uint32_t n = 0; n < 50000000 && ((s & ST_BSY) || (dev & 0x10)); n++) {
        outb(ATA_DEVICE, 0xA0);
        settle();
        dev = inb(ATA_DEVICE);
        s = inb(ATA_STATUS);
    }
    if (s == 0x00 || s == 0xFF) {
        printf("disk: no ATA disk on the primary channel (status %02x): nothing to check.\n"
               "Give it one: python3 guests/build.py --pattern-disk master.img; "
               "pyvmm run disk --disk master.img\n", s);
        exit(2);
    }

    /* Software reset (SRST) of both devices: the master, still selected, shows BSY
       until they are done, then the signature of its kind of device. */
    outb(ATA_CONTROL, CTL_NIEN | CTL_SRST);
    settle();
    outb(ATA_CONTROL, CTL_NIEN);
    settle();
    s = wait_ready();
    uint8_t sig[4] = { inb(ATA_COUNT), inb(ATA_LBA_LOW), inb(ATA_LBA_MID), inb(ATA_LBA_HIGH) };
    uint8_t diag = inb(ATA_ERROR);
    printf("master after reset: status %02x, signature %02x %02x %02x %02x, diagnostic %02x\n",
           s, sig[0], sig[1], sig[2], sig[3], diag);
    verdict("reset: DRDY, ATA device signature 01 01 00 00",
            (s & (ST_BSY | ST_DRDY | ST_ERR | ST_DRQ)) == ST_DRDY
            && sig[0] == 1 && sig[1] == 1 && sig[2] == 0 && sig[3] == 0);
    verdict("reset: diagnostic code 01 (no error)", diag == 0x01);

    verdict("IDENTIFY master: DRQ, 256 words, DRQ drops", identify(0));
    uint32_t total[2] = { sector_count(0), 0 };
    printf("master: %u sectors (IDENTIFY words 60-61)\n", total[0]);
    check_identify(0);

    /* The slave: an absent one reads status 00 (the master answers for it) and ignores
       commands; the master does not see them either. */
    select_drive(1, 0);
    s = inb(ATA_STATUS);
    int slave = s != 0x00 && s != 0xFF;
    if (slave) {
        verdict("IDENTIFY slave: DRQ, 256 words, DRQ drops", identify(1));
        total[1] = sector_count(1);
        printf("slave: %u sectors (IDENTIFY words 60-61)\n", total[1]);
        check_identify(1);
    } else {
        printf("slave: absent (status %02x when selected)\n", s);
        outb(ATA_STATUS, CMD_IDENTIFY);
        settle();
        s = inb(ATA_STATUS);
        uint8_t e = inb(ATA_ERROR);
        printf("slave: IDENTIFY to it: status %02x, error %02x\n", s, e);
        verdict("absent slave: IDENTIFY goes unanswered (no DRQ)", !(s & ST_DRQ));
        select_drive(0, 0);
        s = inb(ATA_STATUS);
        verdict("the master did not take it (DRDY, no ERR, no DRQ)",
                (s & (ST_BSY | ST_DRDY | ST_ERR | ST_DRQ)) == ST_DRDY);
    }

    /* A command the device must refuse: NOP (subcommand 00) always aborts. */
    s = command(0, CMD_NOP, 0, 0);
    uint8_t e = inb(ATA_ERROR);
    printf("master: NOP: status %02x, error %02x\n", s, e);
    verdict("NOP is aborted (ERR, ABRT)", (s & (ST_ERR | ST_DRQ)) == ST_ERR && (e & ER_ABRT));

    for (int d = 0; d < 1 + slave; d++) {
        if (total[d] < MIN_SECTORS || total[d] > 0x0FFFFFFF) {
            char what[80];
            snprintf(what, sizeof what, "%s: %u sectors, at least %u needed", names[d],
                     total[d], MIN_SECTORS);
            verdict(what, 0);
            continue;
        }
        check_reads(d, total[d]);
        check_errors(d, total[d]);
        check_writes(d, total[d]);
    }
    if (slave && total[0] >= MIN_SECTORS && total[1] >= MIN_SECTORS) {
        check_written(0, total[0]);
        check_written(1, total[1]);
    }

    printf("disk: %d checks, %d failed\n", verdicts, verdicts_failed);
    exit(verdicts_failed ? 1 : 0);
}
