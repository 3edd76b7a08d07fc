/*
 * selftest: run every family of integer instructions on many inputs and print what the
 * CPU computed, as "name: value" lines. Nothing here knows the right answers: the output
 * is compared with the same kernel's output on another machine (QEMU as the oracle), so
 * any line that differs names the instruction family that is wrong.
 *
 * A group of results prints as its values when it has at most 4, else as a hash of them
 * with their count. With the multiboot command line "verbose" (QEMU: -append verbose)
 * every single value is printed too, to find which case of a group differs.
 *
 * Flags: only the EFLAGS bits the SDM defines for an instruction are recorded (the
 * undefined ones legitimately differ between CPUs); see the masks below.
 *
 * An unexpected exception (say #UD for an instruction the CPU lacks) does not stop the
 * run: the test it happened in is reported as aborted and the next one starts. The exit
 * code is 0 when no test was aborted, else 1.
 *
 * Every recorded value is position independent, so the output is the same at -O0, -O2.
 */
#include "kernel.h"

/* EFLAGS bits */
#define CF 0x001
#define PF 0x004
#define AF 0x010
#define ZF 0x040
#define SF 0x080
#define TF 0x100
#define IF 0x200
#define DF 0x400
#define OF 0x800
#define NT 0x4000
#define AC 0x40000
#define ID 0x200000
#define ARITH (OF | SF | ZF | AF | PF | CF)
#define FL_ALL (ARITH | 0x2)            /* every arithmetic flag set (and the fixed bit 1) */
#define FL_NONE 0x2

#define ALT_CS 0x18                     /* see selftest_asm.S */
#define ALT_DS 0x20

/* ---- results: groups, hashes, the check counter ----------------------------------- */
static int verbose;
static const char *group_name;
static uint32_t group_hash, group_count, group_first[4];
static uint32_t total_hash = 2166136261u, total_checks, total_groups;

static uint32_t mix(uint32_t h, uint32_t v)
{
    h ^= v;
    h *= 16777619u;
    return h ^ (h >> 15);
}

static void begin(const char *name)
{
    group_name = name;
    group_hash = 2166136261u;
    group_count = 0;
}

static void val(uint32_t v)
{
    if (group_count < 4)
        group_first[group_count] = v;
    if (verbose)
        printf("  %s[%u] = %08x\n", group_name, group_count, v);
    group_count++;
    group_hash = mix(group_hash, v);
    total_hash = mix(total_hash, v);
    total_checks++;
}

/* Only the flags in `defined` count (the rest may differ between correct CPUs). */
static void valf(uint32_t flags, uint32_t defined)
{
    val(flags & defined);
}

static void end(void)
{
    total_groups++;
    printf("%s:", group_name);
    if (group_count <= 4) {
        for (uint32_t i = 0; i < group_count; i++)
            printf(" %08x", group_first[i]);
        printf("\n");
    } else {
        printf(" %08x (%u values)\n", group_hash, group_count);
    }
    group_name = 0;
}

/* One-value group. */
static void check(const char *name, uint32_t v)
{
    begin(name);
    val(v);
    end();
}

/* Inputs: the edges of every operand size, and some bit patterns. */
static const uint32_t values[] = {
    0x00000000, 0x00000001, 0x00000002, 0x0000007F, 0x00000080, 0x000000FF,
    0x00007FFF, 0x00008000, 0x0000FFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
    0x12345678, 0xFEDCBA98, 0x0F0F0F0F, 0x55555555,
};
#define NVALUES (int)(sizeof(values) / sizeof(values[0]))
static const uint32_t flags_in[] = { FL_NONE, FL_ALL };

/* ---- surviving exceptions ------------------------------------------------------------ */
extern int st_setjmp(uint32_t *jb) __attribute__((returns_twice));
extern void st_longjmp(uint32_t *jb, int v) __attribute__((noreturn));
static uint32_t test_jb[6];
static const char *test_name;
static int aborted;

static void unexpected(struct frame *f)
{
    printf("%s: unexpected %s (vector %u, error %08x) at %04x:%08x in group %s\n",
           test_name, exception_name(f->vector), f->vector, f->error_code, f->cs & 0xFFFF,
           f->eip, group_name ? group_name : "-");
    dump_frame(f);
    st_longjmp(test_jb, 1);
}

/* ======================================================================================
 * ALU: ADD OR ADC SBB AND SUB XOR CMP TEST, 8/16/32-bit, register and memory forms
 * ====================================================================================== */

/* One function per instruction and size: EFLAGS in, result and EFLAGS out.
   "q" = a register with a byte form (EAX..EDX); %b/%w/%k print its 8/16/32-bit name. */
#define DEF_BIN(op, sfx, mod, con)                                                      \
    static uint32_t op##_##sfx(uint32_t a, uint32_t b, uint32_t fin, uint32_t *fl)      \
    {                                                                                   \
        uint32_t f;                                                                     \
        __asm__ volatile("pushl %[fin]\n\tpopfl\n\t"                                    \
                         #op #sfx " %" #mod "[b], %" #mod "[a]\n\t"                     \
                         "pushfl\n\tpopl %[f]"                                          \
                         : [a] "+" con(a), [f] "=r"(f)                                  \
                         : [b] con(b), [fin] "r"(fin)                                   \
                         : "cc");                                                       \
        *fl = f;                                                                        \
        return a;                                                                       \
    }
#define DEF_BIN_ALL(op) DEF_BIN(op, b, b, "q") DEF_BIN(op, w, w, "r") DEF_BIN(op, l, k, "r")
DEF_BIN_ALL(add) DEF_BIN_ALL(or) DEF_BIN_ALL(adc) DEF_BIN_ALL(sbb)
DEF_BIN_ALL(and) DEF_BIN_ALL(sub) DEF_BIN_ALL(xor) DEF_BIN_ALL(cmp) DEF_BIN_ALL(test)

/* the high-byte registers (AH..DH: "Q") */
static uint32_t add_hb(uint32_t a, uint32_t b, uint32_t fin, uint32_t *fl)
{
    uint32_t f;
    __asm__ volatile("pushl %[fin]\n\tpopfl\n\taddb %h[b], %h[a]\n\tpushfl\n\tpopl %[f]"
                     : [a] "+Q"(a), [f] "=r"(f) : [b] "Q"(b), [fin] "r"(fin) : "cc");
    *fl = f;
    return a;
}

/* memory destination (ModRM with a memory operand; the pointer is in a register) */
#define DEF_BIN_MEM(op)                                                                 \
    static uint32_t op##_mem(uint32_t a, uint32_t b, uint32_t fin, uint32_t *fl)        \
    {                                                                                   \
        uint32_t f, cell = a;                                                           \
        uint32_t *p = &cell;                                                            \
        __asm__ volatile("pushl %[fin]\n\tpopfl\n\t" #op "l %[b], (%[p])\n\t"           \
                         "pushfl\n\tpopl %[f]"                                          \
                         : [f] "=r"(f) : [b] "r"(b), [p] "r"(p), [fin] "r"(fin)         \
                         : "cc", "memory");                                             \
        *fl = f;                                                                        \
        return cell;                                                                    \
    }
DEF_BIN_MEM(add) DEF_BIN_MEM(adc) DEF_BIN_MEM(sub) DEF_BIN_MEM(sbb) DEF_BIN_MEM(xor)

/* immediate forms: 83 /0 (imm8 sign-extended), 81 (imm32), 04 (AL, imm8), 80 (r/m8) */
static uint32_t imm_forms(uint32_t a, uint32_t fin, uint32_t *fl)
{
    uint32_t f;
    __asm__ volatile("pushl %[fin]\n\tpopfl\n\t"
                     "addl $-3, %[a]\n\t"
                     "adcl $0x12345678, %[a]\n\t"
                     "sbbw $0x7F, %w[a]\n\t"
                     "xorb $0x81, %b[a]\n\t"
                     "pushfl\n\tpopl %[f]"
                     : [a] "+a"(a), [f] "=r"(f) : [fin] "r"(fin) : "cc");
    *fl = f;
    return a;
}

typedef uint32_t (*binop_fn)(uint32_t, uint32_t, uint32_t, uint32_t *);
struct binop {
    const char *name;
    binop_fn fn;
    uint32_t defined;                   /* EFLAGS bits the SDM defines for it */
};

static const struct binop binops[] = {
    { "add.8", add_b, ARITH }, { "add.16", add_w, ARITH }, { "add.32", add_l, ARITH },
    { "or.8", or_b, ARITH & ~AF }, { "or.16", or_w, ARITH & ~AF }, { "or.32", or_l, ARITH & ~AF },
    { "adc.8", adc_b, ARITH }, { "adc.16", adc_w, ARITH }, { "adc.32", adc_l, ARITH },
    { "sbb.8", sbb_b, ARITH }, { "sbb.16", sbb_w, ARITH }, { "sbb.32", sbb_l, ARITH },
    { "and.8", and_b, ARITH & ~AF }, { "and.16", and_w, ARITH & ~AF },
    { "and.32", and_l, ARITH & ~AF },
    { "sub.8", sub_b, ARITH }, { "sub.16", sub_w, ARITH }, { "sub.32", sub_l, ARITH },
    { "xor.8", xor_b, ARITH & ~AF }, { "xor.16", xor_w, ARITH & ~AF },
    { "xor.32", xor_l, ARITH & ~AF },
    { "cmp.8", cmp_b, ARITH }, { "cmp.16", cmp_w, ARITH }, { "cmp.32", cmp_l, ARITH },
    { "test.8", test_b, ARITH & ~AF }, { "test.16", test_w, ARITH & ~AF },
    { "test.32", test_l, ARITH & ~AF },
    { "add.8h", add_hb, ARITH },
    { "add.mem", add_mem, ARITH }, { "adc.mem", adc_mem, ARITH },
    { "sub.mem", sub_mem, ARITH }, { "sbb.mem", sbb_mem, ARITH },
    { "xor.mem", xor_mem, ARITH & ~AF },
};

static void test_alu(void)
{
    for (unsigned k = 0; k < sizeof(binops) / sizeof(binops[0]); k++) {
        begin(binops[k].name);
        for (int i = 0; i < NVALUES; i++)
            for (int j = 0; j < NVALUES; j++)
                for (int c = 0; c < 2; c++) {
                    uint32_t f;
                    /* high bits of b vary too: 8/16-bit forms must ignore them */
                    val(binops[k].fn(values[i], values[j] ^ 0xA5A50000, flags_in[c], &f));
                    valf(f, binops[k].defined);
                }
        end();
    }
    begin("alu.imm");
    for (int i = 0; i < NVALUES; i++)
        for (int c = 0; c < 2; c++) {
            uint32_t f;
            val(imm_forms(values[i], flags_in[c], &f));
            valf(f, ARITH);
        }
    end();
}

/* INC DEC NEG NOT: unary, 8/16/32. INC/DEC leave CF alone; NOT touches no flag. */
#define DEF_UN(op, sfx, mod, con)                                                       \
    static uint32_t op##_##sfx(uint32_t a, uint32_t fin, uint32_t *fl)                  \
    {                                                                                   \
        uint32_t f;                                                                     \
        __asm__ volatile("pushl %[fin]\n\tpopfl\n\t" #op #sfx " %" #mod "[a]\n\t"       \
                         "pushfl\n\tpopl %[f]"                                          \
                         : [a] "+" con(a), [f] "=r"(f) : [fin] "r"(fin) : "cc");        \
        *fl = f;                                                                        \
        return a;                                                                       \
    }
#define DEF_UN_ALL(op) DEF_UN(op, b, b, "q") DEF_UN(op, w, w, "r") DEF_UN(op, l, k, "r")
DEF_UN_ALL(inc) DEF_UN_ALL(dec) DEF_UN_ALL(neg) DEF_UN_ALL(not)

typedef uint32_t (*unop_fn)(uint32_t, uint32_t, uint32_t *);
static const struct {
    const char *name;
    unop_fn fn;
} unops[] = {
    { "inc.8", inc_b }, { "inc.16", inc_w }, { "inc.32", inc_l },
    { "dec.8", dec_b }, { "dec.16", dec_w }, { "dec.32", dec_l },
    { "neg.8", neg_b }, { "neg.16", neg_w }, { "neg.32", neg_l },
    { "not.8", not_b }, { "not.16", not_w }, { "not.32", not_l },
};

static void test_unary(void)
{
    for (unsigned k = 0; k < sizeof(unops) / sizeof(unops[0]); k++) {
        begin(unops[k].name);
        for (int i = 0; i < NVALUES; i++)
            for (int c = 0; c < 2; c++) {
                uint32_t f;
                val(unops[k].fn(values[i], flags_in[c], &f));
                valf(f, ARITH);
            }
        end();
    }
}

/* ======================================================================================
 * Shifts and rotates: ROL ROR RCL RCR SHL SHR SAR by CL, by 1, by imm8; SHLD SHRD
 * ====================================================================================== */
#define DEF_SH(op, sfx, mod, con)                                                       \
    static uint32_t op##_##sfx(uint32_t a, uint32_t n, uint32_t fin, uint32_t *fl)      \
    {                                                                                   \
        uint32_t f;                                                                     \
        __asm__ volatile("pushl %[fin]\n\tpopfl\n\t" #op #sfx " %%cl, %" #mod "[a]\n\t" \
                         "pushfl\n\tpopl %[f]"                                          \
                         : [a] "+" con(a), [f] "=r"(f) : "c"(n), [fin] "r"(fin) : "cc"); \
        *fl = f;                                                                        \
        return a;                                                                       \
    }
#define DEF_SH_ALL(op) DEF_SH(op, b, b, "q") DEF_SH(op, w, w, "r") DEF_SH(op, l, k, "r")
DEF_SH_ALL(rol) DEF_SH_ALL(ror) DEF_SH_ALL(rcl) DEF_SH_ALL(rcr)
DEF_SH_ALL(shl) DEF_SH_ALL(shr) DEF_SH_ALL(sar)

enum { K_ROT, K_SHL, K_SAR, K_SHD };    /* which SDM rule says what is undefined */

/* EFLAGS bits the SDM defines after a shift of `count` (isa.py's UNDEFINED_RULES). */
static uint32_t shift_defined(int kind, uint32_t count, int size)
{
    uint32_t undef = 0;
    count &= 31;
    if (kind == K_ROT) {
        undef = count > 1 ? OF : 0;     /* rotates write only CF and OF */
    } else {
        if (count != 0)
            undef |= AF;
        if (count > 1)
            undef |= OF;
        if (kind == K_SHL && count >= (uint32_t)size)
            undef |= CF;
        if (kind == K_SHD && count > (uint32_t)size)
            undef = ARITH;
    }
    return ARITH & ~undef;
}

static const uint32_t counts[] = { 0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33 };
#define NCOUNTS (int)(sizeof(counts) / sizeof(counts[0]))
static const uint32_t shift_values[] = {
    0x00000000, 0x00000001, 0x00000080, 0x00008000, 0x80000000, 0xFFFFFFFF, 0x12345678,
    0xFEDCBA98, 0x0F0F0F0F, 0x55555555,
};
#define NSHIFTV (int)(sizeof(shift_values) / sizeof(shift_values[0]))

typedef uint32_t (*shift_fn)(uint32_t, uint32_t, uint32_t, uint32_t *);
static const struct {
    const char *name;
    shift_fn fn;
    int kind, size;
} shifts[] = {
    { "rol.8", rol_b, K_ROT, 8 }, { "rol.16", rol_w, K_ROT, 16 }, { "rol.32", rol_l, K_ROT, 32 },
    { "ror.8", ror_b, K_ROT, 8 }, { "ror.16", ror_w, K_ROT, 16 }, { "ror.32", ror_l, K_ROT, 32 },
    { "rcl.8", rcl_b, K_ROT, 8 }, { "rcl.16", rcl_w, K_ROT, 16 }, { "rcl.32", rcl_l, K_ROT, 32 },
    { "rcr.8", rcr_b, K_ROT, 8 }, { "rcr.16", rcr_w, K_ROT, 16 }, { "rcr.32", rcr_l, K_ROT, 32 },
    { "shl.8", shl_b, K_SHL, 8 }, { "shl.16", shl_w, K_SHL, 16 }, { "shl.32", shl_l, K_SHL, 32 },
    { "shr.8", shr_b, K_SHL, 8 }, { "shr.16", shr_w, K_SHL, 16 }, { "shr.32", shr_l, K_SHL, 32 },
    { "sar.8", sar_b, K_SAR, 8 }, { "sar.16", sar_w, K_SAR, 16 }, { "sar.32", sar_l, K_SAR, 32 },
};

/* the by-1 (D1) and by-imm8 (C1) encodings */
static uint32_t shift_imm_forms(uint32_t a, uint32_t fin, uint32_t *fl)
{
    uint32_t f;
    __asm__ volatile("pushl %[fin]\n\tpopfl\n\t"
                     "roll $1, %[a]\n\t"
                     "rcrl $1, %[a]\n\t"
                     "shll $5, %[a]\n\t"
                     "sarw $3, %w[a]\n\t"
                     "rorb $1, %b[a]\n\t"
                     "shrl $1, %[a]\n\t"        /* by 1 last: OF (and all of SZAPC) defined */
                     "pushfl\n\tpopl %[f]"
                     : [a] "+q"(a), [f] "=r"(f) : [fin] "r"(fin) : "cc");
    *fl = f;
    return a;
}

#define DEF_SHD(op, sfx, mod)                                                           \
    static uint32_t op##_##sfx(uint32_t a, uint32_t b, uint32_t n, uint32_t fin,        \
                               uint32_t *fl)                                            \
    {                                                                                   \
        uint32_t f;                                                                     \
        __asm__ volatile("pushl %[fin]\n\tpopfl\n\t"                                    \
                         #op #sfx " %%cl, %" #mod "[b], %" #mod "[a]\n\t"               \
                         "pushfl\n\tpopl %[f]"                                          \
                         : [a] "+r"(a), [f] "=r"(f)                                     \
                         : [b] "r"(b), "c"(n), [fin] "r"(fin) : "cc");                  \
        *fl = f;                                                                        \
        return a;                                                                       \
    }
DEF_SHD(shld, w, w) DEF_SHD(shld, l, k) DEF_SHD(shrd, w, w) DEF_SHD(shrd, l, k)

static void test_shift(void)
{
    for (unsigned k = 0; k < sizeof(shifts) / sizeof(shifts[0]); k++) {
        begin(shifts[k].name);
        for (int i = 0; i < NSHIFTV; i++)
            for (int n = 0; n < NCOUNTS; n++)
                for (int c = 0; c < 2; c++) {
                    uint32_t f;
                    val(shifts[k].fn(shift_values[i], counts[n], flags_in[c], &f));
                    valf(f, shift_defined(shifts[k].kind, counts[n], shifts[k].size));
                }
        end();
    }
    begin("shift.imm");
    for (int i = 0; i < NSHIFTV; i++)
        for (int c = 0; c < 2; c++) {
            uint32_t f;
            val(shift_imm_forms(shift_values[i], flags_in[c], &f));
            valf(f, ARITH & ~AF);
        }
    end();

    static const struct {
        const char *name;
        uint32_t (*fn)(uint32_t, uint32_t, uint32_t, uint32_t, uint32_t *);
        int size;
    } dbl[] = {
        { "shld.16", shld_w, 16 }, { "shld.32", shld_l, 32 },
        { "shrd.16", shrd_w, 16 }, { "shrd.32", shrd_l, 32 },
    };
    for (int k = 0; k < 4; k++) {
        begin(dbl[k].name);
        for (int i = 0; i < NSHIFTV; i++)
            for (int j = 0; j < NSHIFTV; j += 3)
                for (int n = 0; n < NCOUNTS; n++) {
                    uint32_t f, count = counts[n] & 31;
                    if (count > (uint32_t)dbl[k].size)
                        continue;               /* result undefined: skip */
                    val(dbl[k].fn(shift_values[i], shift_values[j], counts[n], FL_NONE, &f));
                    valf(f, shift_defined(K_SHD, count, dbl[k].size));
                }
        end();
    }
}

/* ======================================================================================
 * Bits: BT BTS BTR BTC (register, immediate, memory bit strings), BSF BSR
 * ====================================================================================== */
#define BT_DEFINED (CF | ZF)            /* OF SF AF PF undefined; ZF unchanged */

#define DEF_BT(op)                                                                      \
    static uint32_t op##_reg(uint32_t a, uint32_t n, uint32_t *fl)                      \
    {                                                                                   \
        uint32_t f;                                                                     \
        __asm__ volatile("pushl %[fin]\n\tpopfl\n\t" #op "l %[n], %[a]\n\t"             \
                         "pushfl\n\tpopl %[f]"                                          \
                         : [a] "+r"(a), [f] "=r"(f) : [n] "r"(n), [fin] "i"(FL_ALL)     \
                         : "cc");                                                       \
        *fl = f;                                                                        \
        return a;                                                                       \
    }                                                                                   \
    static uint32_t op##_imm(uint32_t a, uint32_t *fl)                                  \
    {                                                                                   \
        uint32_t f;                                                                     \
        __asm__ volatile("pushl $2\n\tpopfl\n\t" #op "l $13, %[a]\n\t" #op "w $17, %w[a]\n\t" \
                         "pushfl\n\tpopl %[f]"                                          \
                         : [a] "+r"(a), [f] "=r"(f) : : "cc");                          \
        *fl = f;                                                                        \
        return a;                                                                       \
    }                                                                                   \
    /* a bit string in memory: the offset is signed and may reach outside the dword */  \
    static uint32_t op##_mem(uint32_t *base, int32_t n, uint32_t *fl)                   \
    {                                                                                   \
        uint32_t f;                                                                     \
        __asm__ volatile("pushl $2\n\tpopfl\n\t" #op "l %[n], (%[p])\n\t"               \
                         "pushfl\n\tpopl %[f]"                                          \
                         : [f] "=r"(f) : [n] "r"(n), [p] "r"(base) : "cc", "memory");   \
        *fl = f;                                                                        \
        return 0;                                                                       \
    }
DEF_BT(bt) DEF_BT(bts) DEF_BT(btr) DEF_BT(btc)

static uint32_t bsf_(uint32_t a, uint32_t *fl)
{
    uint32_t f, r = 0xDEADBEEF;
    __asm__ volatile("bsfl %[a], %[r]\n\tpushfl\n\tpopl %[f]"
                     : [r] "+r"(r), [f] "=r"(f) : [a] "r"(a) : "cc");
    *fl = f;
    return r;
}

static uint32_t bsr_(uint32_t a, uint32_t *fl)
{
    uint32_t f, r = 0xDEADBEEF;
    __asm__ volatile("bsrw %w[a], %w[r]\n\tbsrl %[a], %[r]\n\tpushfl\n\tpopl %[f]"
                     : [r] "+r"(r), [f] "=r"(f) : [a] "r"(a) : "cc");
    *fl = f;
    return r;
}

static void test_bits(void)
{
    static const struct {
        const char *name;
        uint32_t (*reg)(uint32_t, uint32_t, uint32_t *);
        uint32_t (*imm)(uint32_t, uint32_t *);
        uint32_t (*mem)(uint32_t *, int32_t, uint32_t *);
    } bts[] = {
        { "bt", bt_reg, bt_imm, bt_mem }, { "bts", bts_reg, bts_imm, bts_mem },
        { "btr", btr_reg, btr_imm, btr_mem }, { "btc", btc_reg, btc_imm, btc_mem },
    };
    static const int32_t offsets[] = { 0, 1, 31, 32, 33, 63, 64, 100, -1, -8, -33, -100 };
    uint32_t f;
    for (int k = 0; k < 4; k++) {
        begin(bts[k].name);
        for (int i = 0; i < NVALUES; i++)
            for (uint32_t n = 0; n < 40; n += 3) {      /* register form: offset mod 32 */
                val(bts[k].reg(values[i], n, &f));
                valf(f, BT_DEFINED);
            }
        for (int i = 0; i < NVALUES; i++) {
            val(bts[k].imm(values[i], &f));
            valf(f, BT_DEFINED);
        }
        for (unsigned o = 0; o < sizeof(offsets) / sizeof(offsets[0]); o++) {
            uint32_t words[16];
            for (int w = 0; w < 16; w++)
                words[w] = values[w];
            bts[k].mem(&words[8], offsets[o], &f);      /* the string starts mid-array */
            valf(f, CF);
            for (int w = 0; w < 16; w++)
                val(words[w]);
        }
        end();
    }
    begin("bsf");
    for (int i = 0; i < NVALUES; i++) {
        uint32_t r = bsf_(values[i], &f);
        if (values[i])                  /* the destination is undefined for a zero source */
            val(r);
        valf(f, ZF);
    }
    end();
    begin("bsr");
    for (int i = 0; i < NVALUES; i++) {
        uint32_t r = bsr_(values[i], &f);
        if (values[i])
            val(r);
        valf(f, ZF);
    }
    end();
}

/* ======================================================================================
 * BCD: DAA DAS AAA AAS AAM AAD
 * ====================================================================================== */
#define DEF_BCD(op, bytes)                                                              \
    static uint32_t op##_(uint32_t a, uint32_t fin, uint32_t *fl)                       \
    {                                                                                   \
        uint32_t f;                                                                     \
        __asm__ volatile("pushl %[fin]\n\tpopfl\n\t" bytes "\n\tpushfl\n\tpopl %[f]"    \
                         : "+a"(a), [f] "=r"(f) : [fin] "r"(fin) : "cc");               \
        *fl = f;                                                                        \
        return a;                                                                       \
    }
DEF_BCD(daa, "daa") DEF_BCD(das, "das") DEF_BCD(aaa, "aaa") DEF_BCD(aas, "aas")
DEF_BCD(aam10, ".byte 0xD4, 10") DEF_BCD(aam16, ".byte 0xD4, 16") DEF_BCD(aam3, ".byte 0xD4, 3")
DEF_BCD(aad10, ".byte 0xD5, 10") DEF_BCD(aad16, ".byte 0xD5, 16") DEF_BCD(aad7, ".byte 0xD5, 7")

static void test_bcd(void)
{
    static const uint32_t fin4[] = { FL_NONE, FL_NONE | CF, FL_NONE | AF, FL_NONE | AF | CF };
    static const struct {
        const char *name;
        uint32_t (*fn)(uint32_t, uint32_t, uint32_t *);
        uint32_t defined;
    } ops[] = {
        { "daa", daa_, ARITH & ~OF }, { "das", das_, ARITH & ~OF },
        { "aaa", aaa_, AF | CF }, { "aas", aas_, AF | CF },
        { "aam.10", aam10_, SF | ZF | PF }, { "aam.16", aam16_, SF | ZF | PF },
        { "aam.3", aam3_, SF | ZF | PF },
        { "aad.10", aad10_, SF | ZF | PF }, { "aad.16", aad16_, SF | ZF | PF },
        { "aad.7", aad7_, SF | ZF | PF },
    };
    for (unsigned k = 0; k < sizeof(ops) / sizeof(ops[0]); k++) {
        begin(ops[k].name);
        for (uint32_t al = 0; al < 256; al++)
            for (int c = 0; c < 4; c++) {
                uint32_t f;
                /* AH varies with AL (AAA/AAS/AAD use it); the upper half must survive */
                uint32_t eax = 0xC0DE0000 | ((al * 37 + c) & 0xFF) << 8 | al;
                val(ops[k].fn(eax, fin4[c], &f));
                valf(f, ops[k].defined);
            }
        end();
    }
}

/* ======================================================================================
 * MUL IMUL DIV IDIV
 * ====================================================================================== */
#define MULDIV_DEFINED (CF | OF)        /* after MUL/IMUL; DIV/IDIV define no flag */

struct pair { uint32_t lo, hi; };

#define DEF_MUL1(op, sfx, mod)                                                          \
    static struct pair op##_##sfx(uint32_t a, uint32_t b, uint32_t *fl)                 \
    {                                                                                   \
        uint32_t f, d = 0xD0D0D0D0;     /* EDX's upper half must survive the 16-bit form */ \
        __asm__ volatile(#op #sfx " %" #mod "[b]\n\tpushfl\n\tpopl %[f]"                \
                         : "+a"(a), "+d"(d), [f] "=r"(f) : [b] "q"(b) : "cc");          \
        *fl = f;                                                                        \
        return (struct pair){ a, d };                                                   \
    }
DEF_MUL1(mul, b, b) DEF_MUL1(mul, w, w) DEF_MUL1(mul, l, k)
DEF_MUL1(imul, b, b) DEF_MUL1(imul, w, w) DEF_MUL1(imul, l, k)

static struct pair imul_forms(uint32_t a, uint32_t b, uint32_t *fl)
{
    uint32_t f, r2 = a, r3, r4;
    __asm__ volatile("imull %[b], %[r2]\n\t"            /* 0F AF: r32 *= r/m32 */
                     "imulw %w[b], %w[r2]\n\t"          /* 66 0F AF */
                     "imull $-7, %[b], %[r3]\n\t"       /* 6B: imm8 */
                     "imull $0x12345, %[b], %[r4]\n\t"  /* 69: imm32, flags from this one */
                     "pushfl\n\tpopl %[f]"
                     : [r2] "+r"(r2), [r3] "=&r"(r3), [r4] "=&r"(r4), [f] "=&r"(f)
                     : [b] "r"(b) : "cc");
    *fl = f;
    return (struct pair){ r2 ^ r3, r4 };
}

#define DEF_DIV(op, sfx, mod)                                                           \
    static struct pair op##_##sfx(uint32_t a, uint32_t d, uint32_t b)                   \
    {                                                                                   \
        __asm__ volatile(#op #sfx " %" #mod "[b]" : "+a"(a), "+d"(d) : [b] "q"(b) : "cc"); \
        return (struct pair){ a, d };                                                   \
    }
DEF_DIV(div, b, b) DEF_DIV(div, w, w) DEF_DIV(div, l, k)
DEF_DIV(idiv, b, b) DEF_DIV(idiv, w, w) DEF_DIV(idiv, l, k)

static void test_muldiv(void)
{
    static const struct {
        const char *name;
        struct pair (*fn)(uint32_t, uint32_t, uint32_t *);
    } muls[] = {
        { "mul.8", mul_b }, { "mul.16", mul_w }, { "mul.32", mul_l },
        { "imul.8", imul_b }, { "imul.16", imul_w }, { "imul.32", imul_l },
        { "imul.forms", imul_forms },
    };
    for (int k = 0; k < 7; k++) {
        begin(muls[k].name);
        for (int i = 0; i < NVALUES; i++)
            for (int j = 0; j < NVALUES; j++) {
                uint32_t f;
                struct pair r = muls[k].fn(values[i], values[j] ^ 0x3C000000, &f);
                val(r.lo);
                val(r.hi);
                valf(f, MULDIV_DEFINED);
            }
        end();
    }

    /* Division: only inputs whose quotient fits (the others raise #DE: see the
       exceptions guest). The C code picks the inputs; the CPU computes the results. */
    static const struct {
        const char *name;
        struct pair (*fn)(uint32_t, uint32_t, uint32_t);
        int size, is_signed;
    } divs[] = {
        { "div.8", div_b, 8, 0 }, { "div.16", div_w, 16, 0 }, { "div.32", div_l, 32, 0 },
        { "idiv.8", idiv_b, 8, 1 }, { "idiv.16", idiv_w, 16, 1 }, { "idiv.32", idiv_l, 32, 1 },
    };
    for (int k = 0; k < 6; k++) {
        int size = divs[k].size;
        uint32_t mask = size == 32 ? 0xFFFFFFFFu : (1u << size) - 1;
        uint32_t sign = 1u << (size - 1);
        begin(divs[k].name);
        for (int i = 0; i < NVALUES; i++)
            for (int j = 0; j < NVALUES; j++) {
                uint32_t lo = values[i] & mask, b = values[j] & mask, hi;
                if (b == 0)
                    continue;
                if (divs[k].is_signed) {
                    hi = (lo & sign) ? mask : 0;        /* sign-extended dividend */
                    if (lo == sign && b == mask)
                        continue;                       /* MIN / -1 overflows */
                } else {
                    hi = (values[(i + j) % NVALUES] & mask) % b;    /* < divisor: fits */
                }
                uint32_t a, d;
                if (size == 8) {                        /* AX / r/m8 */
                    a = 0xABCD0000 | (hi << 8) | lo;
                    d = 0xDDDDDDDD;
                } else if (size == 16) {                /* DX:AX / r/m16 */
                    a = 0xABCD0000 | lo;
                    d = 0xDDDD0000 | hi;
                } else {
                    a = lo;
                    d = hi;
                }
                /* the 8/16-bit forms must ignore the divisor register's upper bits */
                struct pair r = divs[k].fn(a, d, size == 32 ? b : b | 0x5A000000);
                val(r.lo);
                val(r.hi);
            }
        end();
    }
}

/* ======================================================================================
 * Conditions: SETcc, CMOVcc, Jcc (short and near) over every combination of O S Z P C
 * ====================================================================================== */
#define CC_LIST(X) X(o) X(no) X(b) X(ae) X(e) X(ne) X(be) X(a) \
                   X(s) X(ns) X(p) X(np) X(l) X(ge) X(le) X(g)

#define DEF_CC(cc)                                                                      \
    static uint32_t set_##cc(uint32_t fin)                                              \
    {                                                                                   \
        uint32_t r = 0x12345600;        /* SETcc writes the low byte only */            \
        __asm__ volatile("pushl %[fin]\n\tpopfl\n\tset" #cc " %b[r]"                    \
                         : [r] "+q"(r) : [fin] "r"(fin) : "cc");                        \
        return r;                                                                       \
    }                                                                                   \
    static uint32_t cmov_##cc(uint32_t fin)                                             \
    {                                                                                   \
        uint32_t r = 0xAAAAAAAA, src = 0xBBBBBBBB, r16 = 0xCCCCCCCC;                    \
        uint32_t *p = &src;                                                             \
        __asm__ volatile("pushl %[fin]\n\tpopfl\n\t"                                    \
                         "cmov" #cc "l (%[p]), %[r]\n\t"                                \
                         "cmov" #cc "w %w[s], %w[r16]"                                  \
                         : [r] "+r"(r), [r16] "+r"(r16)                                 \
                         : [p] "r"(p), [s] "r"(src), [fin] "r"(fin) : "cc", "memory");  \
        return r ^ r16;                                                                 \
    }                                                                                   \
    static uint32_t jcc_##cc(uint32_t fin)                                              \
    {                                                                                   \
        uint32_t r;                                                                     \
        __asm__ volatile("pushl %[fin]\n\tpopfl\n\t"                                    \
                         "movl $0, %[r]\n\t"                                            \
                         "j" #cc " 1f\n\t"              /* short: 7x rel8 */            \
                         "jmp 2f\n"                                                     \
                         "1:\n\t"                                                       \
                         "movl $1, %[r]\n"                                              \
                         "2:\n\t"                                                       \
                         "j" #cc " 3f\n\t"              /* near: 0F 8x rel32 */         \
                         "jmp 4f\n\t"                                                   \
                         ".fill 160, 1, 0xCC\n"         /* never run: pushes 3f far */ \
                         "3:\n\t"                                                       \
                         "orl $2, %[r]\n"                                               \
                         "4:"                                                           \
                         : [r] "=&r"(r) : [fin] "r"(fin) : "cc");                       \
        return r;                                                                       \
    }
CC_LIST(DEF_CC)

#define CC_ENTRY(cc) { #cc, set_##cc, cmov_##cc, jcc_##cc },
static const struct {
    const char *name;
    uint32_t (*set)(uint32_t), (*cmov)(uint32_t), (*jcc)(uint32_t);
} conds[] = { CC_LIST(CC_ENTRY) };

static uint32_t combo_flags(int combo)
{
    /* bit 0..4 of combo -> CF PF ZF SF OF; AF follows bit 0 (no condition reads it) */
    return FL_NONE | (combo & 1 ? CF | AF : 0) | (combo & 2 ? PF : 0) | (combo & 4 ? ZF : 0)
           | (combo & 8 ? SF : 0) | (combo & 16 ? OF : 0);
}

static void test_conditions(void)
{
    char name[24];
    for (int k = 0; k < 16; k++) {
        snprintf(name, sizeof(name), "set%s", conds[k].name);
        begin(name);
        uint32_t mask = 0;
        for (int combo = 0; combo < 32; combo++) {
            uint32_t r = conds[k].set(combo_flags(combo));
            if ((r & 0xFFFFFF00) != 0x12345600)
                val(r);                 /* only if SETcc clobbered the upper bytes */
            mask |= (r & 0xFF) << combo;
        }
        val(mask);                      /* bit n: condition true for combo n */
        end();
    }
    for (int k = 0; k < 16; k++) {
        snprintf(name, sizeof(name), "cmov%s", conds[k].name);
        begin(name);
        for (int combo = 0; combo < 32; combo++)
            val(conds[k].cmov(combo_flags(combo)));
        end();
    }
    for (int k = 0; k < 16; k++) {
        snprintf(name, sizeof(name), "j%s", conds[k].name);
        begin(name);
        uint32_t mask[2] = { 0, 0 };    /* 2 bits per combo: short and near form */
        for (int combo = 0; combo < 32; combo++)
            mask[combo / 16] |= conds[k].jcc(combo_flags(combo)) << (2 * (combo % 16));
        val(mask[0]);
        val(mask[1]);
        end();
    }
}

/* LOOP LOOPE LOOPNE JECXZ */
static void test_loops(void)
{
    uint32_t n, ecx;
    __asm__ volatile("xorl %[n], %[n]\n1:\n\tincl %[n]\n\tloop 1b"
                     : [n] "=&r"(n), "=c"(ecx) : "1"(10) : "cc");
    check("loop", n);
    /* LOOPE stops when ZF = 0: count down until EAX hits 3 */
    uint32_t eax = 8;
    ecx = 100;
    __asm__ volatile("1:\n\tdecl %%eax\n\tcmpl $3, %%eax\n\tloopne 1b"
                     : "+a"(eax), "+c"(ecx) : : "cc");
    begin("loopne");
    val(eax);
    val(ecx);
    end();
    uint32_t buf[6] = { 7, 7, 7, 7, 9, 7 }, *p = buf;
    __asm__ volatile("1:\n\taddl $4, %[p]\n\tcmpl $7, -4(%[p])\n\tloope 1b"
                     : [p] "+r"(p), "=c"(ecx) : "1"(6) : "cc", "memory");
    begin("loope");
    val((uint32_t)(p - buf));
    val(ecx);
    end();
    uint32_t hit;
    ecx = 0;
    __asm__ volatile("movl $0, %[h]\n\tjecxz 1f\n\tmovl $1, %[h]\n1:\n\t"
                     "decl %%ecx\n\tjecxz 2f\n\torl $2, %[h]\n2:"
                     : [h] "=&r"(hit), "+c"(ecx) : : "cc");
    check("jecxz", hit);
}

/* ======================================================================================
 * Data movement: MOVZX MOVSX CBW CWDE CWD CDQ LEA XLAT XCHG BSWAP LAHF SAHF
 * ====================================================================================== */
static void test_move(void)
{
    begin("movzx.movsx");
    for (int i = 0; i < NVALUES; i++) {
        uint32_t v = values[i] ^ 0x00C300C3, a, b, c, d;
        __asm__("movzbl %b4, %0\n\tmovzwl %w4, %1\n\tmovsbl %b4, %2\n\tmovswl %w4, %3"
                : "=&r"(a), "=&r"(b), "=&r"(c), "=&r"(d) : "q"(v));
        val(a);
        val(b);
        val(c);
        val(d);
        uint32_t w = 0xFFFF0000;
        __asm__("movsbw %b1, %w0" : "+r"(w) : "q"(v));         /* 16-bit destination */
        val(w);
    }
    end();

    begin("cbw.cwd");
    for (int i = 0; i < NVALUES; i++) {
        uint32_t a = values[i] ^ 0x5A5A0000, d = 0x77777777;
        __asm__("cbtw" : "+a"(a));                              /* CBW: AL -> AX */
        val(a);
        a = values[i];
        __asm__("cwtl" : "+a"(a));                              /* CWDE: AX -> EAX */
        val(a);
        a = values[i];
        __asm__("cwtd" : "+a"(a), "+d"(d));                     /* CWD: AX -> DX:AX */
        val(d);
        __asm__("cltd" : "+a"(a), "=d"(d));                     /* CDQ: EAX -> EDX:EAX */
        val(d);
    }
    end();

    begin("lea");
    for (int i = 0; i < NVALUES; i++) {
        uint32_t b = values[i], x = values[(i + 5) % NVALUES], r1, r2, r3, r4 = 0xEEEEEEEE;
        __asm__("leal 0x12345678(%[b],%[x],8), %[r1]\n\t"       /* wraps at 4 GiB */
                "leal -1(,%[x],4), %[r2]\n\t"
                "leal (%[b],%[b],2), %[r3]\n\t"
                "leaw 0x8000(%[b],%[x]), %w[r4]"                  /* 16-bit destination */
                : [r1] "=&r"(r1), [r2] "=&r"(r2), [r3] "=&r"(r3), [r4] "+&r"(r4)
                : [b] "r"(b), [x] "r"(x));
        val(r1);
        val(r2);
        val(r3);
        val(r4);
        /* 16-bit addressing (67 prefix): BX+SI+disp wraps at 64 KiB */
        uint32_t r5;
        __asm__("addr16 leal 0x7FF0(%%bx,%%si), %0" : "=r"(r5) : "b"(b), "S"(x));
        val(r5);
    }
    end();

    static const uint8_t table[256] = { [0] = 0x11, [0x7F] = 0x22, [0x80] = 0x33, [0xFF] = 0x44,
                                        [0x12] = 0x55, [0x45] = 0x66 };
    begin("xlat");
    for (int i = 0; i < NVALUES; i++) {
        uint32_t a = values[i] ^ 0xABCD0000;
        __asm__("xlat" : "+a"(a) : "b"(table), "m"(table));
        val(a);
    }
    end();

    begin("xchg");
    for (int i = 0; i < NVALUES; i++) {
        uint32_t a = values[i], b = ~values[i] ^ 0x1234, m = 0x0BADF00D;
        uint32_t *p = &m;
        __asm__("xchgl %0, %1\n\t"
                "xchgb %b0, %b1\n\t"
                "xchgw %w1, (%2)"
                : "+q"(a), "+q"(b) : "r"(p) : "memory");
        val(a);
        val(b);
        val(m);
        __asm__("xchgl %0, (%1)" : "+r"(a) : "r"(p) : "memory");    /* implicitly locked */
        val(a);
        val(m);
    }
    end();

    begin("bswap");
    for (int i = 0; i < NVALUES; i++) {
        uint32_t a = values[i];
        __asm__("bswap %0" : "+r"(a));
        val(a);
    }
    end();

    begin("lahf.sahf");
    for (uint32_t ah = 0; ah < 256; ah++) {
        uint32_t a = ah << 8, f;
        __asm__ volatile("pushl $0x8D7\n\tpopfl\n\tsahf\n\tpushfl\n\tpopl %[f]"
                         : [f] "=r"(f) : "a"(a) : "cc");
        val(f & (ARITH | 0x2A));        /* OF kept; bits 1, 3, 5 fixed at 1, 0, 0 */
    }
    for (int combo = 0; combo < 32; combo++) {
        uint32_t a = 0x12345678;
        __asm__ volatile("pushl %[fin]\n\tpopfl\n\tlahf"
                         : "+a"(a) : [fin] "r"(combo_flags(combo)) : "cc");
        val(a);
    }
    end();
}

/* ======================================================================================
 * XADD CMPXCHG CMPXCHG8B, and LOCK-prefixed read-modify-writes
 * ====================================================================================== */
static void test_atomic(void)
{
    begin("xadd");
    for (int i = 0; i < NVALUES; i++)
        for (int j = 0; j < NVALUES; j += 3) {
            uint32_t m = values[i], r = values[j], f;
            uint32_t *p = &m;
            __asm__ volatile("lock xaddl %[r], (%[p])\n\tpushfl\n\tpopl %[f]"
                             : [r] "+r"(r), [f] "=r"(f) : [p] "r"(p) : "cc", "memory");
            val(m);
            val(r);
            valf(f, ARITH);
            __asm__ volatile("xaddb %b[r], %b[x]\n\txaddw %w[x], %w[r]"
                             : [r] "+q"(r), [x] "+q"(m) : : "cc");
            val(m);
            val(r);
        }
    end();

    begin("cmpxchg");
    for (int i = 0; i < NVALUES; i++)
        for (int j = 0; j < NVALUES; j += 5) {
            /* equal (stores the source) and not equal (loads the destination) */
            for (int eq = 0; eq < 2; eq++) {
                uint32_t m = values[i], a = eq ? values[i] : values[j], src = 0x600DC0DE, f;
                uint32_t *p = &m;
                __asm__ volatile("lock cmpxchgl %[s], (%[p])\n\tpushfl\n\tpopl %[f]"
                                 : "+a"(a), [f] "=r"(f) : [s] "r"(src), [p] "r"(p)
                                 : "cc", "memory");
                val(m);
                val(a);
                valf(f, ARITH);
            }
            uint32_t a = values[j], d = values[i], f;
            __asm__ volatile("cmpxchgb %b[s], %b[d]\n\tcmpxchgw %w[s], %w[d]\n\t"
                             "pushfl\n\tpopl %[f]"
                             : "+a"(a), [d] "+q"(d), [f] "=r"(f) : [s] "q"(0xFACE)
                             : "cc");
            val(a);
            val(d);
            valf(f, ARITH);
        }
    end();

    begin("cmpxchg8b");
    for (int i = 0; i < NVALUES; i += 2)
        for (int eq = 0; eq < 2; eq++) {
            uint32_t m[2] = { values[i], ~values[i] };
            uint32_t a = eq ? m[0] : m[0] + 1, d = m[1], f;
            uint32_t *p = m;
            __asm__ volatile("lock cmpxchg8b (%[p])\n\tpushfl\n\tpopl %[f]"
                             : "+a"(a), "+d"(d), [f] "=r"(f)
                             : "b"(0x11112222), "c"(0x33334444), [p] "S"(p) : "cc", "memory");
            val(m[0]);
            val(m[1]);
            val(a);
            val(d);
            valf(f, ZF);                /* the only flag CMPXCHG8B writes */
        }
    end();

    begin("lock.rmw");
    for (int i = 0; i < NVALUES; i++) {
        uint32_t m = values[i], f;
        uint32_t *p = &m;
        __asm__ volatile("lock addl $0x1001, (%[p])\n\t"
                         "lock incl (%[p])\n\t"
                         "lock notl (%[p])\n\t"
                         "lock negl (%[p])\n\t"
                         "lock orw $0x0F0F, (%[p])\n\t"
                         "lock btsl $5, (%[p])\n\t"
                         "lock sbbb $1, 3(%[p])\n\t"
                         "pushfl\n\tpopl %[f]"
                         : [f] "=r"(f) : [p] "r"(p) : "cc", "memory");
        val(m);
        valf(f, ARITH);
    }
    end();
}

/* ======================================================================================
 * Strings: MOVS STOS LODS CMPS SCAS with REP/REPE/REPNE, forward and backward
 * ====================================================================================== */
static uint8_t src_buf[256], dst_buf[256];

static void fill_buffers(void)
{
    for (int i = 0; i < 256; i++) {
        src_buf[i] = (uint8_t)(i * 7 + 3);
        dst_buf[i] = (uint8_t)(0xFF - i);
    }
}

static void val_dst(void)
{
    const uint32_t *w = (const uint32_t *)dst_buf;
    for (int i = 0; i < 64; i++)
        val(w[i]);
}

/* Registers after a string op, relative to the buffers. */
static void val_regs(const void *esi, const void *edi, uint32_t ecx)
{
    val((uint32_t)((const uint8_t *)esi - src_buf));
    val((uint32_t)((const uint8_t *)edi - dst_buf));
    val(ecx);
}

static void test_string(void)
{
    const void *s;
    void *d;
    uint32_t c, a, f;

    fill_buffers();
    begin("rep.movs");
    s = src_buf + 3, d = dst_buf + 5, c = 37;
    __asm__ volatile("rep movsb" : "+S"(s), "+D"(d), "+c"(c) : : "memory");
    val_regs(s, d, c);
    s = src_buf + 64, d = dst_buf + 66, c = 13;
    __asm__ volatile("rep movsw" : "+S"(s), "+D"(d), "+c"(c) : : "memory");
    val_regs(s, d, c);
    s = src_buf + 100, d = dst_buf + 120, c = 9;
    __asm__ volatile("rep movsl" : "+S"(s), "+D"(d), "+c"(c) : : "memory");
    val_regs(s, d, c);
    val_dst();
    end();

    fill_buffers();
    begin("rep.movs.backward");         /* DF = 1: addresses count down */
    s = src_buf + 200, d = dst_buf + 240, c = 10;
    __asm__ volatile("std\n\trep movsl\n\tcld" : "+S"(s), "+D"(d), "+c"(c) : : "memory");
    val_regs(s, d, c);
    s = src_buf + 31, d = dst_buf + 30, c = 30;
    __asm__ volatile("std\n\trep movsb\n\tcld" : "+S"(s), "+D"(d), "+c"(c) : : "memory");
    val_regs(s, d, c);
    val_dst();
    end();

    fill_buffers();
    begin("rep.movs.overlap");          /* byte by byte: the first byte smears forward */
    s = dst_buf + 10, d = dst_buf + 11, c = 20;
    __asm__ volatile("rep movsb" : "+S"(s), "+D"(d), "+c"(c) : : "memory");
    val_dst();
    s = dst_buf + 100, d = dst_buf + 104, c = 8;
    __asm__ volatile("rep movsl" : "+S"(s), "+D"(d), "+c"(c) : : "memory");
    val_dst();
    end();

    fill_buffers();
    begin("rep.stos");
    d = dst_buf + 1, c = 11;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(c) : "a"(0x123456AB) : "memory");
    val_regs(src_buf, d, c);
    d = dst_buf + 33, c = 7;
    __asm__ volatile("rep stosw" : "+D"(d), "+c"(c) : "a"(0x1234CDEF) : "memory");
    val_regs(src_buf, d, c);
    d = dst_buf + 80, c = 5;
    __asm__ volatile("std\n\trep stosl\n\tcld" : "+D"(d), "+c"(c) : "a"(0xFEEDFACE) : "memory");
    val_regs(src_buf, d, c);
    val_dst();
    end();

    begin("lods");
    s = src_buf + 17, a = 0xAAAAAAAA;
    __asm__ volatile("lodsb" : "+S"(s), "+a"(a) : "m"(src_buf));
    val(a);
    __asm__ volatile("lodsw" : "+S"(s), "+a"(a) : "m"(src_buf));
    val(a);
    __asm__ volatile("lodsl" : "+S"(s), "+a"(a) : "m"(src_buf));
    val(a);
    val((uint32_t)((const uint8_t *)s - src_buf));
    end();

    fill_buffers();
    memcpy(dst_buf, src_buf, 64);
    dst_buf[20] ^= 0x40;
    begin("repe.cmps");                 /* stops after the first difference */
    s = src_buf, d = dst_buf, c = 40;
    __asm__ volatile("repe cmpsb\n\tpushfl\n\tpopl %[f]"
                     : "+S"(s), "+D"(d), "+c"(c), [f] "=r"(f) : "m"(src_buf), "m"(dst_buf)
                     : "cc");
    val_regs(s, d, c);
    valf(f, ARITH);
    s = src_buf, d = dst_buf, c = 4;    /* equal all the way: ECX runs out, ZF = 1 */
    __asm__ volatile("repe cmpsl\n\tpushfl\n\tpopl %[f]"
                     : "+S"(s), "+D"(d), "+c"(c), [f] "=r"(f) : "m"(src_buf), "m"(dst_buf)
                     : "cc");
    val_regs(s, d, c);
    valf(f, ARITH);
    s = src_buf + 1, d = dst_buf, c = 10;   /* REPNE: stops at the first equal pair */
    dst_buf[6] = src_buf[7];
    __asm__ volatile("repne cmpsb\n\tpushfl\n\tpopl %[f]"
                     : "+S"(s), "+D"(d), "+c"(c), [f] "=r"(f) : "m"(src_buf), "m"(dst_buf)
                     : "cc");
    val_regs(s, d, c);
    valf(f, ARITH);
    end();

    static char text[] = "the quick brown fox";
    begin("repne.scas");                /* strlen the classic way */
    d = text, c = 0xFFFFFFFF;
    __asm__ volatile("repne scasb\n\tpushfl\n\tpopl %[f]"
                     : "+D"(d), "+c"(c), [f] "=r"(f) : "a"(0), "m"(text) : "cc");
    val((uint32_t)((char *)d - text));
    val(c);
    valf(f, ARITH);
    d = text, c = 100;                  /* find 'q' */
    __asm__ volatile("repne scasb\n\tpushfl\n\tpopl %[f]"
                     : "+D"(d), "+c"(c), [f] "=r"(f) : "a"('q'), "m"(text) : "cc");
    val((uint32_t)((char *)d - text));
    val(c);
    valf(f, ARITH);
    uint32_t words[4] = { 5, 5, 5, 6 };
    d = words, c = 4;                   /* REPE SCASD: skip the 5s */
    __asm__ volatile("repe scasl\n\tpushfl\n\tpopl %[f]"
                     : "+D"(d), "+c"(c), [f] "=r"(f) : "a"(5), "m"(words) : "cc");
    val((uint32_t)((uint32_t *)d - words));
    val(c);
    valf(f, ARITH);
    end();

    begin("rep.zero");                  /* ECX = 0: nothing moves, no flag changes */
    s = src_buf, d = dst_buf, c = 0;
    __asm__ volatile("pushl $0x8D7\n\tpopfl\n\trepe cmpsb\n\trep movsb\n\tpushfl\n\tpopl %[f]"
                     : "+S"(s), "+D"(d), "+c"(c), [f] "=r"(f) : : "cc", "memory");
    val_regs(s, d, c);
    valf(f, ARITH);
    end();
}

/* ======================================================================================
 * Flags: CLC STC CMC CLD STD, which EFLAGS bits POPF may change, PUSHF/POPF round trip
 * ====================================================================================== */
static uint32_t toggles(uint32_t mask)
{
    uint32_t changed;
    __asm__ volatile("pushfl\n\t"
                     "popl %%ecx\n\t"
                     "movl %%ecx, %%eax\n\t"
                     "xorl %[m], %%eax\n\t"
                     "pushl %%eax\n\t"
                     "popfl\n\t"                /* try to flip the bits */
                     "pushfl\n\t"
                     "popl %%eax\n\t"
                     "pushl %%ecx\n\t"
                     "popfl\n\t"                /* and put everything back */
                     "xorl %%ecx, %%eax"
                     : "=&a"(changed) : [m] "r"(mask) : "ecx", "cc");
    return changed & mask;
}

static void test_flags(void)
{
    uint32_t f1, f2, f3, f4;
    __asm__ volatile("pushl $2\n\tpopfl\n\t"
                     "stc\n\tpushfl\n\tpopl %0\n\t"
                     "cmc\n\tpushfl\n\tpopl %1\n\t"
                     "cmc\n\tclc\n\tpushfl\n\tpopl %2\n\t"
                     "std\n\tpushfl\n\tpopl %3\n\tcld"
                     : "=r"(f1), "=r"(f2), "=r"(f3), "=r"(f4) : : "cc");
    begin("clc.stc.cmc.std");
    val(f1 & (ARITH | DF));
    val(f2 & (ARITH | DF));
    val(f3 & (ARITH | DF));
    val(f4 & (ARITH | DF));
    end();

    begin("popf.writable");             /* at CPL 0 */
    val(toggles(ARITH));
    val(toggles(DF));
    val(toggles(0x3000));               /* IOPL */
    val(toggles(NT));
    val(toggles(AC));                   /* 486 and later */
    val(toggles(ID));                   /* a CPU with CPUID */
    val(toggles(0x2 | 0x8 | 0x20 | 0x8000 | 0xFFC00000));  /* reserved: fixed */
    val(toggles(0x10000 | 0x20000 | 0x80000 | 0x100000));   /* RF VM VIF VIP: not via POPF */
    end();

    uint32_t f;
    __asm__ volatile("pushfl\n\tpopl %0" : "=r"(f));
    check("eflags.system", f & ~ARITH); /* IF, TF, DF, IOPL, NT, AC...: all clear */
}

/* ======================================================================================
 * INT n, INT3, INTO, IRET: through the IDT and back, with the frame modified in between
 * ====================================================================================== */
static struct frame seen;
static uint32_t hits, inside_eflags, redirect_cs;

static void on_soft_int(struct frame *f)
{
    hits++;
    seen = *f;
    __asm__ volatile("pushfl\n\tpopl %0" : "=r"(inside_eflags));
    f->eax = f->eax * 3 + 1;            /* changes visible after IRET */
    f->eflags ^= CF;
    if (redirect_cs)
        f->cs = redirect_cs;            /* IRET to another code segment */
}

static void val_seen(uint32_t site)
{
    val(seen.vector);
    val(seen.error_code);
    val(seen.eip - site);
    val(seen.cs & 0xFFFF);
    val(seen.eflags & (ARITH | DF | TF | IF | NT | 0x2));
    val(inside_eflags & (TF | IF | NT));  /* the gate cleared TF and NT, and IF */
}

static void test_interrupts(void)
{
    set_handler(3, on_soft_int);
    set_handler(4, on_soft_int);
    set_handler(0x40, on_soft_int);
    set_handler(0x41, on_soft_int);
    idt_set_gate(0x41, idt_stub_address(0x41), KERNEL_CS, GATE_TRAP32);

    uint32_t site, a, f, cs;
    begin("int.0x40");
    hits = 0;
    a = 100;
    __asm__ volatile("pushl $0x8D7\n\tpopfl\n\t"
                     "movl $1f, %[site]\n"
                     "1:\tint $0x40\n\t"
                     "pushfl\n\tpopl %[f]"
                     : [site] "=&r"(site), "+a"(a), [f] "=r"(f) : : "cc", "memory");
    val(hits);
    val_seen(site);
    val(a);                             /* 301 */
    val(f & ARITH);                     /* CF flipped by the handler */
    end();

    begin("int.trapgate");
    hits = 0;
    __asm__ volatile("pushl $2\n\tpopfl\n\tmovl $1f, %[site]\n1:\tint $0x41"
                     : [site] "=&r"(site), "+a"(a) : : "cc", "memory");
    val(hits);
    val_seen(site);
    end();

    begin("int3");
    hits = 0;
    __asm__ volatile("pushl $2\n\tpopfl\n\tmovl $1f, %[site]\n1:\tint3"
                     : [site] "=&r"(site), "+a"(a) : : "cc", "memory");
    val(hits);
    val_seen(site);
    end();

    begin("into");
    hits = 0;
    __asm__ volatile("pushl $2\n\tpopfl\n\tinto" : "+a"(a) : : "cc", "memory");  /* OF=0 */
    val(hits);
    __asm__ volatile("pushl $0x802\n\tpopfl\n\tmovl $1f, %[site]\n1:\tinto"
                     : [site] "=&r"(site), "+a"(a) : : "cc", "memory");
    val(hits);
    val_seen(site);
    end();

    begin("iret.cs");                   /* the handler returns into selector 0x18 */
    hits = 0;
    redirect_cs = ALT_CS;
    __asm__ volatile("pushl $2\n\tpopfl\n\t"
                     "int $0x40\n\t"
                     "movl %%cs, %[cs]\n\t"
                     "ljmp $0x08, $1f\n"    /* home again */
                     "1:"
                     : [cs] "=r"(cs), "+a"(a) : : "cc", "memory");
    redirect_cs = 0;
    val(hits);
    val(cs);
    end();

    begin("iret.frame");                /* IRET without an interrupt: a hand-made frame */
    __asm__ volatile("pushl $0x8D7\n\t"     /* EFLAGS */
                     "pushl %%cs\n\t"
                     "pushl $1f\n\t"
                     "iret\n"
                     "1:\tpushfl\n\tpopl %[f]"
                     : [f] "=r"(f) : : "cc", "memory");
    val(f & (ARITH | 0x2));
    end();

    begin("int.nt");                    /* NT is cleared inside, restored by IRET */
    hits = 0;
    __asm__ volatile("pushl $0x4002\n\tpopfl\n\t"
                     "movl $1f, %[site]\n"
                     "1:\tint $0x40\n\t"
                     "pushfl\n\tpopl %[f]\n\t"
                     "pushl $2\n\tpopfl"      /* NT off before anything else runs */
                     : [site] "=&r"(site), [f] "=r"(f), "+a"(a) : : "cc", "memory");
    val(hits);
    val_seen(site);
    val(f & (NT | ARITH));
    end();

    set_handler(3, unexpected);
    set_handler(4, unexpected);
    set_handler(0x40, 0);
    set_handler(0x41, 0);
}

/* ======================================================================================
 * The rest: far transfers, segments, ENTER/LEAVE, stack edge cases (selftest_asm.S),
 * descriptor tables, I/O, self-modifying code, CPUID/RDTSC presence
 * ====================================================================================== */
extern int st_enter(uint32_t *out);
extern int st_stack(uint32_t *out);
extern int st_far(uint32_t *out);
extern int st_sreg(uint32_t *out);
uint32_t seg_buf[8];                    /* selector 0x20 has base seg_buf - 0x100 */

static void asm_group(const char *name, int (*fn)(uint32_t *))
{
    uint32_t out[32];
    memset(out, 0xEE, sizeof(out));
    int n = fn(out);
    begin(name);
    for (int i = 0; i < n; i++)
        val(out[i]);
    end();
}

static void test_asm(void)
{
    asm_group("enter.leave", st_enter);
    asm_group("stack", st_stack);
    asm_group("far", st_far);
    seg_buf[0] = 0x600DF00D;
    asm_group("sreg", st_sreg);
    begin("sreg.based");
    for (int i = 0; i < 5; i++)
        val(seg_buf[i]);
    end();
}

static void test_system(void)
{
    struct __attribute__((packed)) {
        uint16_t limit;
        uint32_t base;
    } gdtr, idtr;
    __asm__ volatile("sgdt %0\n\tsidt %1" : "=m"(gdtr), "=m"(idtr));
    begin("sgdt");
    val(gdtr.limit);
    const uint32_t *g = (const uint32_t *)gdtr.base;    /* read our GDT back through it */
    /* entries 0-3 (4 has an address as its base), without the accessed bit: a CPU sets
       it when it loads a descriptor, but QEMU does so only for data segments */
    for (int i = 0; i < 8; i++)
        val(g[i] & (i & 1 ? ~0x100u : ~0u));
    val(g[5] & 0x100);                  /* ...so only the data segment's is shown */
    end();
    begin("sidt");
    val(idtr.limit);
    const uint16_t *gate = (const uint16_t *)(idtr.base + 0x40 * 8);
    val(gate[1]);                       /* selector */
    val(gate[2]);                       /* type */
    end();

    uint32_t msw = 0xFFFFFFFF;
    __asm__ volatile("smsw %w0" : "+r"(msw));
    check("smsw", msw & 0xFFFF);        /* PE, ET */

    uint32_t a = 0, b, c, d;
    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "=c"(c), "=d"(d));
    check("cpuid.ran", 1);              /* vendor and features differ per CPU: not shown */

    uint32_t lo1, hi1, lo2, hi2;
    __asm__ volatile("rdtsc" : "=a"(lo1), "=d"(hi1));
    __asm__ volatile("rdtsc" : "=a"(lo2), "=d"(hi2));
    check("rdtsc.advances", hi2 > hi1 || (hi2 == hi1 && lo2 > lo1));

    __asm__ volatile("nopl 0(%eax)\n\tnopw 0(%eax,%eax,1)\n\tnop");
    check("nop.forms", 1);
}

/* The 16550's scratch register (COM1 + 7) keeps whatever was written: an I/O round trip. */
static void test_io(void)
{
    uint32_t a;
    uint16_t port = COM1 + 7;
    begin("io.scratch");
    outb(port, 0xA5);
    val(inb(port));
    static const uint8_t bytes[5] = { 1, 2, 3, 4, 0x5A };
    const void *s = bytes;
    uint32_t c = 5;
    __asm__ volatile("rep outsb" : "+S"(s), "+c"(c) : "d"(port), "m"(bytes));
    val(inb(port));                     /* the last byte written */
    uint8_t in[4] = { 0, 0, 0, 0 };
    void *d = in;
    c = 4;
    __asm__ volatile("rep insb" : "+D"(d), "+c"(c) : "d"(port) : "memory");
    val(in[0] | in[1] << 8 | in[2] << 16 | (uint32_t)in[3] << 24);
    __asm__ volatile("movb $0x3C, %%al\n\toutb %%al, %%dx\n\txorl %%eax, %%eax\n\tinb %%dx, %%al"
                     : "=&a"(a) : "d"(port));
    val(a);
    end();
}

/* Self-modifying code: the CPU must notice stores into code it already ran (or is about
   to run). The buffer is in .data: with paging off everything is executable. */
static uint8_t code_buf[64] __attribute__((aligned(16)));

static void test_smc(void)
{
    uint32_t (*fn)(void) = (uint32_t (*)(void))(void *)code_buf;
    begin("smc");
    static const uint8_t mov_ret[] = { 0xB8, 0x11, 0x11, 0x11, 0x11, 0xC3 };  /* mov eax; ret */
    memcpy(code_buf, mov_ret, sizeof(mov_ret));
    val(fn());
    code_buf[1] = 0x22;                 /* patch the immediate */
    val(fn());
    code_buf[4] = 0x44;                 /* and its top byte */
    val(fn());
    /* A store into the very next instruction: seen at once on P6 and later.
       movb $0x42, (code_buf+8) ; mov al, 0x11 (imm at code_buf+8) ; ret */
    uint32_t target = (uint32_t)code_buf + 8;
    uint8_t next[] = { 0xC6, 0x05, (uint8_t)target, (uint8_t)(target >> 8),
                       (uint8_t)(target >> 16), (uint8_t)(target >> 24), 0x42,
                       0xB0, 0x11, 0xC3 };
    memcpy(code_buf, next, sizeof(next));
    val(fn() & 0xFF);
    end();
}

/* ======================================================================================
 * kmain
 * ====================================================================================== */
static const struct {
    const char *name;
    void (*fn)(void);
} tests[] = {
    { "alu", test_alu }, { "unary", test_unary }, { "shift", test_shift },
    { "bits", test_bits }, { "bcd", test_bcd }, { "muldiv", test_muldiv },
    { "conditions", test_conditions }, { "loops", test_loops }, { "move", test_move },
    { "atomic", test_atomic }, { "string", test_string }, { "flags", test_flags },
    { "interrupts", test_interrupts }, { "asm", test_asm }, { "system", test_system },
    { "smc", test_smc }, { "io", test_io },
};
#define NTESTS (int)(sizeof(tests) / sizeof(tests[0]))

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    serial_init();
    verbose = strstr(multiboot_cmdline(info), "verbose") != 0;

    gdt_install();
    gdt_set_entry(3, 0, 0xFFFFF, GDT_CODE, GDT_FLAT);                   /* 0x18: code */
    gdt_set_entry(4, (uint32_t)seg_buf - 0x100, 0xFFFFF, GDT_DATA, GDT_FLAT);  /* 0x20 */
    idt_install();
    for (int v = 0; v < 32; v++)
        set_handler(v, unexpected);

    printf("selftest: IA-32 integer instructions, %d tests%s\n", NTESTS,
           verbose ? " (verbose)" : "");
    for (int i = 0; i < NTESTS; i++) {
        test_name = tests[i].name;
        group_name = 0;
        if (st_setjmp(test_jb) == 0)
            tests[i].fn();
        else
            aborted++;                  /* unexpected() printed why */
    }
    printf("selftest: %u groups, %u checks, %d tests aborted, hash %08x\n", total_groups,
           total_checks, aborted, total_hash);
    exit(aborted ? 1 : 0);
}
