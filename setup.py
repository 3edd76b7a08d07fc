"""Builds pyvmm's core (pyvmm/_core) with Cython.

The core is written in Cython's pure-Python mode: each `X.py` has a sibling `X.pxd` giving
C types, so the same source runs uncompiled (see pyvmm._core.load_pure) or compiled here.
"""
from setuptools import Extension, setup
from Cython.Build import cythonize

CORE_MODULES = ["memory", "cpu"]

extensions = [
    Extension(f"pyvmm._core.{name}", [f"pyvmm/_core/{name}.py"],
              extra_compile_args=["-O3", "-fno-strict-aliasing",   # guest RAM is read as bytes and words
                                  "--param", "max-inline-insns-single=600",
                                  "--param", "inline-unit-growth=400",
                                  "-Wno-unused-function", "-Wno-unreachable-code"])
    for name in CORE_MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,     # every guest access is bounds-checked by hand
            "wraparound": False,
            "cdivision": True,        # C semantics for / and %: x86 DIV is unsigned anyway
            "initializedcheck": False,
            "infer_types": True,
        },
    ),
)
