"""A run directory is untrusted input (issue #27): tampered with as an attacker would (hashes and the
manifest rewritten), it chooses no endpoint, credential or path, and nothing is written before the
checks pass. Each case failed on the main of 2026-12-04; the fuzz at the end mixes them."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from adaptladder.artifacts import sha256_file
from adaptladder.cli import main
from adaptladder.errors import AdaptError
from adaptladder.trust import check_saved_params, write_manifest
from conftest import toy_run
from test_hardening import _Server
from test_prompting import tiny_lm  # noqa: F401  (the tiny LM fixture)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main(argv)
    cap = capsys.readouterr()
    code = ex.value.code
    return (0 if code is None else int(code)), cap.out, cap.err


def _rehash(model_dir: Path, run_dir: Path) -> None:
    """What an attacker does after an edit: rung.json's file hashes and the run's manifest recomputed."""
    meta_file = model_dir / "rung.json"
    meta = json.loads(meta_file.read_text())
    meta["files"] = {p.relative_to(model_dir).as_posix(): sha256_file(p) for p in sorted(model_dir.rglob("*"))
                     if p.is_file() and not p.is_symlink() and p.name != "rung.json"}
    meta_file.write_text(json.dumps(meta))
    write_manifest(run_dir)


def _edit_meta(run_dir: Path, rung: str, **changes: object) -> None:
    model_dir = run_dir / "rungs" / rung / "model"
    meta = json.loads((model_dir / "rung.json").read_text())
    for k, v in changes.items():
        if k == "params":
            meta["params"].update(v)  # type: ignore[arg-type]
        else:
            meta[k] = v
    (model_dir / "rung.json").write_text(json.dumps(meta))
    _rehash(model_dir, run_dir)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toy_run(tmp_path_factory.mktemp("trust"))


@pytest.fixture
def run(toy: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(toy, out)
    (tmp_path / "texts.csv").write_text("text\nfree cash now\nsee you at lunch\n")
    return out


def _predict(run: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    out = run.parent / "out.csv"
    if out.exists():
        out.unlink()
    return _cli(["predict", str(run), "-i", str(run.parent / "texts.csv"), "-o", str(out), *extra], capsys)


def test_a_clean_run_still_predicts_and_has_a_manifest(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads((run / "manifest.json").read_text())
    assert "rungs/tfidf/model/rung.json" in doc["files"]
    code, _, err = _predict(run, capsys)
    assert code == 0, err


# ------------------------------------------------------------------ 1. secrets and endpoints
@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory, tiny_lm: str) -> Path:  # noqa: F811
    import adaptladder
    from conftest import HAM, SPAM

    tmp = tmp_path_factory.mktemp("lmrun")
    rows = ["text,label"] + [f"{t} #{i},spam" for i, t in enumerate(SPAM * 2)] + [
        f"{t} #{i},ham" for i, t in enumerate(HAM * 2)]
    (tmp / "d.csv").write_text("\n".join(rows) + "\n")
    adaptladder.run(no_audit=True, data=str(tmp / "d.csv"), rungs=["zero-shot"], lm=tiny_lm, out=str(tmp / "run"),
                    bar=0.99, run_all=True, rung_params={"zero-shot": {"threads": 1, "calibrate": False}})
    return tmp / "run"


def test_a_saved_endpoint_and_key_variable_are_never_used_unconfirmed(lm_run: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(lm_run, run)
    (tmp_path / "texts.csv").write_text("text\nfree cash now\n")
    listener = _Server()
    try:
        _edit_meta(run, "zero-shot", params={"backend": "openai", "base_url": listener.url,
                                             "api_key_env": "SOME_SECRET_VAR"})
        monkeypatch.setenv("SOME_SECRET_VAR", "s3cr3t")
        code, _, err = _predict(run, capsys)
        assert code == 2 and listener.hits == 0
        assert "does not choose where requests go" in err and listener.url in err and len(err.strip().splitlines()) == 1
        # another server given by the person: the saved one differs, refused as well
        code, _, err = _predict(run, capsys, "--base-url", "http://127.0.0.1:9/v1")
        assert code == 2 and listener.hits == 0 and "not the --base-url you gave" in err
    finally:
        listener.close()


def test_the_persons_endpoint_and_key_variable_replace_the_saved_ones(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    meta = tmp_path / "rung.json"
    saved = {"backend": "openai", "base_url": "http://server.example/v1", "api_key_env": "SOME_SECRET_VAR"}
    monkeypatch.setenv("ADAPTLADDER_BASE_URL", "http://server.example/v1/")
    monkeypatch.setenv("ADAPTLADDER_API_KEY_ENV", "MY_KEY")
    got = check_saved_params(saved, meta)
    assert got["base_url"] == "http://server.example/v1/" and got["api_key_env"] == "MY_KEY"
    monkeypatch.delenv("ADAPTLADDER_BASE_URL")
    monkeypatch.setenv("ADAPTLADDER_TRUST_RUN_DIR", "1")
    assert check_saved_params(saved, meta) == saved  # confirmed by the person: the saved values stand


def test_a_model_path_outside_the_run_is_refused(run: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _edit_meta(run, "tfidf", params={"model": str(outside)})
    code, _, err = _predict(run, capsys, "--rung", "tfidf")
    assert code == 2 and "a path outside the run directory" in err
    assert check_saved_params({"lm": "smollm2", "model": "HuggingFaceTB/SmolLM2-135M"}, run / "x") == {
        "lm": "smollm2", "model": "HuggingFaceTB/SmolLM2-135M"}  # aliases and hub ids are names, not paths


# ------------------------------------------------------------------ 2. rung names never become paths
@pytest.mark.parametrize("name", ["../../../secret/outside_rung", "/etc", "..", "tfidf/../../x", "not-a-rung"])
def test_a_rung_name_not_in_the_registry_is_refused(name: str, run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads((run / "results.json").read_text())
    doc["rungs"][-1]["name"] = name
    doc["recommendation"]["rung"] = name
    (run / "results.json").write_text(json.dumps(doc))
    code, _, err = _predict(run, capsys)
    assert code == 2 and "no rung of adaptladder" in err
    code, _, err = _cli(["export", str(run), str(tmp_path / "exported")], capsys)
    assert code == 2 and not (tmp_path / "exported").exists()


# ------------------------------------------------------------------ 3. the features encoder
def test_an_encoder_folder_outside_the_saved_rung_is_refused(tmp_path: Path) -> None:
    from adaptladder.artifacts import load_encoder_source

    for where in ("../../..", "/", str(tmp_path)):
        with pytest.raises(AdaptError, match="refusing to load an encoder from elsewhere"):
            load_encoder_source({"kind": "copied", "dir": where}, tmp_path / "model")


# ------------------------------------------------------------------ 4. symlinks
@pytest.mark.parametrize("what", ["file", "folder"])
def test_symlinks_in_a_model_folder_are_refused(what: str, run: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    model = run / "rungs" / "tfidf" / "model"
    if what == "file":
        target = tmp_path / "copy.json"
        victim = model / "state.json"
        shutil.copy(victim, target)
        victim.unlink()
        victim.symlink_to(target)
    else:
        target = tmp_path / "model-elsewhere"
        shutil.copytree(model, target)
        shutil.rmtree(model)
        model.symlink_to(target, target_is_directory=True)
    code, _, err = _predict(run, capsys, "--rung", "tfidf")
    assert code == 2 and "symbolic link" in err


# ------------------------------------------------------------------ 5. rung.json itself
def test_label_names_are_checked_against_the_model(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = json.loads((run / "rungs" / "tfidf" / "model" / "rung.json").read_text())
    _edit_meta(run, "tfidf", label_names=[*meta["label_names"], "extra"])
    code, _, err = _predict(run, capsys, "--rung", "tfidf")
    assert code == 2 and "names 3 labels but the saved model predicts 2 classes" in err


def test_an_edited_rung_json_is_caught_by_the_manifest(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = run / "rungs" / "tfidf" / "model" / "rung.json"
    meta = json.loads(path.read_text())
    meta["label_names"] = meta["label_names"][::-1]  # swapped names: every prediction flipped
    path.write_text(json.dumps(meta))
    code, _, err = _predict(run, capsys, "--rung", "tfidf")
    assert code == 2 and "manifest.json" in err


def test_a_run_without_a_manifest_still_loads(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run / "manifest.json").unlink()  # written before manifests existed
    code, _, err = _predict(run, capsys)
    assert code == 0, err


def test_prior_of_the_wrong_shape_is_refused(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = run / "rungs" / "majority" / "model"
    np.save(model / "prior.npy", np.array([0.2, 0.2, 0.2, 0.2, 0.2]))
    _rehash(model, run)
    code, _, err = _predict(run, capsys, "--rung", "majority")
    assert code == 2 and "predicts 5 classes" in err and "Traceback" not in err


# ------------------------------------------------------------------ 6. track writes nothing first
def test_track_checks_before_writing_anything(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    doc = json.loads((run / "results.json").read_text())
    doc["rungs"][-1]["name"] = "../../../x"
    (run / "results.json").write_text(json.dumps(doc))
    before = set(os.listdir(tmp_path))
    code, _, err = _cli(["track", str(run)], capsys)
    assert code == 2 and "no rung of adaptladder" in err
    assert set(os.listdir(tmp_path)) == before and not (tmp_path / "mlruns").exists()


# ------------------------------------------------------------------ the fuzz
def test_fuzz_tampered_run_directories(toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Seeded mutations of a finished run, each with hashes and manifest rewritten: every one is a clean
    exit 2 (one line, no traceback), no request reaches the listener, nothing is written."""
    listener = _Server()
    rng = np.random.default_rng(7)
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    names = ["../../secret", "/etc/passwd", "..", "tfidf/../../../secret", "nope", "", "majority/.."]

    def mutate(run: Path, kind: str) -> None:
        model = run / "rungs" / "tfidf" / "model"
        if kind == "rename":
            doc = json.loads((run / "results.json").read_text())
            doc["rungs"][-1]["name"] = str(rng.choice(names))
            doc["recommendation"]["rung"] = doc["rungs"][-1]["name"]
            (run / "results.json").write_text(json.dumps(doc))
        elif kind == "endpoint":
            _edit_meta(run, "tfidf", params={"backend": "openai", "base_url": listener.url,
                                             "api_key_env": str(rng.choice(["HOME", "PATH", "SECRET"]))})
        elif kind == "path":
            _edit_meta(run, "tfidf", params={str(rng.choice(["model", "lm", "encoder"])):
                                             str(rng.choice([str(secret_dir), "../../secret", "/"]))})
        elif kind == "symlink":
            victim = sorted(p for p in model.iterdir() if p.is_file())[int(rng.integers(0, 3))]
            victim.unlink()
            victim.symlink_to(secret_dir)
        elif kind == "labels":
            meta = json.loads((model / "rung.json").read_text())
            _edit_meta(run, "tfidf", label_names=[*meta["label_names"], *["x"] * int(rng.integers(1, 3))])
        elif kind == "backend":
            _edit_meta(run, "tfidf", params={"backend": str(rng.choice(["openai", "file", "../x"])),
                                             "base_url": f"file://{secret_dir}"})

    kinds = ["rename", "endpoint", "path", "symlink", "labels", "backend"]
    try:
        for i in range(18):
            kind = kinds[i % len(kinds)]
            run = tmp_path / f"r{i}"
            shutil.copytree(toy, run)
            (tmp_path / "texts.csv").write_text("text\nfree cash now\n")
            mutate(run, kind)
            listing = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
            argv = ["predict", str(run), "-i", str(tmp_path / "texts.csv"), "-o", str(tmp_path / f"o{i}.csv")]
            if kind != "rename":
                argv += ["--rung", "tfidf"]
            code, _, err = _cli(argv, capsys)
            assert code == 2, (kind, err)
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (kind, err)
            assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == listing, kind
        assert listener.hits == 0
    finally:
        listener.close()
