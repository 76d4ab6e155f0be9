"""Prompting rungs and LM backends on a tiny random Llama (fast) and a local OpenAI-style stub server."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaptladder.errors import AdaptError
from fakes import BagEncoder

torch = pytest.importorskip("torch")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "win a free prize now call", "are we meeting for lunch tomorrow", "cheap loans text stop",
    "see you at the station", "urgent claim your cash reward", "what time is the game",
    "Text: Label: spam ham positive negative neutral", "where is the capital of france",
    "who wrote this book", "how many people live here",
]


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer Llama with random weights and a byte-level BPE tokenizer trained here, saved to disk."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHATML
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny_lm")
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return str(out)


def _backend(path: str, **kw: Any) -> Any:
    from adaptladder.backends.hf import HFBackend

    return HFBackend(path, threads=1, **kw)


def _toy_task() -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    spam = ["win a free prize now", "urgent claim your cash", "cheap loans text stop now", "free cash prize call",
            "claim your free reward", "win cheap loans now"]
    ham = ["are we meeting tomorrow", "see you at the station", "what time is lunch", "lunch at noon tomorrow",
           "see you at the game", "where are we meeting"]
    texts = spam + ham
    y = np.array([1] * len(spam) + [0] * len(ham))
    return texts, y, ["ham", "spam"], np.array([0, 1])


# ---------------------------------------------------------------------------------- backend
def test_prefix_cache_scores_equal_full_forward_and_naive(tiny_lm: str) -> None:
    from adaptladder.backends.base import split_shared_prefix

    cached = _backend(tiny_lm, batch_size=3)
    plain = _backend(tiny_lm, prefix_cache=False, batch_size=5)
    naive = _backend(tiny_lm, prefix_cache=False, batch_size=1)
    system = "Classify the text. Labels: spam, ham."
    shots = "Text: win a free prize\nLabel: spam\n\nText: see you tomorrow\nLabel: ham\n\n"
    users = [shots + f"Text: {t}\nLabel:" for t in ["urgent cash", "what time is the game tomorrow", "ok",
                                                    "who wrote this book at the station"]]
    choices = ["spam", "ham", "positive neutral", "negative"]  # single- and multi-token labels
    for chat in (True, False):
        for b in (cached, plain, naive):
            b.use_chat_template = chat
        a = cached.score_prompts(system, users, choices, user_prefix=shots)
        p = plain.score_prompts(system, users, choices, user_prefix=shots)
        np.testing.assert_allclose(a.logprobs, p.logprobs, atol=1e-4)
        # naive: one (context, continuation) request at a time, the whole prompt tokenized at once
        lead = "" if chat else " "
        full = [naive.format_chat(system, u) for u in users]
        ref = np.array([[naive.loglikelihood([(f, lead + c)])[0][0] for c in choices] for f in full])
        np.testing.assert_allclose(a.logprobs, ref, atol=1e-4)
        assert split_shared_prefix(cached.format_chat(system, shots + "\x00Q\x00"), "\x00Q\x00")
    # the prefix really was reused: far fewer tokens computed than read
    assert cached.usage.computed_tokens < cached.usage.prompt_tokens
    assert plain.usage.computed_tokens == plain.usage.prompt_tokens


def test_generate_until_stops(tiny_lm: str) -> None:
    b = _backend(tiny_lm)
    outs = b.generate_until(["Text: win a free prize\nLabel:", "see you"], stop=["\n"], max_tokens=5)
    assert len(outs) == 2 and all("\n" not in o for o in outs)
    assert b.usage.completion_tokens > 0 and b.count_tokens("win a free prize") > 0


def test_unknown_backend_is_one_line_error() -> None:
    from adaptladder.backends.base import get_backend

    with pytest.raises(AdaptError, match="unknown LM backend"):
        get_backend("nope")


# ---------------------------------------------------------------------------------- rungs
def test_zero_shot_picks_label_with_highest_normalised_loglikelihood(tiny_lm: str) -> None:
    from adaptladder.rungs.prompting import ZeroShotRung

    r = ZeroShotRung(model=tiny_lm, calibrate=False, prompt_format="plain", threads=1)
    r.fit([], np.zeros(0, dtype=int), label_names=["ham", "spam", "positive neutral"])
    texts = ["win a free prize", "see you at lunch", "who wrote this"]
    proba = r.predict_proba(texts)
    assert proba.shape == (3, 3) and np.allclose(proba.sum(1), 1)
    ref = _backend(tiny_lm, prefix_cache=False, batch_size=1)
    ref.use_chat_template = False
    for t, row in zip(texts, proba, strict=True):
        prompt = r.example_prompt(t)
        scores = [ref.loglikelihood([(prompt, " " + n)])[0] for n in r.label_names_]
        norm = np.array([lp / n for lp, n in scores])
        assert int(row.argmax()) == int(norm.argmax())
        np.testing.assert_allclose(row, np.exp(norm - norm.max()) / np.exp(norm - norm.max()).sum(), atol=1e-4)
    info = r.extra_info()
    assert "Answer with the label only." in info["system_prompt"] and "{{ text }}" in info["prompt_template"]
    assert info["example_prompt"].startswith(info["system_prompt"])


def test_contextual_calibration_divides_by_content_free_probs(tiny_lm: str) -> None:
    from adaptladder.rungs.prompting import ZeroShotRung

    texts = ["win a free prize", "see you at lunch", "who wrote this", "cheap loans"]
    plain = ZeroShotRung(model=tiny_lm, calibrate=False, prompt_format="plain", threads=1)
    cal = ZeroShotRung(model=tiny_lm, calibrate=True, prompt_format="plain", threads=1)
    for r in (plain, cal):
        r.fit([], np.zeros(0, dtype=int), label_names=["ham", "spam"])
    p, q = plain.predict_proba(texts), cal.predict_proba(texts)
    expect = p / np.asarray(cal.p_cf_)[None, :]
    np.testing.assert_allclose(q, expect / expect.sum(1, keepdims=True), atol=1e-6)
    # after calibration the content-free inputs themselves score (near) uniform
    cf = cal.predict_proba(["N/A", "", "[MASK]"]).mean(0)
    assert np.allclose(cf, 0.5, atol=0.1)


def test_calibration_and_format_chosen_on_validation(tiny_lm: str) -> None:
    from adaptladder.rungs.prompting import ZeroShotRung

    texts, y, names, _ = _toy_task()
    r = ZeroShotRung(model=tiny_lm, calibrate="auto", threads=1).fit(texts, y, label_names=names,
                                                                     val_texts=texts, val_y=y)
    sc = r.extra_info()["calibration"]
    keys = {f"macro_f1_{f}_{c}" for f in ("chat", "plain") for c in ("calibrated", "uncalibrated")}
    assert keys <= set(sc) and sc["n_validation"] == len(texts)
    best = max(sc[k] for k in keys)
    chosen = f"macro_f1_{r.prompt_format_}_{'calibrated' if r.calibrate_ else 'uncalibrated'}"
    assert sc[chosen] == best


def test_few_shot_selection_is_seeded_and_k_per_class(tiny_lm: str) -> None:
    from adaptladder.rungs.prompting import FewShotRung

    texts, y, names, _ = _toy_task()
    texts, y = [*texts, "one more ham text"], np.append(y, 0)  # 7 ham, 6 spam
    a = FewShotRung(model=tiny_lm, k=3, seed=1, calibrate=False, threads=1).fit(texts, y, label_names=names)
    b = FewShotRung(model=tiny_lm, k=3, seed=1, calibrate=False, threads=1).fit(texts, y, label_names=names)
    c = FewShotRung(model=tiny_lm, k=3, seed=2, calibrate=False, threads=1).fit(texts, y, label_names=names)
    assert a.shots_ == b.shots_ and a.shot_rows_ != c.shot_rows_
    assert a.extra_info()["shots_per_label"] == {"ham": 3, "spam": 3}
    assert all(texts[i] == s["text"] and names[y[i]] == s["label"] for i, s in zip(a.shot_rows_, a.shots_,
                                                                                       strict=True))
    big = FewShotRung(model=tiny_lm, k=50, calibrate=False, threads=1).fit(texts, y, label_names=names)
    assert big.extra_info()["shots_per_label"] == {"ham": 7, "spam": 6}  # capped by what exists
    assert all(s["text"] in a.example_prompt("q") for s in a.shots_)


def test_knn_selects_the_nearest_training_examples(tiny_lm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptladder.rungs.prompting import KnnFewShotRung

    monkeypatch.setattr(KnnFewShotRung, "_encoder", lambda self: BagEncoder())
    texts, y, names, _ = _toy_task()
    r = KnnFewShotRung(model=tiny_lm, k=3, calibrate=False, threads=1).fit(texts, y, label_names=names)
    queries = ["free cash prize", "see you at lunch tomorrow", "win a free prize now"]
    emb, q = BagEncoder().encode(texts), BagEncoder().encode(queries)
    for query, qv, rows in zip(queries, q, r.neighbours(queries), strict=True):
        sims = emb @ qv
        allowed = [i for i in range(len(texts)) if texts[i] != query]  # the identical text is skipped
        best = sorted(allowed, key=lambda i: (-sims[i], i))[:3]
        assert sorted(rows) == sorted(best) and rows[-1] == best[0]  # nearest placed last
    prompt = r.example_prompt("free cash prize")
    assert all(texts[i] in prompt for i in r.neighbours(["free cash prize"])[0])


def test_truncation_warns_with_counts_and_few_shot_shrinks(tiny_lm: str) -> None:
    from adaptladder.rungs.prompting import FewShotRung

    texts, y, names, _ = _toy_task()
    long = " ".join(["win a free prize now call"] * 60)
    with pytest.warns(UserWarning, match="using fewer shots"):
        r = FewShotRung(model=tiny_lm, k=3, calibrate=False, max_context=200, min_query_tokens=40,
                        threads=1).fit(texts, y, label_names=names)
    assert 0 < len(r.shots_used_) < len(r.shots_)
    with pytest.warns(UserWarning, match=r"2 of 3 texts were truncated .* 200 tokens"):
        r.predict_proba([long, "short one", long + " again"])
    assert r.extra_info()["truncation"] == {"queries_seen": 3, "queries_truncated": 2}
    prompt = r.example_prompt(long)
    assert r.backend.count_tokens(prompt) <= 200


@pytest.mark.parametrize("name", ["zero-shot", "few-shot", "knn-few-shot"])
def test_save_load_identical_predictions(tiny_lm: str, name: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptladder.rungs import load_rung, make_rung
    from adaptladder.rungs.prompting import KnnFewShotRung

    monkeypatch.setattr(KnnFewShotRung, "_encoder", lambda self: BagEncoder())
    texts, y, names, _ = _toy_task()
    r = make_rung(name, model=tiny_lm, k=2, calibrate=True, threads=1).fit(texts, y, label_names=names)
    queries = ["free cash now", "lunch at the station", "who is this"]
    before = r.predict_proba(queries)
    r.save(tmp_path)
    assert (tmp_path / "system_prompt.txt").read_text() == r.system_prompt_
    assert (tmp_path / "prompt_template.j2").read_text() == r.template_text_
    back = load_rung(tmp_path)
    np.testing.assert_allclose(back.predict_proba(queries), before, atol=1e-6)
    assert (back.predict(queries) == r.predict(queries)).all()


def test_user_template_and_bad_params(tiny_lm: str, tmp_path: Path) -> None:
    from adaptladder.rungs.prompting import ZeroShotRung

    tpl = tmp_path / "my.j2"
    tpl.write_text("Message: {{ text }}\nCategory:")
    r = ZeroShotRung(model=tiny_lm, template=str(tpl), calibrate=False, threads=1,
                     label_descriptions={"spam": "unwanted advertising"})
    r.fit([], np.zeros(0, dtype=int), label_names=["ham", "spam"])
    assert "Message: hello\nCategory:" in r.example_prompt("hello")
    assert "spam: unwanted advertising" in r.system_prompt_
    with pytest.raises(AdaptError, match="unknown setting"):
        ZeroShotRung(kk=3)
    with pytest.raises(AdaptError, match="unknown label"):
        ZeroShotRung(model=tiny_lm, label_descriptions={"eggs": "x"}).fit([], np.zeros(0, dtype=int),
                                                                          label_names=["a", "b"])
    bad = tmp_path / "bad.j2"
    bad.write_text("no query here")
    with pytest.raises(AdaptError, match="never uses"):
        ZeroShotRung(model=tiny_lm, template=str(bad)).fit([], np.zeros(0, dtype=int), label_names=["a", "b"])


def test_verbalizer_words_are_shown_and_scored_and_saved(tiny_lm: str, tmp_path: Path) -> None:
    from adaptladder.rungs import load_rung
    from adaptladder.rungs.prompting import FewShotRung

    texts, y, names, _ = _toy_task()
    r = FewShotRung(model=tiny_lm, k=1, calibrate=False, prompt_format="plain", threads=1,
                    verbalizer={"ham": "normal"}).fit(texts, y, label_names=names)
    assert r.verbalizer_ == {"ham": "normal", "spam": "spam"} and r.verbalizer_source_ == "user"
    prompt = r.example_prompt("free cash now")
    assert "normal, spam" in r.system_prompt_ and "Label: normal" in prompt and "Label: ham" not in prompt
    # the scored continuations are the answer words; predictions are still the data's label indices
    ref = _backend(tiny_lm, prefix_cache=False, batch_size=1)
    ref.use_chat_template = False
    lp = [ref.loglikelihood([(prompt, " " + w)])[0] for w in ("normal", "spam")]
    norm = np.array([a / n for a, n in lp])
    proba = r.predict_proba(["free cash now"])[0]
    np.testing.assert_allclose(proba, np.exp(norm - norm.max()) / np.exp(norm - norm.max()).sum(), atol=1e-4)
    assert r.extra_info()["verbalizer"] == {"ham": "normal", "spam": "spam"}
    r.save(tmp_path)
    back = load_rung(tmp_path)
    assert back.verbalizer_ == r.verbalizer_ and back.system_prompt_ == r.system_prompt_
    np.testing.assert_allclose(back.predict_proba(["free cash now", "see you"]),
                               r.predict_proba(["free cash now", "see you"]), atol=1e-6)


def test_verbalizer_chosen_on_validation_and_defaults_to_names(tiny_lm: str) -> None:
    from adaptladder.rungs.prompting import ZeroShotRung

    texts, y, names, _ = _toy_task()
    # auto on a well-known label set: names and the built-in words both measured, the better kept
    r = ZeroShotRung(model=tiny_lm, threads=1, prompt_format="plain").fit(texts, y, label_names=names,
                                                                         val_texts=texts, val_y=y)
    sc = r.extra_info()["calibration"]
    assert sc["verbalizers"] == {"names": {"ham": "ham", "spam": "spam"},
                                 "verbalizer1": {"ham": "normal", "spam": "spam"}}
    cands = {k: v for k, v in sc.items() if k.startswith("macro_f1_")}
    assert len(cands) == 4  # 2 verbalizers x calibrated / not
    chosen = (f"macro_f1_plain_{'calibrated' if r.calibrate_ else 'uncalibrated'}"
              + ("" if r.verbalizer_ == {"ham": "ham", "spam": "spam"} else "_verbalizer1"))
    assert sc[chosen] == max(cands.values())
    assert r.verbal_ == [r.verbalizer_[n] for n in names]
    # without validation data the label names are used, never an unmeasured alternative
    plain = ZeroShotRung(model=tiny_lm, threads=1).fit([], np.zeros(0, dtype=int), label_names=names)
    assert plain.verbalizer_ == {"ham": "ham", "spam": "spam"} and "ham, spam" in plain.system_prompt_
    # a label set with no built-in alternative has one candidate
    other = ZeroShotRung(model=tiny_lm, threads=1, prompt_format="plain", calibrate=False)
    other.fit(texts, y, label_names=["a", "b"], val_texts=texts, val_y=y)
    assert other.calibration_scores_["reason"] == "set by parameters"


def test_choice_screens_all_candidates_then_compares_two_on_more_examples(tiny_lm: str) -> None:
    from adaptladder.rungs.prompting import ZeroShotRung

    texts, y, names, _ = _toy_task()
    r = ZeroShotRung(model=tiny_lm, threads=1, choice_screen=6, calibration_val_max=10)
    r.fit(texts, y, label_names=names, val_texts=texts, val_y=y)
    sc = r.calibration_scores_
    screened = {k: v for k, v in sc["screening"].items() if k.startswith("macro_f1_")}
    assert sc["screening"]["n_validation"] == 6 and len(screened) == 8  # 2 formats x 2 verbalizers x calibration
    final = {k: v for k, v in sc.items() if k.startswith("macro_f1_")}
    assert sc["n_validation"] == 10 and len(final) == 4  # the two best pairs, calibrated or not

    def pair(key: str) -> str:
        return key.replace("_uncalibrated", "").replace("_calibrated", "")

    best = {p: max(v for k, v in screened.items() if pair(k) == p) for p in {pair(k) for k in screened}}
    finalists = {pair(k) for k in final}
    assert len(finalists) == 2 and min(best[p] for p in finalists) >= max(best[p] for p in best if p not in finalists)
    chosen = _choice_key_of(r)
    assert final[chosen] == max(final.values())
    # the report's table: every candidate with its screening score, finalists with their final score
    from adaptladder.report.view import prompt_choices_of

    table = prompt_choices_of(r.extra_info())
    assert table is not None and (table["n_screening"], table["n_final"]) == (6, 10)
    assert len(table["rows"]) == 8 and sum(row["chosen"] for row in table["rows"]) == 1
    assert sum(row["final"] != "-" for row in table["rows"]) == 4
    pick = next(row for row in table["rows"] if row["chosen"])
    assert pick["final"] == f"{max(final.values()):.3f}"
    assert pick["words"] == ("label names" if "verbalizer" not in chosen else "ham → normal")


def _choice_key_of(r: Any) -> str:
    vi = 0 if r.verbalizer_ == {n: n for n in r.label_names_} else 1
    return (f"macro_f1_{r.prompt_format_}_{'calibrated' if r.calibrate_ else 'uncalibrated'}"
            + (f"_verbalizer{vi}" if vi else ""))


def test_bad_verbalizer_is_one_line_error(tiny_lm: str, tmp_path: Path) -> None:
    from adaptladder.rungs.prompting import ZeroShotRung

    def fit(v: Any) -> None:
        ZeroShotRung(model=tiny_lm, threads=1, verbalizer=v).fit([], np.zeros(0, dtype=int), label_names=["a", "b"])

    with pytest.raises(AdaptError, match="unknown label"):
        fit({"c": "x"})
    with pytest.raises(AdaptError, match="same answer word"):
        fit({"a": "b"})
    with pytest.raises(AdaptError, match="empty answer word"):
        fit({"a": " "})
    with pytest.raises(AdaptError, match="verbalizer must be"):
        fit("no-such-file.yaml")
    with pytest.raises(AdaptError, match="verbalizer entries"):
        fit([3])
    with pytest.raises(AdaptError, match="empty list"):
        fit([])
    with pytest.raises(AdaptError, match="empty answer word"):
        fit({"a": None})
    bad = tmp_path / "v.yaml"
    bad.write_text("a: [unclosed")
    with pytest.raises(AdaptError, match=r"v\.yaml is not valid JSON/YAML"):
        fit(str(bad))
    good = tmp_path / "words.yaml"
    good.write_text("- names\n- {a: alpha}\n")
    r = ZeroShotRung(model=tiny_lm, threads=1, verbalizer=str(good))
    r.fit([], np.zeros(0, dtype=int), label_names=["a", "b"])
    assert [w for _, w in r._verbalizer_candidates()] == [{"a": "a", "b": "b"}, {"a": "alpha", "b": "b"}]
    # numeric label names survive YAML's integer keys
    r = ZeroShotRung(model=tiny_lm, threads=1, verbalizer={0: "negative", 1: "positive"})
    r.fit([], np.zeros(0, dtype=int), label_names=["0", "1"])
    assert r.verbalizer_ == {"0": "negative", "1": "positive"}


def test_parse_label() -> None:
    from adaptladder.backends.base import parse_label

    names = ["ham", "spam", "not spam"]
    assert parse_label(" spam.", names) == 1
    assert parse_label("Not spam, I think", names) == 2
    assert parse_label("The answer is ham", names) == 0
    assert parse_label("???", names) is None


# ---------------------------------------------------------------------------------- openai stub server
class _Stub:
    """An OpenAI-compatible server on 127.0.0.1 with scripted failures."""

    def __init__(self) -> None:
        self.fail_next = 0  # answer this many requests with 429 first
        self.sleep = 0.0
        self.logprobs = True
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if stub.fail_next > 0:
                    stub.fail_next -= 1
                    self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})
                    return
                if stub.sleep:
                    time.sleep(stub.sleep)
                text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
                query = text.rsplit("Text:", 1)[-1].lower()
                answer = "spam" if ("free" in query or "win" in query) else "ham"
                if self.path.endswith("/chat/completions"):
                    other = "ham" if answer == "spam" else "sp"
                    lp = {"content": [{"token": answer, "logprob": -0.1,
                                       "top_logprobs": [{"token": answer, "logprob": -0.1},
                                                        {"token": other, "logprob": -2.5}]}]}
                    choice = {"message": {"role": "assistant", "content": answer},
                              "logprobs": lp if stub.logprobs else None}
                    self._send(200, {"choices": [choice], "usage": {"prompt_tokens": 50, "completion_tokens": 1}})
                else:
                    self._send(200, {"choices": [{"text": answer}], "usage": {"prompt_tokens": 40,
                                                                                "completion_tokens": 1}})

            def _send(self, code: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        errors = self.errors = []

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # a client that hangs up mid-response (a timeout test, an early error) is not a
                # failure of the code under test; keep it off stderr, which tests read
                errors.append(sys.exc_info()[1])

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Any:
    s = _Stub()
    monkeypatch.setenv("STUB_KEY", "sk-test-secret")
    yield s
    s.close()


def _openai_rung(stub: _Stub, **kw: Any) -> Any:
    from adaptladder.rungs.prompting import ZeroShotRung

    params = {"backend": "openai", "model": "gpt-4o-mini", "base_url": stub.url, "api_key_env": "STUB_KEY",
              "calibrate": False, **kw}
    return ZeroShotRung(**params).fit([], np.zeros(0, dtype=int), label_names=["ham", "spam"])


def test_openai_logprob_scoring_cost_and_key_not_leaked(stub: _Stub, tmp_path: Path) -> None:
    r = _openai_rung(stub)
    pred = r.predict_codes(["win a free phone", "see you at lunch"])
    assert pred.tolist() == [1, 0]
    req = stub.requests[-1]
    assert req["auth"] == "Bearer sk-test-secret" and req["body"]["logprobs"] is True
    assert req["body"]["messages"][0]["role"] == "system"
    info = r.extra_info()
    assert info["scoring"].startswith("top_logprobs") and info["cost_per_1k_usd"] > 0
    # 50 prompt + 1 completion tokens at gpt-4o-mini prices, per 1,000 predictions
    assert info["cost_per_1k_usd"] == pytest.approx((50 * 0.15 + 1 * 0.60) / 1e6 * 1000, rel=1e-6)
    r.save(tmp_path)
    dump = json.dumps(info) + "".join(p.read_text() for p in tmp_path.iterdir() if p.suffix != ".npy")
    assert "sk-test-secret" not in dump


def test_openai_falls_back_to_generation_without_logprobs(stub: _Stub) -> None:
    stub.logprobs = False
    r = _openai_rung(stub)
    assert r.predict_codes(["win a free phone", "see you at lunch"]).tolist() == [1, 0]
    assert r.extra_info()["scoring"].startswith("generate-and-parse")


def test_openai_retries_429(stub: _Stub) -> None:
    r = _openai_rung(stub)
    stub.fail_next = 2
    assert r.predict_codes(["win now"]).tolist() == [1]
    assert r.backend.retries == 2


def test_openai_timeout_and_exhausted_retries(stub: _Stub) -> None:
    from adaptladder.backends.openai import OpenAIBackend

    stub.sleep = 1.0
    b = OpenAIBackend(model="m", base_url=stub.url, api_key_env="STUB_KEY", timeout=0.2, max_retries=1, backoff=0)
    with pytest.raises(AdaptError, match=r"failed after 2 attempts \(timed out after 0.2 s\)"):
        b.generate_prompts("sys", ["hello"])
    stub.sleep = 0.0
    stub.fail_next = 5
    b = OpenAIBackend(model="m", base_url=stub.url, api_key_env="STUB_KEY", max_retries=2, backoff=0)
    with pytest.raises(AdaptError, match="HTTP 429"):
        b.generate_prompts("sys", ["hello"])


def test_openai_missing_key_is_one_line_and_cli_exits_2(stub: _Stub, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from adaptladder.backends.openai import OpenAIBackend
    from adaptladder.cli import main

    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    b = OpenAIBackend(model="m", base_url=stub.url, api_key_env="NO_SUCH_KEY_VAR")
    with pytest.raises(AdaptError, match=r"NO_SUCH_KEY_VAR .* is not set"):
        b.generate_prompts("sys", ["hi"])
    with pytest.raises(SystemExit) as e:
        main(["prompt", "hello", "--labels", "ham,spam", "--backend", "openai", "--model", "m",
              "--base-url", stub.url, "--api-key-env", "NO_SUCH_KEY_VAR"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "NO_SUCH_KEY_VAR" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3


def test_cli_prompt_with_stub(stub: _Stub, capsys: pytest.CaptureFixture[str]) -> None:
    from adaptladder.cli import main

    with pytest.raises(SystemExit) as e:
        main(["prompt", "win a free phone", "--labels", "ham,spam", "--backend", "openai", "--lm", "m",
              "--base-url", stub.url, "--api-key-env", "STUB_KEY", "--show-prompt"])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    assert "spam" in out and "Answer with the label only." in out


def test_cli_prompt_verbalizer(tiny_lm: str, capsys: pytest.CaptureFixture[str]) -> None:
    from adaptladder.cli import main

    with pytest.raises(SystemExit) as e:
        main(["prompt", "win a free phone", "--labels", "ham,spam", "--model", tiny_lm, "--verbalizer", "ham=normal",
              "--show-prompt"])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    table, prompt = out.split("You are a text classifier", 1)
    assert "normal, spam" in prompt and re.search(r"\b(ham|spam)\b", table) and "normal" not in table
    with pytest.raises(SystemExit) as e:
        main(["prompt", "x", "--labels", "ham,spam", "--model", tiny_lm, "--verbalizer", "ham:normal"])
    assert e.value.code == 2 and "label=word" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_smollm2_few_shot_beats_majority_on_sms_spam() -> None:
    from sklearn.metrics import f1_score

    from adaptladder.rungs.prompting import FewShotRung
    from adaptladder.task import load_builtin, stratified_subset

    task = load_builtin("sms-spam")
    tx, ty = task.part("train")
    vx, vy = task.part("validation")
    pos = stratified_subset(vy, 20, 0)
    pos = np.concatenate([pos, np.flatnonzero(vy == 1)[:6]])  # a few more spam so that F1 means something
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = FewShotRung(k=2, calibrate=False, prompt_format="plain").fit(tx, ty, label_names=task.label_names)
        pred = r.predict_codes([vx[i] for i in pos])
    majority = f1_score(vy[pos], np.zeros(len(pos), dtype=int), average="macro")
    assert f1_score(vy[pos], pred, average="macro") > majority


@pytest.mark.slow
def test_smollm2_zero_shot_beats_majority_on_sms_spam() -> None:
    """The packaged 135M model leans to "spam" whatever the text; validation picks the answer word
    "normal" for "ham" (and calibration), which takes zero-shot above the majority floor on test."""
    from sklearn.metrics import f1_score

    from adaptladder.rungs.prompting import ZeroShotRung
    from adaptladder.task import load_builtin, stratified_subset

    task = load_builtin("sms-spam")
    vx, vy = task.part("validation")
    sx, sy = task.part("test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ZeroShotRung().fit([], np.zeros(0, dtype=int), label_names=task.label_names, val_texts=vx, val_y=vy)
        pos = stratified_subset(sy, 150, 1)
        pred = r.predict_codes([sx[i] for i in pos])
    assert r.verbalizer_ == {"ham": "normal", "spam": "spam"}
    majority = f1_score(sy[pos], np.zeros(len(pos), dtype=int), average="macro")
    assert f1_score(sy[pos], pred, average="macro") > majority + 0.03


# ---------------------------------------------------------------------------------- budgets
def _timed_rung(tiny_lm: str, per_text: float, budget_minutes: float, **kw: Any) -> Any:
    """A zero-shot rung on a fake clock: each scored text costs ``per_text`` seconds."""
    from adaptladder.rungs.prompting import ZeroShotRung

    r = ZeroShotRung(model=tiny_lm, threads=1, choice_screen=6, calibration_val_max=10,
                     budget_minutes=budget_minutes, **kw)
    clock = {"t": 0.0}
    r._clock = lambda: clock["t"]
    real = r._raw_scores

    def slow(texts: list[str], count: bool = True) -> np.ndarray:
        clock["t"] += per_text * len([t for t in texts if t not in r._memo])
        return real(texts, count)

    r._raw_scores = slow
    return r


def test_prompt_choice_shrinks_to_the_fit_budget(tiny_lm: str) -> None:
    texts, y, names, _ = _toy_task()
    roomy = _timed_rung(tiny_lm, 0.01, 60).fit(texts, y, label_names=names, val_texts=texts, val_y=y)
    assert roomy.calibration_scores_["n_validation"] == 10  # the budget does not bind
    tight = _timed_rung(tiny_lm, 8.0, 12)
    tight.MIN_CHOICE_N = 4
    tight.fit(texts, y, label_names=names, val_texts=texts, val_y=y)
    b = tight.calibration_scores_["budget"]
    assert b["seconds_per_text"] == pytest.approx(8.0) and b["planned_validation_examples"] == 10
    # a minimal evaluation (76 x 8 s) does not fit the half of the budget the fit leaves it, so the
    # prompts are halved and re-probed; that does not make a text cheaper here (the fake cost is per
    # text), so the full window is restored. Spent: probe 4 + content-free 3, twice more content-free
    # 3 and once the probe 4: 17 texts x 8 s = 136 s. (6 min for the fit - 136 s) / 8 s - 12
    # content-free = 16 texts, over 4 pairs screened on 60% and 2 finalists: 16 / 3.2 = 5 examples
    assert b["prompt_window_tokens"] == 1024  # the model's whole context again
    assert tight.calibration_scores_["n_validation"] == b["validation_examples"] == 5
    assert tight.calibration_scores_["screening"]["n_validation"] == 4
    assert sum(c["chosen"] for c in tight.prompt_choices_) == 1


def test_prompt_choice_falls_back_to_defaults_or_refuses_when_over_budget(tiny_lm: str) -> None:
    from adaptladder.errors import BudgetExceeded

    texts, y, names, _ = _toy_task()
    r = _timed_rung(tiny_lm, 8.0, 12).fit(texts, y, label_names=names, val_texts=texts, val_y=y)
    assert r.prompt_choices_ == [] and "budget" in r.calibration_scores_["reason"]
    assert r.predict_proba(texts[:2]).shape == (2, 2)
    with pytest.raises(BudgetExceeded, match=r"20\.00 s per text.*zero-shot\.budget_minutes"):
        _timed_rung(tiny_lm, 20.0, 10).fit(texts, y, label_names=names, val_texts=texts, val_y=y)


def test_prompts_shortened_to_fit_the_budget_and_kept_on_reload(tiny_lm: str, tmp_path: Path) -> None:
    from adaptladder.rungs import load_rung

    texts, y, names, _ = _toy_task()
    long_texts = [(t + " ") * 60 for t in texts]  # ~300+ tokens each
    r = _timed_rung(tiny_lm, 0.0, 10, calibrate=False)
    r.MIN_PROMPT_WINDOW = 64
    real = r._raw_scores
    clock = {"t": 0.0}
    r._clock = lambda: clock["t"]

    def cost_by_length(ts: list[str], count: bool = True) -> np.ndarray:
        # a fake cost that grows with the prompt window: 0.02 s per window token per text
        clock["t"] += 0.02 * r._context_window() * len([t for t in ts if t not in r._memo])
        return real(ts, count)

    r._raw_scores = cost_by_length
    r.fit(long_texts, y, label_names=names, val_texts=long_texts, val_y=y)
    w = r._context_window()
    assert w < 1024 and r.calibration_scores_["budget"]["prompt_window_tokens"] == w
    assert 0.02 * w * r.MIN_EVAL_TEXTS <= 600  # a minimal evaluation now fits the 10 minutes
    assert r.backend.count_tokens(r.example_prompt(long_texts[0])) <= w
    r.save(tmp_path / "m")
    back = load_rung(tmp_path / "m")
    assert back._context_window() == w
    np.testing.assert_allclose(back.predict_proba(long_texts[:3]), r.predict_proba(long_texts[:3]), atol=1e-6)


def test_shots_k_and_tokens_per_shot_chosen_on_validation_and_saved(tiny_lm: str, tmp_path: Path) -> None:
    from sklearn.metrics import f1_score

    from adaptladder.rungs.base import load_rung
    from adaptladder.rungs.prompting import FewShotRung

    texts, y, names, _ = _toy_task()
    r = FewShotRung(model=tiny_lm, calibrate=False, prompt_format="plain", threads=1, seed=0)
    r.fit(texts, y, label_names=names, val_texts=texts, val_y=y)
    cands = r.shot_choice_["candidates"]
    assert [(c["k"], c["shot_max_tokens"]) for c in cands] == [(4, 128), (4, 64), (2, 128), (2, 64)]
    chosen = [c for c in cands if c["chosen"]]
    assert len(chosen) == 1 and r.shot_choice_["n_validation"] == len(texts)
    best = max(c["macro_f1"] for c in cands)
    ties = [c for c in cands if c["macro_f1"] == best]
    assert chosen[0] == min(ties, key=lambda c: c["k"] * c["shot_max_tokens"])  # ties: the shorter prompt
    info = r.extra_info()
    assert info["k"] == chosen[0]["k"] and info["shot_max_tokens"] == chosen[0]["shot_max_tokens"]
    assert "(chosen)" in info["shot_choice"] and "tokens/shot" in info["shot_choice"]
    assert info["shots_selected"] == chosen[0]["k"] * len(names)
    # the record's F1 of the chosen shape is what the fitted rung scores on those examples
    pred = r.predict_proba(texts).argmax(1)
    assert f1_score(y, pred, average="macro") == pytest.approx(chosen[0]["macro_f1"], abs=1e-4)
    r.save(tmp_path / "m")
    back = load_rung(tmp_path / "m")
    assert back._p("k") == r._p("k") and back._p("shot_max_tokens") == r._p("shot_max_tokens")
    np.testing.assert_allclose(back.predict_proba(texts), r.predict_proba(texts), atol=1e-5)
    # a k set explicitly stays fixed: only the tokens per shot are compared
    fixed = FewShotRung(model=tiny_lm, k=2, calibrate=False, prompt_format="plain", threads=1)
    fixed.fit(texts, y, label_names=names, val_texts=texts, val_y=y)
    assert [(c["k"], c["shot_max_tokens"]) for c in fixed.shot_choice_["candidates"]] == [(2, 128), (2, 64)]
    # no validation data: the configured shape, no choice
    plain = FewShotRung(model=tiny_lm, calibrate=False, prompt_format="plain", threads=1).fit(texts, y,
                                                                                             label_names=names)
    assert plain.shot_choice_ is None and plain._p("k") == 4
