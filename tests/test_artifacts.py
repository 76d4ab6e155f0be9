"""Safe run directories: no pickle is ever loaded, no class is imported from a file, hashes are checked."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import adaptladder
from adaptladder.artifacts import dump_sklearn, load_sklearn
from adaptladder.cli import main
from adaptladder.errors import AdaptError
from adaptladder.rungs import load_rung, make_rung


class _Payload:
    """Unpickling this creates the marker file: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def _fit_tfidf(toy: tuple[list[str], np.ndarray, list[str]], path: Path) -> Path:
    texts, y, names = toy
    make_rung("tfidf", C=1.0).fit(texts, y, label_names=names).save(path)
    return path


def _cli_predict(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    inp = run_dir.parent / "new.csv"
    inp.write_text("text\nfree prize now\n")
    with pytest.raises(SystemExit) as e:
        main(["predict", str(run_dir), "--rung", "tfidf", "-i", str(inp), "-o", str(run_dir.parent / "out.csv")])
    err = capsys.readouterr().err
    return int(e.value.code or 0), err


@pytest.fixture
def run_dir(toy_csv: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["majority", "tfidf"], out=str(out))
    return out


def test_saved_rung_has_no_pickle_and_records_hashes(toy_texts, tmp_path: Path) -> None:
    path = _fit_tfidf(toy_texts, tmp_path / "m")
    meta = json.loads((path / "rung.json").read_text())
    assert "class" not in meta
    assert set(meta["files"]) == {"model.skops", "state.json", "vocabulary.json"}
    assert not list(path.rglob("*.joblib")) and not list(path.rglob("*.pkl"))
    again = load_rung(path)
    texts = toy_texts[0]
    assert np.array_equal(again.predict_proba(texts), load_rung(path).predict_proba(texts))


def test_old_joblib_model_with_a_payload_runs_nothing(run_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "PWNED"
    model = run_dir / "rungs" / "tfidf" / "model"
    for f in model.iterdir():
        f.unlink()
    (model / "model.joblib").write_bytes(pickle.dumps(_Payload(marker)))
    (model / "rung.json").write_text(json.dumps({"name": "tfidf", "class": "adaptladder.rungs.classical:TfidfRung",
                                                 "params": {}, "label_names": ["ham", "spam"]}))
    with pytest.raises(AdaptError, match="re-run with --fresh"):
        load_rung(model)
    code, err = _cli_predict(run_dir, capsys)
    assert code == 2 and "pickle" in err and "--fresh" in err and "Traceback" not in err
    assert not marker.exists()


def test_class_string_in_rung_json_is_never_imported(toy_texts, tmp_path: Path) -> None:
    path = _fit_tfidf(toy_texts, tmp_path / "m")
    meta = json.loads((path / "rung.json").read_text())
    code = ("import sys, json; from adaptladder.rungs import load_rung; r = load_rung(sys.argv[1]); "
            "print('this' in sys.modules, type(r).__name__)")
    # a "class" string next to a valid name: ignored, the registry decides
    (path / "rung.json").write_text(json.dumps(dict(meta, **{"class": "this:s"})))
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "TfidfRung"] and "Beautiful" not in out.stdout + out.stderr
    # an import string as the name: refused, nothing imported
    (path / "rung.json").write_text(json.dumps(dict(meta, name="this:s")))
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert out.returncode != 0 and "names no known rung" in out.stderr and "Beautiful" not in out.stdout + out.stderr


def test_tampered_model_file_is_refused_by_hash(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = run_dir / "rungs" / "tfidf" / "model"
    state = json.loads((model / "state.json").read_text())
    (model / "state.json").write_text(json.dumps(dict(state, C=123.0)))
    with pytest.raises(AdaptError, match="does not match the content hash"):
        load_rung(model)
    code, err = _cli_predict(run_dir, capsys)
    assert code == 2 and "state.json does not match the content hash" in err and len(err.strip().splitlines()) <= 3


def test_an_extra_or_missing_file_is_refused(toy_texts, tmp_path: Path) -> None:
    path = _fit_tfidf(toy_texts, tmp_path / "m")
    (path / "extra.skops").write_bytes(b"x")
    with pytest.raises(AdaptError, match="not among the files recorded"):
        load_rung(path)
    (path / "extra.skops").unlink()
    (path / "model.skops").unlink()
    with pytest.raises(AdaptError, match="missing"):
        load_rung(path)


def test_skops_file_with_an_untrusted_type_is_refused_even_with_matching_hashes(toy_texts, tmp_path: Path) -> None:
    from sklearn.preprocessing import FunctionTransformer

    path = _fit_tfidf(toy_texts, tmp_path / "m")
    marker = tmp_path / "PWNED"
    # an attacker who also rewrites the recorded hashes still cannot get an untrusted type loaded
    dump_sklearn(FunctionTransformer(func=shutil.rmtree, kw_args={"path": str(marker)}), path / "model.skops")
    with pytest.raises(AdaptError, match="does not match the content hash"):
        load_rung(path)
    from adaptladder.artifacts import file_hashes

    meta = json.loads((path / "rung.json").read_text())
    (path / "rung.json").write_text(json.dumps(dict(meta, files=file_hashes(path, exclude=("rung.json",)))))
    with pytest.raises(AdaptError, match="does not trust"):
        load_rung(path)
    with pytest.raises(AdaptError, match="does not trust"):
        load_sklearn(path / "model.skops")


def test_old_run_directory_is_redone_on_resume_not_loaded(toy_csv: Path, run_dir: Path) -> None:
    model = run_dir / "rungs" / "tfidf" / "model"
    meta = json.loads((model / "rung.json").read_text())
    meta.pop("files")
    (model / "rung.json").write_text(json.dumps(meta))
    res = adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["majority", "tfidf"], out=str(run_dir))
    assert res.result("majority").get("resumed") and not res.result("tfidf").get("resumed")
    assert json.loads((model / "rung.json").read_text())["files"]


def test_features_model_with_its_own_encoder_travels(toy_texts, tiny_encoder_dir: str, tmp_path: Path) -> None:
    texts, y, names = toy_texts
    enc = tmp_path / "my-encoder"
    shutil.copytree(tiny_encoder_dir, enc)
    rung = make_rung("features", encoder=str(enc), precision="fp32", heads=["logreg"]).fit(texts, y, label_names=names)
    rung.save(tmp_path / "m")
    before = rung.predict_proba(texts)
    shutil.rmtree(enc)  # the original encoder path is gone, as on another machine
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "m", moved)
    state = json.loads((moved / "state.json").read_text())
    assert state["encoder_source"]["kind"] == "copied" and (moved / "encoder").is_dir()
    assert not list(moved.rglob("*.joblib")) and not list(moved.rglob("*.bin"))
    again = load_rung(moved)
    np.testing.assert_allclose(again.predict_proba(texts), before, rtol=1e-5, atol=1e-6)
    # the encoder's files are under the rung's hashes too
    weights = next((moved / "encoder").rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(AdaptError, match="does not match the content hash"):
        load_rung(moved)


@pytest.mark.slow
def test_features_model_on_the_packaged_encoder_records_alias_and_hashes(toy_texts, tmp_path: Path) -> None:
    texts, y, names = toy_texts
    rung = make_rung("features", heads=["logreg"]).fit(texts, y, label_names=names)
    rung.save(tmp_path / "m")
    src = json.loads((tmp_path / "m" / "state.json").read_text())["encoder_source"]
    assert src["kind"] == "packaged" and src["alias"] == "minilm" and "model.safetensors" in src["files"]
    assert not (tmp_path / "m" / "encoder").exists()
    np.testing.assert_allclose(load_rung(tmp_path / "m").predict_proba(texts), rung.predict_proba(texts), atol=1e-6)
    meta = json.loads((tmp_path / "m" / "state.json").read_text())
    meta["encoder_source"]["files"]["model.safetensors"] = "0" * 64
    from adaptladder.artifacts import file_hashes

    (tmp_path / "m" / "state.json").write_text(json.dumps(meta))
    rj = json.loads((tmp_path / "m" / "rung.json").read_text())
    (tmp_path / "m" / "rung.json").write_text(json.dumps(dict(rj, files=file_hashes(tmp_path / "m",
                                                                                      exclude=("rung.json",)))))
    with pytest.raises(AdaptError, match="differs from the one"):
        load_rung(tmp_path / "m")


def test_run_directory_records_provenance_shown_at_the_bottom_of_the_report(run_dir: Path) -> None:
    import os

    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["python"].split()[-1] == ".".join(map(str, sys.version_info[:3]))
    assert prov["cpu"]["logical_cores"] == os.cpu_count() and prov["cpu"]["model"]
    assert len(prov["load_average_at_start"]) == 3 and isinstance(prov["gpus"], list)
    assert prov["packages"]["scikit-learn"] and "adaptladder" in prov["packages"]
    md = (run_dir / "report.md").read_text()
    tail = md[md.index("## Provenance"):]
    assert "## " not in tail[3:] and "load average at start" in tail and "scikit-learn" in tail
    assert "Provenance" in (run_dir / "report.html").read_text()


def test_tfidf_vocabulary_is_saved_as_json_and_round_trips(tmp_path: Path) -> None:
    """skops writes a dict entry by entry in quadratic time (50,000 n-grams: 116 s); the vocabulary
    goes to vocabulary.json instead, and the loaded rung predicts exactly as the saved one."""
    import json

    import numpy as np

    from adaptladder.errors import AdaptError
    from adaptladder.rungs import load_rung, make_rung

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(3000)]
    y = np.arange(200) % 3
    texts = [" ".join(rng.choice(words, 30)) + f" c{c}" for c in y]
    rung = make_rung("tfidf", C=1.0).fit(texts, y, label_names=["a", "b", "c"])
    rung.save(tmp_path / "m")
    terms = json.loads((tmp_path / "m" / "vocabulary.json").read_text())
    assert len(terms) == len(rung.pipeline_.steps[0][1].vocabulary_) > 3000
    assert rung.pipeline_.steps[0][1].vocabulary_  # the fitted rung keeps its vocabulary after saving
    loaded = load_rung(tmp_path / "m")
    assert np.array_equal(loaded.predict_proba(texts[:50]), rung.predict_proba(texts[:50]))
    (tmp_path / "m" / "vocabulary.json").write_text(json.dumps(terms[:-1]))  # damaged: hashes catch it first
    with pytest.raises(AdaptError):
        load_rung(tmp_path / "m")
