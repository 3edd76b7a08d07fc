# C types for cpu.py (Cython pure-Python mode). Locals are typed in cpu.py by annotation.
cimport cython
from pyvmm._core.memory cimport PhysicalMemory

from libc.stdint cimport int64_t

cdef unsigned int MASK32, SIGN32, MASK16, ARITH_FLAGS, POPF_MASK
cdef unsigned long long NO_UNTIL, SIGN64
cdef bint HOST_LITTLE_ENDIAN
cdef unsigned int KEEP_HIGH16, KEEP_HIGH24, KEEP_NOT_AH, TOP_BYTE, PAGE_FRAME, LARGE_FRAME
cdef unsigned int PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PTE_PS, PTE_G, TLB_NOEXEC
cdef unsigned int NPT_R, NPT_W, NPT_X, NPT_PS
cdef unsigned int CR0_PE, CR0_TS, CR0_WP, CR0_PG, CR4_TSD, CR4_DE, CR4_PSE, CR4_PGE
cdef unsigned int F_CF, F_PF, F_AF, F_ZF, F_SF, F_TF, F_IF, F_DF, F_OF, F_IOPL, F_NT, F_RF, F_VM
cdef int CC_EAGER, CC_ADD, CC_ADC, CC_SUB, CC_SBB, CC_LOGIC, CC_INC, CC_DEC
cdef int ES, CS, SS, DS, FS, GS
cdef int DEC_IMM_MASK, DEC_MODRM, DEC_VALID, DEC_MEMONLY, DEC_LOCK
cdef int IMM_NONE, IMM_B, IMM_W, IMM_Z, IMM_MOFFS, IMM_PTR, IMM_ENTER
cdef int EXIT_COUNT, EXIT_UNTIL, EXIT_HLT, EXIT_EXCEPTION, EXIT_TRIPLE_FAULT, EXIT_UNMAPPED, EXIT_REQUEST
cdef int EXIT_UNSUPPORTED, EXIT_INTERRUPT, EXIT_VMEXIT
cdef unsigned int CTL_INTR_WINDOW, CTL_HLT, CTL_INVLPG, CTL_RDTSC, CTL_CR3_LOAD, CTL_CR3_STORE, CTL_MOV_DR, CTL_IO, CTL_MSR
cdef int VMX_INTR_WINDOW, VMX_CPUID, VMX_HLT, VMX_INVLPG, VMX_RDTSC, VMX_VMCALL, VMX_CR_ACCESS, VMX_MOV_DR, VMX_IO, VMX_RDMSR, VMX_WRMSR
cdef int VMX_EPT_VIOLATION, VMX_EPT_MISCONFIG
cdef int DE, DB, BP, OF_, BR, UD, NM, DF_, TS, NP, SS_, GP, PF

# One decoded instruction (the decoder's output; the decode cache holds copies).
cdef struct Decoded:
    unsigned int tag                     # cache key: linear address of the first byte,
    unsigned int ppage                   #   the physical page it came from,
    unsigned int gen                     #   and that page's generation then
    unsigned int disp, imm, imm2         # displacement; immediate; second immediate (ENTER, ptr)
    unsigned short op                    # opcode, 0x100 | second byte for 0F xx
    unsigned char len, opsize, adsize    # length in bytes; operand and address size (2 or 4)
    unsigned char rep, lock              # 1 = REP/REPE, 2 = REPNE; LOCK prefix
    unsigned char mod, reg, rm           # ModRM fields (mod 3 when there is none)
    unsigned char scale, ea_seg          # SIB scale; segment of the memory operand
    signed char seg, base, index         # segment override; base and index registers (-1: none)

@cython.final
cdef class CPU:
    # -- architectural state -------------------------------------------------------------
    cdef unsigned int regs[8]
    cdef public unsigned int eip
    cdef unsigned int eflags             # arithmetic bits valid only when cc_op == CC_EAGER
    cdef unsigned short seg_sel[6]
    cdef unsigned int seg_base[6]
    cdef unsigned int seg_limit[6]       # byte-granular limit
    cdef unsigned int seg_attr[6]        # descriptor bits 8-23 of the high dword (type..G)
    cdef unsigned int seg_lo[6]          # lowest valid offset (expand-down segments)
    cdef unsigned int seg_hi[6]          # highest valid offset
    cdef unsigned char seg_rd[6]         # usable for reads
    cdef unsigned char seg_wr[6]         # usable for writes
    cdef public unsigned int gdtr_base, gdtr_limit, idtr_base, idtr_limit
    cdef public unsigned int cr0, cr2, cr3, cr4
    cdef public unsigned int dr0, dr1, dr2, dr3, dr7
    cdef public bint paging               # CR0.PG, cached for the memory path
    cdef public bint protected            # CR0.PE: protected mode (else real mode)
    # Software TLB: direct-mapped, 256 entries, for linear page -> physical page
    cdef unsigned int tlb_lin[256]        # linear page number + 1 (0: empty)
    cdef unsigned int tlb_phys[256]       # physical page number
    cdef unsigned int tlb_flags[256]      # effective R/W, U/S; D already set; G; TLB_NOEXEC
    cdef public unsigned long long tlb_hits     # translations the TLB answered
    cdef public unsigned long long tlb_misses   # page walks (TLB fills)
    cdef public unsigned long long walk_refs    # paging-structure entries read by walks
    cdef public unsigned long long cr3_loads    # MOV to CR3 executed
    cdef public int cpl
    cdef bint code32                     # CS.D: default operand and address size 32
    cdef bint cs_flat                    # CS covers 4 GiB from 0: fetches need no limit check
    cdef bint stack32                    # SS.B: ESP (not SP) is the stack pointer
    cdef public unsigned long long icount
    cdef bint is_halted                   # after HLT (the `halted` property)
    cdef bint intr_pending                # INTR (the `intr_line` property)
    cdef bint attention                   # intr_pending or is_halted: the loop looks closer
    cdef public object intr_acknowledge   # callable() -> vector: the INTA cycle
    cdef public bint apic_present         # CPUID reports a local APIC (the machine has one)
    cdef public unsigned int apic_base    # IA32_APIC_BASE
    cdef public unsigned long long tsc_offset   # TSC = icount + tsc_offset (WRMSR 0x10)
    cdef public unsigned long long inhibit_at   # STI / MOV SS shadow: that instruction can't be interrupted
    cdef public unsigned long long interrupts   # external interrupts taken

    # -- lazy arithmetic flags ---------------------------------------------------------------
    cdef int cc_op
    cdef int cc_size                     # 1, 2 or 4 bytes
    cdef unsigned int cc_a, cc_b, cc_res, cc_cf

    # -- the instruction being executed (decoder output) -----------------------------------
    cdef Decoded cur
    cdef unsigned int i_start            # EIP of its first byte
    cdef unsigned int i_esp              # ESP before it: restored when it faults
    cdef unsigned char dec_table[4096]
    # Decode cache: direct-mapped by linear address; an entry is valid while its physical
    # page's generation (memory.page_gen) is unchanged, i.e. nobody wrote to that code.
    cdef Decoded dcache[4096]
    cdef public unsigned long long decode_misses

    # -- instruction fetch: the code page last used ----------------------------------------------
    cdef unsigned int fetch_page         # linear page number + 1 (0 = none)
    cdef int fetch_frame
    cdef unsigned int fetch_ppage        # guest-physical page number of fetch_page
    cdef bint fetch_fast                 # the whole 15-byte window is on one page, in limit
    cdef unsigned int fetch_base         # RAM offset of i_start when fetch_fast

    # -- outside world -----------------------------------------------------------------------------
    cdef public PhysicalMemory mem
    cdef public object io                # object with read(port, size) / write(port, size, value)
    cdef public unsigned int exception_intercept   # bitmap: vectors that stop the run instead
    cdef public bint interrupt_exiting   # external interrupts stop the run (EXIT_INTERRUPT)
    # -- guest mode (VMX non-root operation): a VMCS's controls and exit information ----------
    cdef public bint guest_mode          # CPUID and VMCALL exit; vm_controls apply
    cdef public bint cpuid_faulting      # CPUID at CPL > 0 raises #GP (MSR 0x140 bit 0 on Intel)
    cdef public unsigned int vm_controls # VM-execution controls (CTL_*, Intel SDM bit positions)
    cdef public unsigned int exit_reason, exit_qualification, exit_instruction_length
    cdef public unsigned int guest_physical_address, guest_linear_address   # EPT exits
    cdef public int idt_vectoring        # the event whose delivery an exit interrupted, else -1
    cdef bint nested                     # nested paging on (the nested_paging property)
    cdef public unsigned int nested_root # host-physical nested page directory (VT-x: EPTP)
    cdef public unsigned int cr0_mask, cr0_read_shadow, cr4_mask, cr4_read_shadow  # VMCS
    cdef unsigned int nested_last_rights # R/W/X of the last nested translation
    cdef public object last_exit         # detail of the last exit (fault, ...)
    cdef public unsigned int hypervisor_leaf_ebx, hypervisor_leaf_ecx, hypervisor_leaf_edx
    cdef unsigned long long until       # stop when EIP equals it (NO_UNTIL: never)
    cdef public int exit_request         # EXIT_REQUEST once the current instruction is done

    cdef public unsigned int ldtr_sel, ldtr_base, ldtr_limit
    cdef public unsigned int tr_sel, tr_base, tr_limit, tr_attr
    cdef int supervisor_access           # > 0: accesses are supervisor-mode (GDT, IDT, TSS)
    cdef unsigned int d_lo, d_hi, d_addr   # the descriptor last read (read_descriptor)
    cdef int soft_vector                 # INT n/INT3/INTO being delivered, else -1
    cdef bint entered_handler            # an interrupt or exception handler was entered
    cdef public bint pending_debug       # a single-step #DB due before the next instruction
    cdef public unsigned int dr6         # debug status (BS: single-step)

    # -- memory path ----------------------------------------------------------------------
    cdef int fault(self, int vector, long long error_code) except -1
    cdef int64_t seg_check(self, int seg, unsigned int off, int size, bint write) except -1
    cdef int phys_frame(self, unsigned int pa, int size, bint write) except -2
    cdef inline int64_t phys_read(self, unsigned int pa, int size) except -1
    @cython.locals(device=object)
    cdef int64_t phys_read_slow(self, unsigned int pa, int size) except -1
    cdef inline int phys_write(self, unsigned int pa, int size, unsigned int value) except -1
    @cython.locals(device=object)
    cdef int phys_write_slow(self, unsigned int pa, int size, unsigned int value) except -1
    cdef inline int64_t lin_read(self, unsigned int lin, int size) except -1
    cdef inline int lin_write(self, unsigned int lin, int size, unsigned int value) except -1
    cdef inline int64_t read(self, int seg, unsigned int off, int size) except -1
    cdef inline int write(self, int seg, unsigned int off, int size, unsigned int value) except -1
    cdef int fetch8(self) except -1
    @cython.locals(first=cython.uint, second=cython.uint, v=cython.uint, n=cython.int, i=cython.int)
    cdef int64_t lin_read_split(self, unsigned int lin, int size) except -1
    cdef int64_t lin_read_rmw(self, unsigned int lin, int size) except -1
    cdef int exec_load_far_pointer(self, int seg) except -1
    cdef int probe_write(self, unsigned int lin, int size) except -1
    @cython.locals(first=cython.uint, second=cython.uint, n=cython.int, i=cython.int)
    cdef int lin_write_split(self, unsigned int lin, int size, unsigned int value) except -1
    @cython.locals(user=cython.bint)
    cdef int64_t translate(self, unsigned int lin, bint write) except -1
    @cython.locals(new=cython.uint, new_pte=cython.uint)
    cdef int64_t page_walk(self, unsigned int lin, bint write, bint fetch) except -1
    cdef int64_t translate_fetch(self, unsigned int lin) except -1
    cdef int64_t nested_translate(self, unsigned int gpa, unsigned int lin, int access, bint final) except -1
    @cython.locals(qual=cython.uint)
    cdef int nested_exit(self, int reason, unsigned int gpa, unsigned int lin, int access, bint final,
                         unsigned int rights) except -1
    cdef bint access_ok(self, unsigned int rights, bint write, bint user) noexcept
    cdef int page_fault(self, unsigned int lin, unsigned int err) except -1
    cdef unsigned int guest_cr0(self) noexcept
    cdef void flush_tlb(self, bint keep_global) noexcept
    cdef void invlpg(self, unsigned int lin) noexcept

    # -- registers and flags --------------------------------------------------------------
    cdef inline unsigned int get_reg(self, int size, int r) noexcept
    cdef inline void set_reg(self, int size, int r, unsigned int v) noexcept
    cdef inline unsigned int flag_cf(self) noexcept
    cdef void materialize(self) noexcept
    cdef unsigned int get_eflags(self) noexcept
    cdef void set_eflags(self, unsigned int value, unsigned int mask) noexcept
    cdef void set_szp(self, unsigned int res, int size) noexcept
    @cython.locals(m=cython.uint, k=cython.int)
    cdef bint cond(self, int cc) noexcept
    @cython.locals(f=cython.uint, k=cython.int, r=bint)
    cdef bint cond_slow(self, int cc) noexcept

    # -- decode ---------------------------------------------------------------------------
    cdef bint in_cs_limit(self, unsigned int length) noexcept
    cdef void decode_insert(self, unsigned int lin) noexcept
    cdef inline int decode(self) except -1
    @cython.locals(size=cython.int)
    cdef int decode_bytes(self, unsigned int lin) except -1
    cdef int decode_modrm(self) except -1
    cdef inline unsigned int ea(self) noexcept
    cdef inline int64_t read_rm(self, int size) except -1
    cdef inline int write_rm(self, int size, unsigned int v) except -1
    cdef int push(self, int size, unsigned int v) except -1
    cdef int64_t pop(self, int size) except -1

    # -- execute ---------------------------------------------------------------------------
    @cython.locals(form=cython.int, aop=cython.int)
    cdef int execute(self) except -1
    cdef int execute_other(self, int op) except -1
    @cython.locals(tsc=cython.ulonglong)
    cdef int execute_0f(self) except -1
    cdef unsigned int alu(self, int op, unsigned int a, unsigned int b, int size) noexcept
    cdef inline unsigned int incdec(self, unsigned int a, int size, bint dec) noexcept
    cdef int exec_cmpxchg(self, int size) except -1
    cdef int exec_xadd(self, int size) except -1
    cdef int exec_cmpxchg8b(self) except -1
    cdef int exec_group2(self, int size, unsigned int count) except -1
    @cython.locals(f=cython.uint)
    cdef unsigned int shift(self, int op, unsigned int v, unsigned int count, int size) noexcept
    cdef int exec_shld(self, bint right, unsigned int count) except -1
    cdef int exec_bit(self, int op, int size, long long offset) except -1
    @cython.locals(out=cython.uint[8])
    cdef int exec_popa(self, int size) except -1
    @cython.locals(f=cython.uint)
    cdef int imul_flags(self, long long full, int size) except -1
    cdef int exec_imul2(self, unsigned int a, unsigned int b) except -1
    cdef int exec_group3(self, int size) except -1
    @cython.locals(f=cython.uint)
    cdef int exec_muldiv(self, int op, int size, unsigned int src) except -1
    @cython.locals(m=cython.uint)
    cdef void write_double(self, int size, unsigned long long p) noexcept
    cdef void write_quot_rem(self, int size, unsigned int q, unsigned int rem) noexcept
    cdef int exec_group5(self) except -1
    @cython.locals(old_al=cython.uint, ncf=cython.uint, naf=cython.uint, ax=cython.uint)
    cdef int exec_bcd(self, int op) except -1
    cdef int exec_string(self, int op) except -1
    cdef int string_once(self, int op, int size) except -1
    cdef int io_allowed(self, unsigned int port, int size) except -1
    cdef int64_t port_in(self, unsigned int port, int size) except -1
    cdef int port_out(self, unsigned int port, int size, unsigned int value) except -1
    cdef int exec_io(self, int op) except -1
    cdef int exec_enter(self) except -1
    @cython.locals(v=cython.uint)
    cdef int exec_system_0f01(self) except -1
    cdef int exec_cpuid(self) except -1
    @cython.locals(tsc=cython.ulonglong)
    cdef int exec_msr(self, bint write) except -1
    @cython.locals(n=cython.int, v=cython.uint)
    cdef int exec_mov_control(self, int op) except -1
    @cython.locals(ok=cython.bint)
    cdef int exec_system_0f00(self) except -1
    cdef int exec_lar_lsl(self, bint lsl) except -1
    cdef bint probe_descriptor(self, unsigned int sel) except -1
    cdef unsigned int descriptor_limit(self, unsigned int lo, unsigned int hi) noexcept
    cdef int write_cr0(self, unsigned int v) except -1
    cdef int jump_near(self, unsigned int target) except -1

    # -- segments and descriptor tables --------------------------------------------------------
    @cython.locals(present=cython.int)
    cdef int load_seg_cache(self, int seg, unsigned int sel, unsigned int lo, unsigned int hi) noexcept
    @cython.locals(attr=cython.uint, typ=cython.uint, present=cython.int)
    cdef int set_seg_access(self, int seg) noexcept
    cdef void load_null_seg(self, int seg, unsigned int sel) noexcept
    cdef int read_descriptor(self, unsigned int sel, unsigned int ext) except -1
    cdef int read_descriptor_for(self, unsigned int sel, unsigned int ext, int vector) except -1
    cdef int set_accessed(self) except -1
    cdef int load_data_seg(self, int seg, unsigned int sel) except -1
    cdef int load_real_seg(self, int seg, unsigned int sel) except -1
    @cython.locals(limit=cython.uint)
    cdef int64_t code_descriptor_checks(self, unsigned int sel, int rpl_limit, unsigned int ext) except -1
    cdef int far_return(self, int opsize, unsigned int extra) except -1
    cdef int iret(self, int opsize) except -1
    cdef void release_stack(self, unsigned int count) noexcept
    @cython.locals(seg=cython.int)
    cdef int return_to(self, unsigned int sel, unsigned int new_eip, int opsize, unsigned int extra) except -1
    cdef void set_cpl(self, int cpl) noexcept
    @cython.locals(old_cpl=cython.int)
    cdef int switch_stack_inward(self, int new_cpl, unsigned int ext, int psize, unsigned int flags) except -1
    cdef object enter_inner_stack(self, int new_cpl, unsigned int ext)
    @cython.locals(typ=cython.uint)
    cdef int far_jump(self, unsigned int sel, unsigned int offset, bint call, int opsize) except -1
    @cython.locals(cs_lo=cython.uint, cs_hi=cython.uint, cs_addr=cython.uint, new_cpl=cython.int,
                   old_ss=cython.uint, old_esp=cython.uint, old_cpl=cython.int)
    cdef int through_call_gate(self, unsigned int gate_sel, bint call) except -1

    # -- exceptions and the run loop -----------------------------------------------------------------
    @cython.locals(new_cpl=cython.int)
    cdef int deliver(self, int vector, long long error_code, bint software) except -1
    cdef int soft_exception(self, int vector) except -1
    cdef int deliver_real(self, int vector) except -1
    cdef int raise_exception(self, int vector, long long error_code) except -1
    @cython.locals(vector=cython.int, esp=cython.uint)
    cdef int interrupt_window(self) except -1
    cdef int single_step_trap(self) except -1
    cdef void set_halted(self, bint halted) noexcept
    @cython.locals(r=cython.int, tf=cython.uint)
    cdef int run_inner(self, unsigned long long limit) except -1
    @cython.locals(r=cython.int)
    cpdef int run(self, unsigned long long max_instructions) except -1
