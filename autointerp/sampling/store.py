"""Resumable storage of examples: one part file per processed latent range under
``examples/_parts/<hookpoint>/``, merged into ``examples/<hookpoint>.parquet`` after each run."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from autointerp.sampling.schema import SCHEMA

log = logging.getLogger(__name__)
_PART = re.compile(r"part-(\d{7})-(\d{7})(?:-(\d+))?\.parquet$")


class ExampleStore:
    """Part files of one hookpoint, tied to one config hash."""

    def __init__(self, run_dir: Path, dirname: str) -> None:
        self.parts = Path(run_dir) / "examples" / "_parts" / dirname
        self.final = Path(run_dir) / "examples" / f"{dirname}.parquet"
        self.sidecar = Path(run_dir) / "examples" / f"{dirname}.json"
        self.state = self.parts / "state.json"
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._streamed: list[Path] = []

    def open(self, config_hash: str, overwrite: bool) -> None:
        """Create the parts folder, or check that existing parts were built by this config."""
        if self.state.is_file():
            old = json.loads(self.state.read_text()).get("config_hash")
            if old != config_hash and self.part_files():
                if not overwrite:
                    raise ValueError(
                        f"examples in {self.parts} were built with another sample config "
                        f"(hash {old}, now {config_hash}); pass --overwrite (overwrite=True) "
                        "to rebuild them, or restore the old config to resume"
                    )
                log.warning("config changed: removing %s", self.parts)
                shutil.rmtree(self.parts)
        self.parts.mkdir(parents=True, exist_ok=True)
        self.state.write_text(json.dumps({"config_hash": config_hash}))

    def part_files(self) -> list[Path]:
        found = [p for p in self.parts.glob("part-*.parquet") if _PART.search(p.name)]
        return sorted(
            found, key=lambda p: tuple(int(g or 0) for g in _PART.search(p.name).groups())
        )

    def done_latents(self) -> np.ndarray:
        files = self.part_files()
        if not files:
            return np.zeros(0, dtype=np.int64)
        lat = pl.scan_parquet(files).select(pl.col("latent").unique()).collect()["latent"]
        return np.sort(lat.to_numpy().astype(np.int64))

    def write_part(self, df: pl.DataFrame) -> Path:
        """Write one range's rows atomically (a crash leaves no half part)."""
        lo, hi = int(df["latent"].min()), int(df["latent"].max()) + 1
        path, n = self.parts / f"part-{lo:07d}-{hi:07d}.parquet", 0
        while path.exists():
            n += 1
            path = self.parts / f"part-{lo:07d}-{hi:07d}-{n}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        df.select(list(SCHEMA)).write_parquet(tmp, compression="zstd", statistics=True)
        tmp.replace(path)
        return path

    def stream(self, part: Path) -> None:
        """Append a part just written to the final file under construction, while later parts
        are still being built. Only for a run that writes every part, in latent order."""
        if self._writer is None:
            self._schema = pq.read_schema(part)
            self._writer = pq.ParquetWriter(self._tmp(), self._schema, compression="zstd")
        self._writer.write_table(pq.read_table(part, schema=self._schema))
        self._streamed.append(part)

    def close_stream(self) -> bool:
        """Close the streamed final file; True when it holds exactly the current parts."""
        if self._writer is None:
            return False
        self._writer.close()
        self._writer, streamed, self._streamed = None, self._streamed, []
        return streamed == self.part_files()

    def _tmp(self) -> Path:
        return self.final.with_name(self.final.name + ".tmp")

    def finalize(self, info: dict) -> Path:
        """Merge all parts into ``examples/<hookpoint>.parquet`` (sorted by latent)."""
        tmp = self._tmp()
        if self.close_stream():  # this run streamed every part already
            tmp.replace(self.final)
            self.sidecar.write_text(json.dumps(info, indent=2, sort_keys=True))
            return self.final
        files = self.part_files()
        ranges = [tuple(int(g) for g in _PART.search(p.name).groups()[:2]) for p in files]
        disjoint = all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        if not files:
            pl.DataFrame(schema=SCHEMA).write_parquet(tmp, compression="zstd")
        elif disjoint:  # stream part by part: memory of one part
            schema = pq.read_schema(files[0])
            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                for p in files:
                    writer.write_table(pq.read_table(p, schema=schema))
        else:
            df = pl.concat([pl.read_parquet(p) for p in files]).sort("latent", maintain_order=True)
            df.write_parquet(tmp, compression="zstd", statistics=True)
        tmp.replace(self.final)
        self.sidecar.write_text(json.dumps(info, indent=2, sort_keys=True))
        return self.final
