"""The ``output`` explainer: explains a latent by what it does to the output. Its prompt shows
the output views (output_views.py: logit lens, and the steering view once the intervention
scorer's pre-pass ran), alone or with the strongest train activating windows
(``explain.output_with_examples``). Views missing for a hookpoint are computed (logit lens
only) on first use and stored. The lexical baseline answers with the top tokens."""

from __future__ import annotations

import json
import threading
from typing import Any

from autointerp import prompts
from autointerp.explainers.base import JSON_SCHEMA, Explainer, row
from autointerp.explainers.parse import ask_explanation, check_explanation
from autointerp.explainers.prompt import activating_windows
from autointerp.llm.client import LLMClient
from autointerp.llm.types import ChatMessage, LLMRequest, SamplingParams
from autointerp.output_views import lens_rows, read_views, write_views
from autointerp.runner.examples import LatentExamples, highlight_mask
from autointerp.text import excerpts, highlight

_LOCK = threading.Lock()


def _line(name: str, tokens: list[str] | None) -> str:
    shown = ", ".join(json.dumps(t, ensure_ascii=False) for t in tokens or [])
    return f"{name}: {shown or '(none)'}"


class OutputExplainer(Explainer):
    name = "output"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self._views: dict[str, dict[int, dict[str, Any]]] = {}

    def _load(self, hookpoint: str, latent: int) -> dict[str, Any]:
        run_dir = self.ctx.run_dir
        if run_dir is None:
            raise ValueError(
                "the output explainer needs the run directory (ExplainContext.run_dir)"
            )
        with _LOCK:
            views = self._views.get(hookpoint) or read_views(run_dir, hookpoint)
            if latent not in views:  # logit lens of every latent of the hookpoint, once
                from autointerp.scorers.intervention_data import cache_meta, load

                meta = cache_meta(run_dir, hookpoint)
                subj = load(meta["model"], meta["coder"], hookpoint, "auto", "auto")
                rows = subj.coder.decoder_rows.detach().float()
                lats = list(range(rows.shape[0]))
                new = lens_rows(hookpoint, lats, subj.model, rows, subj.token_strings)
                write_views(run_dir, hookpoint, [r for r in new if r["latent"] not in views])
                views = read_views(run_dir, hookpoint)
            self._views[hookpoint] = views
        return views[latent]

    async def explain(self, ex: LatentExamples, llm: LLMClient) -> list[dict[str, Any]]:
        view = self._load(ex.hookpoint, ex.latent)
        k = self.config.top_tokens * 2
        text = "\n".join(
            [
                _line("Promoted (logit lens)", (view["lens_top"] or [])[:k]),
                _line("Suppressed (logit lens)", (view["lens_bottom"] or [])[:k]),
                _line("Rising most under steering", (view["steer_top"] or [])[:k]),
            ]
        )
        shown = ""
        if self.config.output_with_examples:
            wins = activating_windows(ex, self.config.n_examples)
            marks = [
                highlight_mask(r["activations_norm"], self.config.highlight_threshold) for r in wins
            ]
            shown = "\nActive in:\n\n" + excerpts(
                [highlight(r["strings"], m) for r, m in zip(wins, marks, strict=True)]
            )
        request = LLMRequest(
            messages=[
                ChatMessage(role="system", content=prompts.text("explain_output_system")),
                ChatMessage(
                    role="user",
                    content=prompts.render("explain_output_user", views=text, examples=shown),
                ),
            ],
            sampling=SamplingParams(
                temperature=self.config.temperature, max_tokens=self.config.max_tokens
            ),
            json_schema=JSON_SCHEMA,
            task={
                "kind": "explain_output",
                "lens_top": view["lens_top"],
                "steer_top": view["steer_top"],
                "top_k": self.config.top_tokens,
            },
            tags={"stage": "explain", "latent": f"{ex.hookpoint}:{ex.latent}"},
            check=check_explanation,
        )
        out, error, response = await ask_explanation(request, llm)
        return [row(ex, self.name, self.ctx, text=out, error=error, response=response)]
