"""Give freed heap memory back to the operating system (glibc ``malloc_trim``).

A leaf module (it imports nothing from the package), so that the sparse input products of the ADMM
engine and the memory planning in :mod:`admm_snn.resources` can both use it without importing each other.
"""

from __future__ import annotations

_LIBC = None


def release_free_heap() -> None:
    """glibc's ``malloc_trim(0)``: give the pages of freed heap memory back to the system (freed
    temporaries between kept allocations otherwise stay resident). Nothing where there is no glibc."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes
            import ctypes.util
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 - raises AttributeError where there is no glibc
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)
