"""The C allocator tuned for release uploads: request bodies of megabytes kept in the heap
rather than mapped and unmapped each time.

glibc maps every allocation above its (sliding) threshold afresh and the kernel zeroes each
new page on first touch; the hub builds a body of up to 16 MiB per chunk batch, and that
page-faulting cost it more CPU than hashing the bytes did (measured: the hub's CPU per MB
received fell by a third). Big blocks are kept once freed, up to ``TRIM_BYTES`` at the top
of each heap, so the hub's resident memory stays that much higher after an upload.
"""

from __future__ import annotations

import ctypes
import logging

logger = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest allowed on 64-bit
TRIM_BYTES = 64 * 1024 * 1024
_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3


def keep_big_buffers() -> bool:
    """Raise the allocator's map and trim thresholds; False where the C library is not
    glibc (nothing changes there)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    done = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES)) and done
    logger.debug("allocator thresholds %s", "raised" if done else "left as they were")
    return done
