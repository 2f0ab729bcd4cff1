"""Cache stage: sparse activations of a sparse coder as latent-range Parquet shards + stats.

``cache_activations(config)`` builds the cache (streaming, resumable); ``ActivationCache``
reads it back. Files are documented in docs/formats.md.
"""

from autointerp.cache.errors import (
    CacheBudgetError,
    CacheDiskError,
    CacheError,
    CacheMismatchError,
    CacheMissingError,
    CorruptCacheError,
)
from autointerp.cache.reader import ActivationCache
from autointerp.cache.run import cache_activations

__all__ = [
    "ActivationCache",
    "CacheBudgetError",
    "CacheDiskError",
    "CacheError",
    "CacheMismatchError",
    "CacheMissingError",
    "CorruptCacheError",
    "cache_activations",
]
