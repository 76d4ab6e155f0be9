"""Shared plumbing: the one loader of packaged YAML tables and the one memory sampler."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from adaptladder.errors import AdaptError
from adaptladder.measure import _SAMPLER, PeakMemory, rss_mb
from adaptladder.packaged import deep_merge, load_table, packaged_yaml


def test_deep_merge_merges_mappings_at_every_depth_and_replaces_the_rest() -> None:
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "b": [1, 2], "c": 3}
    out = deep_merge(base, {"a": {"y": {"q": 9}}, "b": [7], "d": 4})
    assert out == {"a": {"x": 1, "y": {"p": 1, "q": 9}}, "b": [7], "c": 3, "d": 4}
    assert base["a"]["y"]["q"] == 2  # the packaged table is never changed in place


@pytest.mark.parametrize("name", ["prices.yaml", "requirements.yaml", "gpus.yaml", "model_presets.yaml"])
def test_every_table_uses_the_deep_rule(tmp_path: Path, name: str) -> None:
    base = packaged_yaml(name)
    key = next(k for k, v in base.items() if isinstance(v, dict) and v)
    inner = next(iter(base[key]))
    over = tmp_path / "over.yaml"
    over.write_text(f"{key}:\n  {inner}: null\n  zz_added: 1\n")
    merged = load_table(name, over, what="table", fix="fix it")
    assert merged[key][inner] is None and merged[key]["zz_added"] == 1
    assert set(base[key]) - {inner} <= set(merged[key])  # siblings kept: not a shallow replace


def test_price_presets_and_gpus_loaders_agree_on_the_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptladder import estimate, pricing

    gpus = packaged_yaml("gpus.yaml")
    key = next(k for k, v in gpus.items() if isinstance(v, dict))
    sub = next(k for k, v in gpus[key].items() if isinstance(v, dict))
    field = next(iter(gpus[key][sub]))
    over = tmp_path / "g.yaml"
    over.write_text(f"{key}:\n  {sub}:\n    {field}: 12345\n")
    monkeypatch.setenv("ADAPTLADDER_GPUS", str(over))
    estimate._gpus_cached.cache_clear()
    got = estimate._gpus_cached(str(over))
    assert got[key][sub][field] == 12345 and set(got[key][sub]) == set(gpus[key][sub])  # deep, as prices
    prices = tmp_path / "p.yaml"
    prices.write_text("api_per_million_tokens:\n  gpt-4o-mini:\n    input: 0.01\n")
    full = pricing.load_prices(None)["api_per_million_tokens"]["gpt-4o-mini"]
    mine = pricing.load_prices(str(prices))["api_per_million_tokens"]["gpt-4o-mini"]
    assert mine["input"] == 0.01 and set(mine) == set(full)


def test_bad_override_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(AdaptError, match="does not exist"):
        load_table("prices.yaml", tmp_path / "nope.yaml", what="price table", fix="fix ADAPTLADDER_PRICES")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(AdaptError, match="not valid YAML"):
        load_table("prices.yaml", bad, what="price table", fix="x")
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(AdaptError, match="must be a mapping"):
        load_table("prices.yaml", bad, what="price table", fix="x")


def _rss_threads() -> int:
    return sum(t.name == "adaptladder-rss" for t in threading.enumerate())


def test_nested_memory_blocks_share_one_sampling_thread() -> None:
    with PeakMemory() as outer:
        assert _rss_threads() == 1
        with PeakMemory() as inner:
            assert _rss_threads() == 1 and _SAMPLER.threads() == 1
            block = bytearray(64 * 2**20)
            block[::4096] = b"x" * len(block[::4096])
            seen = rss_mb()  # what the OS reports with the block resident
        del block
        assert _rss_threads() == 1
    assert _rss_threads() == 0
    # the block's peak is at least what the OS showed inside it (64 MB more, unless the allocator reused
    # pages a previous test freed: the sampler must then not invent growth either)
    assert inner.peak_mb >= seen and outer.peak_mb >= inner.peak_mb
    assert inner.delta_mb >= seen - inner.start_mb
