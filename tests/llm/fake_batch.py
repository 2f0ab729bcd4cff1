"""The Batch API of the fake server: ``/v1/files`` (multipart upload, content download) and
``/v1/batches`` (create, retrieve, list). Each created job follows the next scripted plan
(default ``complete``), ends after ``polls`` retrieves, and is answered line by line by the
server's responder, exactly as a live request would be:

- ``complete``: every line answered;
- ``fail``: the job fails validation (no output);
- ``expire``: only the first half answered, status ``expired``;
- ``partial``: every other line fails with a 500 in the error file.
"""

from __future__ import annotations

import email.parser
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BatchState:
    plans: deque[str] = field(default_factory=deque)
    polls: int = 1  # retrieves before a job ends
    files: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls_left: dict[str, int] = field(default_factory=dict)
    plan_of: dict[str, str] = field(default_factory=dict)
    lines_submitted: int = 0  # request lines in every created job

    def script(self, *plans: str) -> None:
        self.plans.extend(plans)


def _multipart_file(headers: dict[str, str], raw: bytes) -> tuple[str, bytes]:
    msg = email.parser.BytesParser().parsebytes(
        f"Content-Type: {headers.get('content-type', '')}\r\n\r\n".encode() + raw
    )
    for part in msg.get_payload():  # type: ignore[union-attr]
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_filename() or "input.jsonl", part.get_payload(decode=True)
    raise ValueError("no file part")


def handle(
    state: BatchState,
    responder: Any,
    body_for: Any,  # (request body, text) -> completion body
    method: str,
    path: str,
    headers: dict[str, str],
    raw: bytes,
) -> tuple[int, bytes] | None:
    """(status, body) for a Batch API route, None for any other path."""
    route = path.split("?")[0]
    now = int(time.time())
    if route == "/v1/files" and method == "POST":
        name, data = _multipart_file(headers, raw)
        fid = f"file-{len(state.files) + 1}"
        state.files[fid] = data
        obj = {
            "id": fid,
            "object": "file",
            "bytes": len(data),
            "created_at": now,
            "filename": name,
            "purpose": "batch",
            "status": "processed",
        }
        return 200, json.dumps(obj).encode()
    if route.startswith("/v1/files/") and route.endswith("/content"):
        fid = route.split("/")[3]
        return (200, state.files[fid]) if fid in state.files else (404, b'{"error": {}}')
    if route == "/v1/batches" and method == "POST":
        req = json.loads(raw)
        bid = f"batch_{len(state.jobs) + 1}"
        n = len(state.files[req["input_file_id"]].splitlines())
        state.lines_submitted += n
        state.jobs[bid] = {
            "id": bid,
            "object": "batch",
            "endpoint": req["endpoint"],
            "input_file_id": req["input_file_id"],
            "completion_window": req["completion_window"],
            "status": "in_progress",
            "created_at": now,
            "metadata": req.get("metadata"),
            "output_file_id": None,
            "error_file_id": None,
            "errors": None,
            "request_counts": {"total": n, "completed": 0, "failed": 0},
        }
        state.polls_left[bid] = state.polls
        state.plan_of[bid] = state.plans.popleft() if state.plans else "complete"
        return 200, json.dumps(state.jobs[bid]).encode()
    if route == "/v1/batches" and method == "GET":
        data = list(reversed(state.jobs.values()))
        return 200, json.dumps({"object": "list", "data": data, "has_more": False}).encode()
    if route.startswith("/v1/batches/") and method == "GET":
        bid = route.split("/")[3]
        job = state.jobs.get(bid)
        if job is None:
            return 404, b'{"error": {"message": "no such batch"}}'
        if job["status"] == "in_progress":
            state.polls_left[bid] -= 1
            if state.polls_left[bid] <= 0:
                _finish(state, job, responder, body_for)
        return 200, json.dumps(job).encode()
    return None


def _finish(state: BatchState, job: dict[str, Any], responder: Any, body_for: Any) -> None:
    plan = state.plan_of[job["id"]]
    if plan == "fail":
        job["status"] = "failed"
        job["errors"] = {
            "object": "list",
            "data": [{"code": "invalid_request", "message": "scripted failure"}],
        }
        return
    lines = [json.loads(x) for x in state.files[job["input_file_id"]].splitlines() if x.strip()]
    out, err = [], []
    for i, line in enumerate(lines):
        if plan == "expire" and i >= len(lines) // 2:
            continue
        if plan == "partial" and i % 2 == 1:
            err.append(
                {
                    "id": f"r{i}",
                    "custom_id": line["custom_id"],
                    "response": {"status_code": 500, "body": {"error": {"message": "boom"}}},
                    "error": None,
                }
            )
            continue
        body = body_for(line["body"], responder(line["body"]))
        out.append(
            {
                "id": f"r{i}",
                "custom_id": line["custom_id"],
                "response": {"status_code": 200, "request_id": f"q{i}", "body": body},
                "error": None,
            }
        )
    for kind, rows in (("output_file_id", out), ("error_file_id", err)):
        if rows:
            fid = f"file-{len(state.files) + 1}"
            state.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
            job[kind] = fid
    job["status"] = "expired" if plan == "expire" else "completed"
    job["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
