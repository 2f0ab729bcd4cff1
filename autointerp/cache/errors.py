"""One-line errors of the cache stage: each names the problem and the fix."""

from __future__ import annotations

from pathlib import Path


class CacheError(ValueError):
    """A cache that cannot be built or read as asked."""


class CorruptCacheError(CacheError):
    """A truncated or garbled file inside a cache directory."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        super().__init__(
            f"cache file {path} is corrupt ({reason}); delete it and run the same "
            "`autointerp cache` command again to rebuild it"
        )


class CacheMismatchError(CacheError):
    """A run directory already holds a cache made with a different configuration."""


class CacheMissingError(CacheError):
    """No complete cache where one was expected."""


class CacheBudgetError(CacheError):
    """``cache.max_memory_gb`` cannot hold what the stage needs at the least (one batch)."""


class CacheDiskError(CacheError):
    """The file system of the run directory cannot hold the cache at its peak."""
