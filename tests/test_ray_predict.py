"""`predict --executor ray`: a Ray Data job writing the same output file as the local path, in row order."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from adaptladder import cli
from conftest import toy_run


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as ex:
        cli.main(argv)
    return int(ex.value.code or 0)


def test_predict_ray_equals_local_and_keeps_row_order(tmp_path: Path, tiny_ray: None) -> None:
    from adaptladder.ray_data import predict_proba_ray

    run = toy_run(tmp_path)
    src = pd.read_csv(tmp_path / "toy.csv")
    rows = src.sample(n=500, replace=True, random_state=3).reset_index(drop=True)
    rows.insert(0, "id", range(len(rows)))  # shuffled texts, ids in file order
    rows.to_csv(tmp_path / "in.csv", index=False)
    assert _main(["predict", str(run), "-i", str(tmp_path / "in.csv"), "-o", str(tmp_path / "local.csv")]) == 0
    assert _main(["predict", str(run), "-i", str(tmp_path / "in.csv"), "-o", str(tmp_path / "ray.csv"),
                  "--executor", "ray"]) == 0
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    out = pd.read_csv(tmp_path / "ray.csv")
    assert out["id"].tolist() == list(range(len(rows))) and out["text"].tolist() == rows["text"].tolist()
    # small batches over several actors: still in input order
    import numpy as np

    from adaptladder.winner import load_model

    texts = rows["text"].tolist()
    got = predict_proba_ray(run / "rungs" / "tfidf" / "model", texts, batch_size=37, concurrency=2)
    np.testing.assert_array_equal(got, np.asarray(load_model(run, "tfidf").predict_proba(texts)))


def test_predict_ray_bad_address_and_options_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = toy_run(tmp_path)
    args = ["predict", str(run), "-i", str(tmp_path / "toy.csv"), "-o", str(tmp_path / "out.csv")]
    for extra, match in ((["--executor", "ray", "--ray-address", "127.0.0.1:1"], "no Ray cluster answers there"),
                         (["--executor", "ray", "--ray-address", "nonsense"], "is not HOST:PORT"),
                         (["--ray-address", "127.0.0.1:1"], "--ray-address is for --executor ray"),
                         (["--executor", "spark"], "--executor 'spark' is unknown")):
        assert _main(args + extra) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and match in err[0], err
        assert not (tmp_path / "out.csv").exists()


def test_encoder_on_ray_fills_the_same_cache(tiny_ray: None, tiny_encoder_dir: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from adaptladder import encode
    from adaptladder.ray_encode import encoding_on_ray

    monkeypatch.setattr(encode, "REMOTE_MIN_TEXTS", 10)
    texts = [f"message {i} about {w} and more" for i, w in enumerate(["tea", "rain", "code", "cats"] * 15)]
    local = encode.Encoder(tiny_encoder_dir, precision="fp32", cache=False).encode(texts)
    calls: list[int] = []
    enc = encode.Encoder(tiny_encoder_dir, precision="fp32", max_length=128)
    with encoding_on_ray(concurrency=2):
        remote = encode.REMOTE_ENCODE
        monkeypatch.setattr(encode, "REMOTE_ENCODE", lambda e, t, p: calls.append(len(t)) or remote(e, t, p))
        got = enc.encode(texts)
        with encode.cache_disabled():  # timing the model: always in this process
            enc.encode(texts[:20])
    assert calls == [len(texts)]
    np.testing.assert_allclose(got, local, atol=1e-5)
    # the driver wrote them into the cache: a local encoder finds every one
    again = encode.Encoder(tiny_encoder_dir, precision="fp32", max_length=128)
    np.testing.assert_array_equal(again.encode(texts), got)
    assert again.stats == {"hits": len(texts), "misses": 0}
