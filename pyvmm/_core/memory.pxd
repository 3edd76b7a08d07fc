# C types for memory.py (Cython pure-Python mode).
cimport cython

cdef unsigned int PAGE_SHIFT
cdef unsigned int PAGE_MASK


@cython.final
cdef class PhysicalMemory:
    cdef public object backing          # bytearray holding every mapped frame
    cdef unsigned char[::1] ram         # typed view of `backing`: the hot path reads this
    cdef int[::1] frame_of_page         # guest page number -> frame in `backing`, or -1
    cdef object _frame_table            # array('i') behind frame_of_page
    cdef unsigned int[::1] page_gen      # bumped when a page holding decoded code is written
    cdef unsigned long long[::1] code_chunks   # per page: 64-byte chunks holding decoded code
    cdef object _gen_table, _code_table
    cdef public unsigned int frames     # frames allocated in `backing`
    cdef public object regions          # [(start, size)] as mapped, for reports
    cdef public dict mmio               # page number -> device with mmio_read / mmio_write

    cpdef bint is_mapped(self, unsigned long long address)
    cpdef void code_written(self, unsigned int page) noexcept
