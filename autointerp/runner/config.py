"""The ``execution`` section of ``run.yaml``: where the fanned-out stages run their shards
(explain, score: latent ranges; cache on Ray: token ranges and shard merges). See docs/scale.md."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ExecutionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    engine: Literal["local", "ray"] = Field(
        "local",
        description="'local': worker processes on this machine; 'ray': Ray tasks on a cluster "
        "(needs the ray extra and a run directory every node sees at the same path)",
    )
    ray_address: str | None = Field(
        None,
        description="Ray cluster to join: 'auto' (the one this machine is part of), "
        "'ray://host:10001', or None (a local single-machine Ray)",
    )
    workers: int | None = Field(
        None,
        gt=0,
        description="shards worked on at once: processes (local) or Ray tasks (ray). Default: "
        "local, one per CPU core (at most 4) with >= 128 latents each; ray, the cluster's CPUs "
        "(the cache stage on GPUs: the cluster's GPUs). "
        "score.workers, when set, wins for the score stage",
    )
    shards_per_worker: int = Field(
        4,
        gt=0,
        description="Ray only: latent-range shards per worker (smaller shards: finer progress, "
        "less redone when a node is lost)",
    )
    task_retries: int = Field(2, ge=0, description="Ray only: retries of a task whose node died")
