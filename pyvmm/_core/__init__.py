"""pyvmm's hardware: the IA-32 CPU and guest-physical memory.

Written in Cython's pure-Python mode: when the extension modules are built these names
are compiled code; otherwise the very same `.py` sources run as plain Python.
`load_pure()` returns the uncompiled modules even when compiled ones are installed, so
the two can be run side by side (tests, and the hypervisor's `--pure` mode).
"""
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

from . import cpu, exits, faults, isa, memory

COMPILED = cpu.__file__.endswith((".so", ".pyd"))

_HERE = os.path.dirname(os.path.abspath(__file__))
_PURE_PACKAGE = "pyvmm._core_pure"
_COMPILED_MODULES = ("cpu", "memory")      # the ones setup.py compiles


class _SourceOnlyFinder(importlib.abc.MetaPathFinder):
    """Finds `pyvmm._core_pure.X` as the plain `pyvmm/_core/X.py`, never the extension."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(_PURE_PACKAGE + "."):
            return None
        name = fullname.rsplit(".", 1)[1]
        if name not in _COMPILED_MODULES:
            return None
        source = os.path.join(_HERE, name + ".py")
        if not os.path.exists(source):
            return None
        return importlib.util.spec_from_file_location(
            fullname, source, loader=importlib.machinery.SourceFileLoader(fullname, source))


def load_pure():
    """The uncompiled core as a module namespace with `.cpu` and `.memory`."""
    if _PURE_PACKAGE not in sys.modules:
        sys.meta_path.insert(0, _SourceOnlyFinder())
        spec = importlib.machinery.ModuleSpec(_PURE_PACKAGE, None, is_package=True)
        spec.submodule_search_locations = [_HERE]
        package = importlib.util.module_from_spec(spec)
        sys.modules[_PURE_PACKAGE] = package
        # Plain-Python modules are shared, so both cores raise the same exception classes.
        for name in ("exits", "faults", "isa"):
            sys.modules[f"{_PURE_PACKAGE}.{name}"] = sys.modules[f"{__name__}.{name}"]
    package = sys.modules[_PURE_PACKAGE]
    package.memory = importlib.import_module(_PURE_PACKAGE + ".memory")
    package.cpu = importlib.import_module(_PURE_PACKAGE + ".cpu")
    return package
