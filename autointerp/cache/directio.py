"""Write-once files without the page cache: direct I/O from and into reused aligned buffers.

The cache's spill files are written once and read once, and its part files are written once:
through the page cache, every byte costs the kernel a fresh page (measured on the 2-core
machine: ~3 ns of system CPU a byte written to a new file, as much as lz4-compressing it),
while ``O_DIRECT`` moves it from the process's own buffer at ~0.05 ns a byte. Buffers are
page-aligned (mmap), kept and reused, so the process faults their pages in once.

Where ``O_DIRECT`` is refused (tmpfs, some network file systems, no such flag) or turned off
(``AUTOINTERP_DIRECT_IO=0``), the same bytes go through ordinary writes and reads.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
from pathlib import Path

import numpy as np

ALIGN = 4096  # offsets and sizes of direct transfers: a multiple of any logical block size
DIRECT_IO_ENV = "AUTOINTERP_DIRECT_IO"
_O_DIRECT = getattr(os, "O_DIRECT", 0)


def round_up(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


def direct_enabled() -> bool:
    return bool(_O_DIRECT) and os.environ.get(DIRECT_IO_ENV, "1") != "0"


class AlignedBuffer:
    """A growable page-aligned byte buffer; ``get(n)`` returns its first ``n`` bytes (reused)."""

    def __init__(self) -> None:
        self._map: mmap.mmap | None = None
        self._array = np.empty(0, np.uint8)

    def get(self, nbytes: int) -> np.ndarray:
        if nbytes > len(self._array):
            self.release()
            size = round_up(max(nbytes, 1) + nbytes // 8, 2 << 20)  # some room to grow
            self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if hasattr(mmap, "MADV_HUGEPAGE"):  # fewer, cheaper page faults where allowed
                with contextlib.suppress(OSError):
                    self._map.madvise(mmap.MADV_HUGEPAGE)
            self._array = np.frombuffer(self._map, np.uint8)
        return self._array[:nbytes]

    def typed(self, n: int, dtype: np.dtype | type) -> np.ndarray:
        """The first ``n`` items of the buffer viewed as ``dtype``."""
        size = np.dtype(dtype).itemsize
        return self.get(n * size).view(dtype)

    def release(self) -> None:
        self._array = np.empty(0, np.uint8)
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a view is alive: unmapped when it goes
                self._map.close()
            self._map = None


def write_file(path: Path, data: np.ndarray, size: int) -> None:
    """Write ``data[:size]`` to ``path`` through a temp file and a rename (all or nothing).

    ``data`` is an aligned buffer (``AlignedBuffer.get``) of at least ``round_up(size)``
    bytes; the bytes past ``size`` are written then cut off by a truncate.
    """
    from autointerp.cache.layout import tmp_path

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    if not (direct_enabled() and _write_direct(tmp, data, size)):
        with open(tmp, "wb") as fh:
            fh.write(memoryview(data[:size]))
    os.replace(tmp, path)


def _write_direct(tmp: Path, data: np.ndarray, size: int) -> bool:
    padded = round_up(size)
    if len(data) < padded:
        return False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_DIRECT, 0o644)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    try:
        view = memoryview(data[:padded])
        done = 0
        while done < padded:
            done += os.write(fd, view[done:])
        if padded != size:
            os.ftruncate(fd, size)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False
    finally:
        os.close(fd)
    return True


class Reader:
    """A file opened for reads at aligned offsets, direct where the file system allows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        self.direct = False
        if direct_enabled():
            try:
                self.fd = os.open(path, os.O_RDONLY | _O_DIRECT)
                self.direct = True
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        if self.fd < 0:
            self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size

    def read_into(self, offset: int, out: np.ndarray) -> int:
        """Fill ``out`` (aligned, a multiple of ``ALIGN`` long when direct) from ``offset``;
        returns the bytes read (fewer at the end of the file)."""
        view = memoryview(out)
        done = 0
        while done < len(view):
            try:
                n = os.preadv(self.fd, [view[done:]], offset + done)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self.direct:
                    raise
                self._reopen_buffered()
                continue
            if n == 0:
                break
            done += n
        return done

    def _reopen_buffered(self) -> None:
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDONLY)
        self.direct = False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
