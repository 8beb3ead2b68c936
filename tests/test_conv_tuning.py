"""The conv tuning table and its heuristic (kernels/conv_tuning.py): the shipped sm_90 table is
what the documented rule gives and says so, lookups use it on sm_90, the rule puts split-K on
the deep layers at batch 1 and 128x128 tiles on the big layers at batch >= 64."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
from s2i_fast.kernels import conv_tuning as T  # noqa: E402
from s2i_fast.kernels import tune  # noqa: E402


def test_shipped_table_is_the_heuristic_and_marked_so() -> None:
    data = json.loads(T.TABLE_PATH.read_text())
    assert data["arch"] == "sm_90"
    shipped = data["entries"]
    heuristic = {k: v for k, v in shipped.items() if v["source"] == "heuristic"}
    if len(heuristic) == len(shipped):  # nothing measured yet: the note must say so
        assert "NOT MEASURED" in data["note"]
    want = tune.heuristic_table(list(T.BATCH_BUCKETS), ["fp16", "bf16"])
    assert set(heuristic) <= set(want), "entries for layers the shipped models do not have"
    for key, entry in heuristic.items():
        assert entry == want[key], f"{key}: table {entry} != heuristic {want[key]}"
    for key in want:  # every layer of paper/tiny at 64x64, every bucket, fp16 and bf16
        assert key in shipped, f"table lacks {key}"


def test_batch_buckets() -> None:
    assert [T.batch_bucket(b) for b in (1, 2, 8, 9, 64, 65, 256, 1000)] == [
        1, 8, 8, 64, 64, 256, 256, 256]


def _meta(c1: int, n: int, c2: int = 1, epi: int = 1) -> dict:
    return dict(C1=c1, C2=c2, C3=0, N=n, KS=3, EPI=epi, STRIDE=1, UP=0)


def test_rule_splits_deep_layers_at_batch_1_and_tiles_big_layers_at_batch_64() -> None:
    deep = T.choose_config(torch.float16, 1, _meta(768, 1024), 64, 1024, 8, 8)
    assert deep.SPLIT == 9 and deep.BM == 16
    big = T.choose_config(torch.float16, 64, _meta(192, 256), 64 * 1024, 256, 32, 32)
    assert (big.BM, big.BN, big.SPLIT) == (128, 128, 1)
    narrow = T.choose_config(torch.float16, 256, _meta(64, 3, 0, 0), 256 * 4096, 3, 64, 64)
    assert narrow.BN == 16 and narrow.SPLIT == 1
    fp32 = T.choose_config(torch.float32, 64, _meta(192, 256), 64 * 1024, 256, 32, 32)
    assert fp32.BM * fp32.BN <= 64 * 64  # exact-fp32 dots: small tiles


def test_sm90_reads_the_table_other_gpus_the_rule(tmp_path: Path, monkeypatch) -> None:
    meta = _meta(768, 1024)
    key = T.layer_key(torch.float16, 1, meta, 8, 8)
    table = {"format": 1, "arch": "sm_90", "entries": {key: {
        "BM": 32, "BN": 32, "BK": 64, "num_warps": 4, "num_stages": 4, "SPLIT": 1,
        "source": "measured"}}}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table))
    monkeypatch.setenv("S2I_CONV_TABLE", str(path))
    T.reload_table()
    try:
        got = T.choose_config(torch.float16, 1, meta, 64, 1024, 8, 8, cap=(9, 0))
        assert (got.BM, got.BN, got.SPLIT) == (32, 32, 1)
        other = T.choose_config(torch.float16, 1, meta, 64, 1024, 8, 8, cap=(8, 0), sms=108)
        assert other == T.heuristic_config(64, 1024, 3, 768, False, None, 108)
        monkeypatch.setenv("S2I_CONV_TABLE", "none")
        assert T.choose_config(torch.float16, 1, meta, 64, 1024, 8, 8).SPLIT == 9
    finally:
        monkeypatch.delenv("S2I_CONV_TABLE")
        T.reload_table()


def test_split_need_and_a_plan_sized_workspace() -> None:
    assert T.split_need(100, 50, 16, 64, 1) == (0, 0)
    tiles = 7 * 1
    assert T.split_need(100, 50, 16, 64, 9) == (9 * tiles * 16 * 64, tiles)
    ws = T.SplitWorkspace("cpu")
    ws.reserve(*T.split_need(100, 50, 16, 64, 9))
    ws.reserve(10, 1)  # smaller: no new storage
    assert ws.allocations == 1 and ws.counters.abs().sum() == 0
    with pytest.raises(RuntimeError, match="this launch needs"):
        ws.buffers(ws.partials.numel() + 1, 1)
