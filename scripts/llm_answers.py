"""Run an autointerp command and record every LLM answer it got: the parse-failure rate per
prompt type (explain, detection, fuzzing, simulation, ...) of a real model.

    python scripts/llm_answers.py --out answers.jsonl -- demo --llm vllm:NAME --latents 0:4
    python scripts/llm_answers.py --summarize answers.jsonl [more.jsonl ...]

Every generation (each attempt, re-generations of answers that did not parse included) is
one JSON line in ``--out``: ``kind`` (``attempt``: one generation, its raw ``text``,
``finish_reason``, and ``problem``, why it was not usable, null when it was; ``final``: the
answer the stage got, ``error`` null when usable), ``type`` (the request's stage tag:
``explain``, ``detection``, ``fuzzing``, ``simulation``, ...), ``latent``. Cached answers
are recorded as ``final`` with ``cached`` true. The LAST stdout line is one JSON object:
per type, the answers, the failed ones (``failure_rate``: unusable after every re-try) and
the first generations that were unusable (``first_attempt_failure_rate``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def _type(tags: dict[str, Any]) -> str:
    return str(tags.get("stage", "?")).removeprefix("score:")


def record(out: Path) -> None:
    """Patch the LLM client so that each generation and each final answer is appended."""
    from autointerp.llm import client as client_mod
    from autointerp.llm.base import parse_json

    fh = out.open("a")

    def write(line: dict[str, Any]) -> None:
        fh.write(json.dumps(line) + "\n")
        fh.flush()

    cls = client_mod.LLMClient
    generate, with_retries = cls.generate, cls._with_retries

    async def recorded_generate(self: Any, request: Any) -> Any:
        resp = await generate(self, request)
        write(
            {
                "kind": "final",
                "type": _type(request.tags),
                "latent": request.tags.get("latent"),
                "cached": resp.cached,
                "attempts": resp.attempts,
                "finish_reason": resp.finish_reason,
                "error": resp.error,
                "text": resp.text,
            }
        )
        return resp

    async def recorded_attempt(self: Any, request: Any) -> Any:
        resp = await with_retries(self, request)
        problem = resp.error
        if problem is None and request.json_schema is not None:
            try:
                parsed = resp.parsed or parse_json(resp.text, request.json_schema)
                probe = resp.model_copy(update={"parsed": parsed})
                problem = client_mod._invalid(request, probe)
            except ValueError as e:
                problem = f"unparseable JSON output: {e}"
        elif problem is None:
            problem = client_mod._invalid(request, resp)
        write(
            {
                "kind": "attempt",
                "type": _type(request.tags),
                "latent": request.tags.get("latent"),
                "finish_reason": resp.finish_reason,
                "problem": problem,
                "text": resp.text,
            }
        )
        return resp

    cls.generate, cls._with_retries = recorded_generate, recorded_attempt


def summarize(paths: list[Path]) -> dict[str, Any]:
    finals: dict[str, list[dict[str, Any]]] = defaultdict(list)
    attempts: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for path in paths:
        for raw in path.read_text().splitlines():
            line = json.loads(raw)
            if line["kind"] == "final":
                finals[line["type"]].append(line)
            else:
                attempts[(line["type"], str(line["latent"]))].append(line)
    out: dict[str, Any] = {}
    for kind, rows in sorted(finals.items()):
        fresh = [r for r in rows if not r["cached"]]
        failed = sum(r["error"] is not None for r in fresh)
        tries = [a for (t, _), a in attempts.items() if t == kind for a in a]
        first_bad = sum(r["attempts"] > 1 or r["error"] is not None for r in fresh)
        out[kind] = {
            "answers": len(fresh),
            "failed": failed,
            "failure_rate": round(failed / len(fresh), 4) if fresh else None,
            "generations": len(tries),
            "unusable_generations": sum(a["problem"] is not None for a in tries),
            "first_attempt_failure_rate": round(first_bad / len(fresh), 4) if fresh else None,
            "truncated": sum(a["finish_reason"] == "length" for a in tries),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="JSONL file the answers are appended to")
    p.add_argument("--summarize", type=Path, nargs="*", help="summarize these files only")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- autointerp command and args")
    args = p.parse_args()
    if args.summarize:
        print(json.dumps(summarize(args.summarize)))
        return
    if args.out is None or not args.command:
        p.error("give --out FILE -- COMMAND ARGS (or --summarize FILE ...)")
    command = args.command[1:] if args.command[0] == "--" else args.command
    record(args.out)
    from autointerp.cli import app

    code: object = 0
    try:
        # click returns the exit code of a failed command (one-line error) instead of exiting
        code = app(command, standalone_mode=False)
    finally:
        print(json.dumps(summarize([args.out])))
        sys.stdout.flush()
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
