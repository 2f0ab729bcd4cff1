"""Compare two runs (or two hookpoints): latent matching by decoder direction or activation
correlation, explanation similarity of matched pairs, orphans. Files in docs/compare.md."""

from autointerp.compare.matching import Matching, Similarity, decoder_similarity, match
from autointerp.compare.run import CompareConfig, CompareResult, compare_runs

__all__ = [
    "CompareConfig",
    "CompareResult",
    "Matching",
    "Similarity",
    "compare_runs",
    "decoder_similarity",
    "match",
]
