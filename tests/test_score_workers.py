"""How many scoring processes a run gets (scorers/parallel.py n_workers)."""

from __future__ import annotations

from autointerp.config import load_config
from autointerp.scorers.parallel import n_workers


def test_a_gpu_scorer_chosen_on_the_command_line_keeps_one_process() -> None:
    cfg = load_config(None, {"score.workers": 4, "score.intervention.device": "cuda"})
    assert cfg.score.scorers == ["detection", "fuzzing"]  # --scorers replaces this list
    assert n_workers(cfg, 1000) == 4
    assert n_workers(cfg, 1000, {"detection"}) == 4
    assert n_workers(cfg, 1000, {"detection", "intervention"}) == 1
    hf = load_config(None, {"score.workers": 4, "score.surprisal.backend": "hf"})
    assert n_workers(hf, 1000, ["surprisal"]) == 1
    assert n_workers(hf, 3, ["fuzzing"]) == 3  # never more than one per latent
