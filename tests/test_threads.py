"""The one thread policy: cores from affinity + cgroup quota, a share per compute user, minus the
cores other processes hold; re-decided at every batch."""
from __future__ import annotations

from pathlib import Path

import pytest

from adaptladder import threads


def test_cgroup_quota_v2_and_v1(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_limit(v2) == pytest.approx(1.5)
    (v2 / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_limit(v1) == pytest.approx(1.0)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_limit(v1) is None
    assert threads.cgroup_cpu_limit(tmp_path / "none") is None


def test_usable_cores_honours_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda root="": 1.5)
    assert threads.usable_cores() == 2  # 1.5 cores of quota: two threads, not four
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda root="": None)
    assert threads.usable_cores() == 4


@pytest.mark.parametrize(("others", "active", "want"), [
    (0.0, 1, 2),    # quiet machine: a thread per core
    (0.3, 1, 2),    # a light background load does not cost a thread
    (1.0, 1, 1),    # a competitor holds a core: never wait on a descheduled sibling
    (1.9, 1, 1),    # never fewer than one
    (0.0, 2, 1),    # two rungs/encoders at once in this process share the cores
    (None, 1, 2),   # nothing measured yet: the share alone
])
def test_decide(others: float | None, active: int, want: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "others_busy_cores", lambda snapshot=None: None)  # None: nothing measured yet
    assert threads.decide("auto", cores=2, others=others, active=active) == want


def test_a_fixed_setting_is_obeyed() -> None:
    assert threads.decide(3, cores=2, others=2.0) == 3
    assert threads.decide("1", cores=8, others=0.0) == 1


def test_others_busy_cores_is_the_machine_less_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "_LAST", None)
    monkeypatch.setattr(threads, "_LAST_VALUE", None)
    assert threads.others_busy_cores({"t": 0.0, "busy": 100.0, "own": 10.0}) is None  # first: no window yet
    # 2 s later the machine did 3 CPU-seconds, 1 of them ours: others held 1 core
    assert threads.others_busy_cores({"t": 2.0, "busy": 103.0, "own": 11.0}) == pytest.approx(1.0)
    # a call inside MIN_WINDOW_S returns the last value instead of a noisy one
    assert threads.others_busy_cores({"t": 2.1, "busy": 103.2, "own": 11.0}) == pytest.approx(1.0)
    assert threads.others_busy_cores({"t": 4.0, "busy": 104.0, "own": 12.0}) == pytest.approx(0.0)


def test_compute_counts_users_and_restores_threads() -> None:
    import torch

    before = torch.get_num_threads()
    assert threads.active_users() == 0
    with threads.compute(1) as n:
        assert n == 1 and torch.get_num_threads() == 1 and threads.active_users() == 1
        with threads.compute("auto"):
            assert threads.active_users() == 2
    assert threads.active_users() == 0 and torch.get_num_threads() == before


def test_generation_re_decides_threads_at_every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptladder.generation.decode import Generator
    from test_generation_decode import _byte_bpe_tokenizer, _tiny_lm

    calls: list[object] = []
    monkeypatch.setattr(threads, "apply", lambda setting="auto", **kw: calls.append(setting) or 1)
    tok = _byte_bpe_tokenizer()
    gen = Generator((_tiny_lm(tok), tok), batch_size=2, threads="auto")
    gen.generate(["a", "b", "c", "d", "e"], max_new_tokens=2)
    assert calls.count("auto") >= 3  # load, then once per batch of 2 (3 batches)
