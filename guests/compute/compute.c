/*
 * compute: an integer CPU benchmark. Five classic kernels, each printing a checksum of
 * its results, then a final checksum of those. The output depends only on the CPU doing
 * integer arithmetic right: it is the same at -O0 and -O2 and on every correct machine.
 *
 * Size: about 22 million instructions at -O2 and 46 million at -O0 (counted on pyvmm;
 * see guests/README.md), ~0.1 s on QEMU. Change SCALE to make it longer or shorter.
 */
#include "kernel.h"

#define SCALE 1                         /* multiplies every kernel's amount of work */

#define SIEVE_N     (300000 * SCALE)    /* primes below this */
#define CRC_BYTES   (48 * 1024 * SCALE) /* bytes through bitwise CRC32 */
#define MAT_N       64                  /* N x N integer matrices, multiplied SCALE times */
#define STR_WORDS   (2400 * SCALE)      /* strings built, copied, compared */
#define SORT_N      (12000 * SCALE)      /* integers sorted */

/* Deterministic pseudo-random numbers (Numerical Recipes LCG): the same every run. */
static uint32_t rng_state;
static void srand32(uint32_t seed) { rng_state = seed; }
static uint32_t rand32(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state;
}

/* Fold a value into a running checksum (FNV-1a over the 4 bytes). */
static uint32_t mix(uint32_t h, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        h ^= (v >> (8 * i)) & 0xFF;
        h *= 16777619u;
    }
    return h;
}
#define MIX_INIT 2166136261u

/* ---- 1. Sieve of Eratosthenes ------------------------------------------------------- */
static uint8_t composite[SIEVE_N];

static uint32_t sieve(void)
{
    memset(composite, 0, sizeof(composite));
    for (uint32_t i = 2; i * i < SIEVE_N; i++)
        if (!composite[i])
            for (uint32_t j = i * i; j < SIEVE_N; j += i)
                composite[j] = 1;
    uint32_t count = 0, sum = 0, h = MIX_INIT;
    for (uint32_t i = 2; i < SIEVE_N; i++) {
        if (!composite[i]) {
            count++;
            sum += i;
            if ((count & 1023) == 0)            /* every 1024th prime */
                h = mix(h, i);
        }
    }
    h = mix(mix(h, count), sum);
    printf("sieve:  %u primes below %u, sum %u, checksum %08x\n", count, SIEVE_N, sum, h);
    return h;
}

/* ---- 2. CRC32 (IEEE 802.3, reflected, bit by bit: shifts, xors, branches) ------------- */
static uint8_t crc_buf[CRC_BYTES];

static uint32_t crc32(const uint8_t *p, uint32_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

static uint32_t crc(void)
{
    static const char check[] = "123456789";   /* the standard check value: cbf43926 */
    uint32_t c0 = crc32((const uint8_t *)check, 9);
    srand32(42);
    for (uint32_t i = 0; i < CRC_BYTES; i++)
        crc_buf[i] = rand32() >> 24;
    uint32_t c1 = crc32(crc_buf, CRC_BYTES);
    printf("crc32:  \"123456789\" -> %08x, %u random bytes -> %08x\n", c0, CRC_BYTES, c1);
    return mix(mix(MIX_INIT, c0), c1);
}

/* ---- 3. Integer matrix multiply ------------------------------------------------------ */
static int32_t mat_a[MAT_N][MAT_N], mat_b[MAT_N][MAT_N], mat_c[MAT_N][MAT_N];

static uint32_t matmul(void)
{
    srand32(7);
    for (int i = 0; i < MAT_N; i++)
        for (int j = 0; j < MAT_N; j++) {
            mat_a[i][j] = (int32_t)(rand32() >> 20) - 2048;    /* -2048..2047 */
            mat_b[i][j] = (int32_t)(rand32() >> 20) - 2048;
        }
    uint32_t h = MIX_INIT;
    for (int round = 0; round < SCALE; round++) {
        for (int i = 0; i < MAT_N; i++)
            for (int j = 0; j < MAT_N; j++) {
                uint32_t s = 0;         /* unsigned: wraps instead of signed-overflow UB */
                for (int k = 0; k < MAT_N; k++)
                    s += (uint32_t)mat_a[i][k] * (uint32_t)mat_b[k][j];
                mat_c[i][j] = (int32_t)s;
            }
        /* feed the result back in so rounds differ (and can't be skipped) */
        for (int i = 0; i < MAT_N; i++)
            for (int j = 0; j < MAT_N; j++)
                mat_a[i][j] = mat_c[i][j] >> 16;
    }
    uint32_t trace = 0;
    for (int i = 0; i < MAT_N; i++) {
        trace += (uint32_t)mat_c[i][i];
        for (int j = 0; j < MAT_N; j++)
            h = mix(h, (uint32_t)mat_c[i][j]);
    }
    printf("matmul: %dx%d, trace %d, c[1][2] %d, checksum %08x\n", MAT_N, MAT_N, (int)trace,
           mat_c[1][2], h);
    return h;
}

/* ---- 4. Strings: memset, memcpy, strcpy, strlen, strcmp ------------------------------ */
#define WORD_MAX 24
static char words[STR_WORDS][WORD_MAX];
static char copies[STR_WORDS][WORD_MAX];
static char *word_ptrs[STR_WORDS];

static uint32_t strings(void)
{
    srand32(2024);
    memset(words, 0, sizeof(words));
    for (int i = 0; i < STR_WORDS; i++) {
        int len = 3 + rand32() % (WORD_MAX - 4);
        for (int k = 0; k < len; k++)
            words[i][k] = 'a' + (rand32() >> 16) % 6;  /* small alphabet: many near-ties */
    }
    memset(copies, '#', sizeof(copies));
    for (int i = 0; i < STR_WORDS; i++)
        strcpy(copies[i], words[i]);
    uint32_t total_len = 0, equal = 0, less = 0, h = MIX_INIT;
    for (int i = 0; i < STR_WORDS; i++) {
        total_len += strlen(copies[i]);
        if (strcmp(copies[i], words[i]) == 0)
            equal++;
        int c = strcmp(words[i], words[(i * 7 + 3) % STR_WORDS]);
        less += c < 0;
        h = mix(h, (uint32_t)(c < 0 ? -1 : c > 0));
    }
    /* bulk copies: the whole table, back and forth, then compare */
    for (int r = 0; r < 4; r++) {
        memcpy(copies, words, sizeof(words));
        memmove((char *)copies + 1, copies, sizeof(copies) - 1);
    }
    uint32_t diff = memcmp(copies, words, sizeof(words)) != 0;
    h = mix(mix(mix(mix(h, total_len), equal), less), diff);
    printf("string: %u words, total length %u, %u equal, %u less, checksum %08x\n",
           STR_WORDS, total_len, equal, less, h);
    return h;
}

/* ---- 5. Quicksort (our own: no libc) ------------------------------------------------- */
typedef int (*cmp_fn)(const void *, const void *);

static void swap_bytes(char *a, char *b, size_t size)
{
    while (size--) {
        char t = *a;
        *a++ = *b;
        *b++ = t;
    }
}

/* Generic quicksort like libc's qsort: median of three, recurse into the smaller half,
   insertion sort for short runs. */
static void quicksort(void *base, size_t n, size_t size, cmp_fn cmp)
{
    char *a = base;
    while (n > 8) {
        char *lo = a, *mid = a + (n / 2) * size, *hi = a + (n - 1) * size;
        if (cmp(mid, lo) < 0) swap_bytes(mid, lo, size);
        if (cmp(hi, mid) < 0) {
            swap_bytes(hi, mid, size);
            if (cmp(mid, lo) < 0) swap_bytes(mid, lo, size);
        }
        swap_bytes(mid, lo, size);              /* pivot to the front */
        char *i = lo, *j = hi + size;
        for (;;) {                              /* Hoare partition */
            do i += size; while (i < hi && cmp(i, lo) < 0);
            do j -= size; while (cmp(j, lo) > 0);
            if (i >= j)
                break;
            swap_bytes(i, j, size);
        }
        swap_bytes(lo, j, size);
        size_t left = (size_t)(j - a) / size, right = n - left - 1;
        if (left < right) {
            quicksort(a, left, size, cmp);
            a = j + size;
            n = right;
        } else {
            quicksort(j + size, right, size, cmp);
            n = left;
        }
    }
    for (size_t i = 1; i < n; i++)              /* insertion sort */
        for (char *p = a + i * size; p > a && cmp(p - size, p) > 0; p -= size)
            swap_bytes(p - size, p, size);
}

static int cmp_int(const void *x, const void *y)
{
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return (a > b) - (a < b);
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

static int32_t sort_buf[SORT_N];

static uint32_t sort(void)
{
    srand32(99);
    for (int i = 0; i < SORT_N; i++)
        sort_buf[i] = (int32_t)rand32() >> 4;
    quicksort(sort_buf, SORT_N, sizeof(sort_buf[0]), cmp_int);
    uint32_t sorted = 1, h = MIX_INIT;
    for (int i = 0; i < SORT_N; i++) {
        if (i && sort_buf[i - 1] > sort_buf[i])
            sorted = 0;
        if ((i & 63) == 0)
            h = mix(h, (uint32_t)sort_buf[i]);
    }
    /* and strings, through pointers */
    for (int i = 0; i < STR_WORDS; i++)
        word_ptrs[i] = words[i];
    quicksort(word_ptrs, STR_WORDS, sizeof(char *), cmp_str);
    uint32_t str_sorted = 1;
    for (int i = 1; i < STR_WORDS; i++)
        if (strcmp(word_ptrs[i - 1], word_ptrs[i]) > 0)
            str_sorted = 0;
    h = mix(mix(h, sorted), str_sorted);
    printf("qsort:  %u ints (%s), min %d, max %d, %u words (%s), first \"%s\", checksum %08x\n",
           SORT_N, sorted ? "sorted" : "NOT SORTED", sort_buf[0], sort_buf[SORT_N - 1],
           STR_WORDS, str_sorted ? "sorted" : "NOT SORTED", word_ptrs[0], h);
    return h;
}

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    serial_init();
    printf("compute: integer benchmark (scale %d)\n", SCALE);
    uint32_t h = MIX_INIT;
    h = mix(h, sieve());
    h = mix(h, crc());
    h = mix(h, matmul());
    h = mix(h, strings());
    h = mix(h, sort());
    printf("compute: final checksum %08x\n", h);
    exit(0);
}
