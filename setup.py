"""Build step for the one native part of mptcpkit: the `mptcpkit run` LD_PRELOAD shim.

Metadata lives in pyproject.toml. This file only compiles src/mptcpkit/tools/csrc/*.c with the system
C compiler into `mptcpkit/tools/libmptcpwrap.so` (in place for `pip install -e .`, into the wheel otherwise).
The build is optional: without a compiler the install still succeeds and `mptcpkit run` compiles the shim on
first use into a cache directory (or explains what is missing).
"""

from __future__ import annotations

import os
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SHIM_MODULE = "mptcpkit.tools.libmptcpwrap"
SHIM_FILE = "libmptcpwrap.so"


class BuildShim(build_ext):
    """Name the shared object plainly (no CPython ABI tag): it is a C library, not a Python module."""

    def get_ext_filename(self, fullname: str) -> str:
        filename = str(super().get_ext_filename(fullname))
        # distutils passes either the dotted name or only its last component.
        if fullname in (SHIM_MODULE, SHIM_MODULE.rsplit(".", 1)[-1]):
            return os.path.join(os.path.dirname(filename), SHIM_FILE)
        return filename

    def get_export_symbols(self, ext: Extension) -> list[str]:
        # No PyInit_* symbol: this library is loaded by the dynamic linker, never imported.
        return []


setup(
    ext_modules=[
        Extension(
            SHIM_MODULE,
            sources=sorted(glob("src/mptcpkit/tools/csrc/*.c")),
            extra_compile_args=["-O2", "-Wall", "-fvisibility=default"],
            libraries=["dl"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildShim},
)
