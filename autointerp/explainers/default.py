"""The one-shot explainers: ``default`` (highlighted activating windows) and ``contrastive``
(the same plus silent look-alike windows), and the offline ``token-list`` baseline."""

from __future__ import annotations

from typing import Any

from autointerp.explainers.base import Explainer, row
from autointerp.explainers.parse import ask_explanation
from autointerp.explainers.prompt import explain_request
from autointerp.llm.client import LLMClient
from autointerp.runner.examples import LatentExamples


class DefaultExplainer(Explainer):
    name = "default"
    contrastive = False
    contrast_kinds: tuple[str, ...] = ("similar", "neighbour")

    async def explain(self, ex: LatentExamples, llm: LLMClient) -> list[dict[str, Any]]:
        request = explain_request(
            ex, self.config, self.contrastive, contrast_kinds=self.contrast_kinds
        )
        text, error, response = await ask_explanation(request, llm)
        return [row(ex, self.name, self.ctx, text=text, error=error, response=response)]


class ContrastiveExplainer(DefaultExplainer):
    name = "contrastive"
    contrastive = True


class TokenListExplainer(DefaultExplainer):
    """The latent's most distinctive activating tokens against its train contrast windows,
    from the lexical backend: no LLM. A baseline every LLM explanation should beat."""

    name = "token-list"
    backend = "lexical"
    contrastive = True
    contrast_kinds = ("similar", "neighbour", "random")
