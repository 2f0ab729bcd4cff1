"""Counting a request's tokens the way the judge will: its own tokenizer and chat template when
they are on this machine, otherwise a documented approximation (docs/cost.md)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from autointerp.llm.config import LLMConfig
from autointerp.llm.types import LLMRequest

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4.0  # English prose and code with a modern BPE of 100k-200k entries
MESSAGE_OVERHEAD = 4  # role markers and separators of a chat template, per message
REPLY_OVERHEAD = 3  # the assistant turn's header appended by add_generation_prompt
# Answers are JSON of digits and punctuation, which BPEs split about one token per piece
# (chars / 4 counts a third of their tokens): words, single digits and symbols, whitespace runs.
_PIECES = re.compile(r"[A-Za-z]+|\d|[^\w\s]|\s+")


class TokenCounter:
    """``prompt(request)`` and ``text(s)`` token counts. ``tokenizer``: a transformers
    tokenizer (its chat template is applied to chat requests when it has one), or None for the
    approximation ``ceil(chars / 4)`` per text plus 4 per chat message and 3 for the reply
    (answers: one token per word, digit, symbol or whitespace run)."""

    def __init__(self, tokenizer: Any = None, name: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.name = name or ("approximation: chars/4 + 4 per message" if tokenizer is None else "?")

    @property
    def exact(self) -> bool:
        return self.tokenizer is not None

    def text(self, s: str) -> int:
        if self.tokenizer is None:
            return -(-len(s) // int(CHARS_PER_TOKEN))
        return len(self.tokenizer(s, add_special_tokens=False)["input_ids"])

    def completion(self, s: str) -> int:
        """Tokens of an answer: the tokenizer's count, or one per word / digit / symbol."""
        if self.tokenizer is None:
            return len(_PIECES.findall(s))
        return self.text(s)

    def prompt_ids(self, request: LLMRequest) -> list[int] | None:
        """The prompt's token ids (None for the approximation)."""
        tok = self.tokenizer
        if tok is None:
            return None
        if request.messages:
            msgs = [{"role": m.role, "content": m.content} for m in request.messages]
            if getattr(tok, "chat_template", None):
                out = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
                if isinstance(out, dict) or hasattr(out, "keys"):
                    out = out["input_ids"]
                return list(out)
            ids: list[int] = []
            for m in msgs:
                ids += tok(m["content"], add_special_tokens=False)["input_ids"]
                ids += [0] * MESSAGE_OVERHEAD
            return ids + [0] * REPLY_OVERHEAD
        return list(tok(request.prompt or "", add_special_tokens=True)["input_ids"])

    def prompt(self, request: LLMRequest) -> int:
        ids = self.prompt_ids(request)
        if ids is not None:
            return len(ids)
        if request.messages:
            return (
                sum(self.text(m.content) + MESSAGE_OVERHEAD for m in request.messages)
                + REPLY_OVERHEAD
            )
        return self.text(request.prompt or "")


def counter_for(config: LLMConfig) -> TokenCounter:
    """The judge's tokenizer when it is on this machine: a local model folder or a hub id in
    the local Hugging Face cache (vllm backends, or a `vllm serve` model named by its path);
    otherwise the approximation. Never downloads."""
    name = config.model_name
    if config.backend in ("lexical",):
        return TokenCounter()
    candidates = [name] if config.backend == "vllm" or Path(name).is_dir() else []
    if config.backend == "openrouter" and "/" in name:
        candidates.append(name)  # e.g. meta-llama/llama-3.3-70b-instruct, if cached
    for cand in candidates:
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(cand, local_files_only=True)
        except Exception as e:  # not cached here, or not a tokenizer
            log.debug("no local tokenizer for %s: %s", cand, e)
            continue
        return TokenCounter(tok, name=f"{cand} (its own tokenizer)")
    return TokenCounter()
