"""Text sources and token windows."""

from __future__ import annotations

import json
import logging
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from autointerp.config import DatasetConfig
from autointerp.data.dataset import DatasetError, hub_texts, iter_texts, iter_windows


class WordTokenizer:
    """Token id = word length; no BOS, EOS = 0 (or none)."""

    bos_token_id = None

    def __init__(self, eos: int | None = 0) -> None:
        self.eos_token_id = eos

    def __call__(self, texts: list[str], **_: object) -> dict[str, list[list[int]]]:
        return {"input_ids": [[len(w) for w in t.split()] for t in texts]}


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):  # noqa: ANN201
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_windows_without_bos_are_plain_slices_joined_with_eos() -> None:
    windows = list(iter_windows(["a bb ccc", "dddd e"], WordTokenizer(), ctx_len=3))
    assert [w.tolist() for w in windows] == [[1, 2, 3], [0, 4, 1]]  # leftover [0] dropped
    assert all(w.dtype == np.int32 for w in windows)
    no_eos = list(iter_windows(["a bb ccc", "dddd e f"], WordTokenizer(None), ctx_len=3))
    assert [w.tolist() for w in no_eos] == [[1, 2, 3], [4, 1, 1]]


def test_windows_start_with_bos_and_cover_the_stream(tok) -> None:  # noqa: ANN001
    texts = ["def f(x):\n    return x\n" * 5, "the quick brown fox " * 5]
    windows = np.stack(list(iter_windows(texts, tok, ctx_len=8)))
    assert (windows[:, 0] == tok.bos_token_id).all()
    stream = []
    for t in texts:
        stream += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    body = windows[:, 1:].reshape(-1).tolist()
    assert body == stream[: len(body)] and len(stream) - len(body) < 7
    again = np.stack(list(iter_windows(texts, tok, ctx_len=8)))
    assert (again == windows).all()  # deterministic
    capped = list(iter_windows(texts, tok, ctx_len=8, n_windows=3))
    assert len(capped) == 3 and (np.stack(capped) == windows[:3]).all()


def test_too_short_fails_and_fewer_than_asked_warns(tok, caplog) -> None:  # noqa: ANN001
    with pytest.raises(DatasetError, match="fewer than one window of ctx_len=64"):
        list(iter_windows(["ab"], tok, ctx_len=64))
    with pytest.raises(DatasetError, match="fewer than one window"):
        list(iter_windows([], tok, ctx_len=4))
    with caplog.at_level(logging.WARNING):
        got = list(iter_windows(["the quick brown fox " * 4], tok, ctx_len=4, n_windows=10**6))
    assert 0 < len(got) < 10**6 and "caching what there is" in caplog.text


def test_local_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha text")
    rows = [{"text": "one"}, {"text": "two"}, {"other": 1, "text": ""}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pq.write_table(pa.table({"body": ["p1", "p2"]}), tmp_path / "c.parquet")
    cfg = DatasetConfig(source=str(tmp_path / "a.txt"))
    assert list(iter_texts(cfg)) == ["alpha text"]
    assert list(iter_texts(DatasetConfig(source=str(tmp_path / "b.jsonl")))) == ["one", "two"]
    pcfg = DatasetConfig(source=str(tmp_path / "c.parquet"), text_column="body")
    assert list(iter_texts(pcfg)) == ["p1", "p2"]
    with pytest.raises(DatasetError, match="no column 'text' .*body.*--text-column"):
        list(iter_texts(DatasetConfig(source=str(tmp_path / "c.parquet"))))
    (tmp_path / "c.parquet").unlink()
    assert list(iter_texts(DatasetConfig(source=str(tmp_path)))) == ["alpha text", "one", "two"]


def test_missing_and_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        list(iter_texts(DatasetConfig(source=str(tmp_path / "missing.txt"))))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no"):
        list(iter_texts(DatasetConfig(source=str(tmp_path / "empty"))))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(DatasetError, match="bad.jsonl:2 is not valid JSON"):
        list(iter_texts(DatasetConfig(source=str(tmp_path / "bad.jsonl"))))
    with pytest.raises(DatasetError, match="split 'test' does not exist"):
        list(iter_texts(DatasetConfig(source="stdlib", split="test")))


def test_stdlib_default() -> None:
    first = list(islice(iter_texts(DatasetConfig()), 3))
    assert len(first) == 3 and all(t.strip() for t in first)
    assert first == list(islice(iter_texts(DatasetConfig()), 3))
    shuffled = list(islice(iter_texts(DatasetConfig(shuffle_seed=1)), 3))
    assert shuffled != first


def test_datasets_library_paths(tmp_path: Path) -> None:
    import datasets

    repo = tmp_path / "repo"
    repo.mkdir()
    rows = [{"text": f"doc {i}", "id": i} for i in range(5)]
    (repo / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = DatasetConfig(source=str(repo), split="train")
    assert list(hub_texts(str(repo), cfg)) == [f"doc {i}" for i in range(5)]
    with pytest.raises(DatasetError, match="no column 'body'"):
        list(hub_texts(str(repo), DatasetConfig(source=str(repo), text_column="body")))
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(saved))
    assert list(iter_texts(DatasetConfig(source=str(saved)))) == [f"doc {i}" for i in range(5)]
    with pytest.raises(DatasetError, match="could not be found"):
        list(hub_texts(str(tmp_path / "nothing-here"), cfg))
