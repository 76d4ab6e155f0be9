"""Near-duplicates are confirmed on whole texts: shared e-mail headers or boilerplate are not copies."""

from __future__ import annotations

import numpy as np
import pytest

from adaptladder.audit import enforce_audit, run_audit
from adaptladder.audit.duplicates import lexical_tokens, matched_excerpts, text_similarity
from adaptladder.audit.text import excerpt, strip_boilerplate
from adaptladder.task import Task
from fakes import TrigramEncoder


def _body(rng: np.random.Generator, vocab: list[str], n: int = 60) -> str:
    return " ".join(rng.choice(vocab, size=n)) + "."


def _vocabs(rng: np.random.Generator) -> dict[str, list[str]]:
    letters = list("abcdefghijklmnopqrstuvwxyz")
    shared = ["".join(rng.choice(letters, size=rng.integers(4, 9))) for _ in range(300)]
    return {c: shared[:200] + ["".join(rng.choice(letters, size=7)) for _ in range(40)] for c in ("ham", "spam")}


HEADER = ("Received: from mail.example-list.org (mail.example-list.org [10.0.0.1])\n"
          "\tby mx.example.com (Postfix) with ESMTP id 4F2A1\n"
          "\tfor <list@example-list.org>; Mon, 2 Sep 2002 10:00:00 +0100\n"
          "From: list-owner@example-list.org\nTo: list@example-list.org\n"
          "Subject: [example-list] weekly digest\nMessage-ID: <digest@example-list.org>\n"
          "X-Mailer: ListServ 2.0\nContent-Type: text/plain; charset=us-ascii\n\n")
BOILER = ("IMPORTANT NOTICE: this message and any attachment are confidential and intended only for the named "
          "recipient; if you received it in error please tell the sender and delete it. Views expressed are the "
          "author's own and not those of the list. Unsubscribe at any time from the list web page. ") * 2


def _mail_task(prefix: str, n: int = 300, plant: int = 0, seed: int = 3) -> tuple[Task, list[int]]:
    """E-mails sharing ``prefix`` with different bodies; ``plant`` test rows are near-copies of train rows."""
    rng = np.random.default_rng(seed)
    vocab = _vocabs(rng)
    labels = rng.integers(0, 2, size=n)
    texts = [prefix + _body(rng, vocab["ham" if y == 0 else "spam"]) + "\n-- \nsent from the list\n"
             for y in labels]
    split = np.array(["train"] * int(n * 0.7) + ["validation"] * int(n * 0.15), dtype=object)
    split = np.concatenate([split, np.array(["test"] * (n - len(split)), dtype=object)])
    te, tr = np.flatnonzero(split == "test"), np.flatnonzero(split == "train")
    planted = []
    for k in range(plant):  # a near copy: two words of the body changed, a line added
        i, j = int(te[k]), int(tr[k])
        words = texts[j].split(" ")
        words[-(len(words) // 4)] = "changed"  # past the encoder window: only the whole-text check sees it
        words[-(len(words) // 5)] = "edited"
        texts[i] = " ".join(words) + "\nPS: resent"
        labels[i] = labels[j]
        planted.append(i)
    return Task("mail", texts, labels, ["ham", "spam"], split, {"kind": "memory"}), planted


def test_emails_sharing_headers_are_not_leakage() -> None:
    task, _ = _mail_task(HEADER)
    r = run_audit(task, encoder=TrigramEncoder(window=300), label_errors=False)
    leak = r.stats["leakage"]["test_in_train"]
    assert (leak["exact"], leak["near"]) == (0, 0)
    assert not r.has_errors
    enforce_audit(r)  # no refusal
    assert r.stats["near_duplicates"]["pairs"] == 0
    assert r.stats["embedding"]["boilerplate_stripped"] == len(task.texts)  # the encoder saw the bodies


def test_shared_boilerplate_candidates_are_rejected_on_the_whole_text() -> None:
    """A shared opening (not a header, so not stripped) fills the encoder's window: every pair is a candidate
    by cosine; the whole-text check rejects them and the audit says the detector is wrong here."""
    task, _ = _mail_task(BOILER, n=120)
    r = run_audit(task, encoder=TrigramEncoder(window=300), label_errors=False)
    nd = r.stats["near_duplicates"]
    assert nd["candidates"] > 1000 and nd["pairs"] == 0 and nd["candidates_rejected"] == nd["candidates"]
    assert r.stats["leakage"]["test_in_train"]["near"] == 0 and not r.has_errors
    doubt = r.finding("near_duplicate_detector_doubtful")
    assert doubt is not None and doubt.severity == "warning"
    assert r.finding("near_duplicate_label_disagreement") is None


@pytest.mark.parametrize("prefix", [HEADER, BOILER])
def test_planted_near_copies_are_still_caught(prefix: str) -> None:
    task, _planted = _mail_task(prefix, plant=8)  # 45 test rows, 8 near copies: 17.8% > 10%
    r = run_audit(task, encoder=TrigramEncoder(window=300), label_errors=False)
    leak = r.stats["leakage"]["test_in_train"]
    assert (leak["exact"], leak["near"]) == (0, 8)
    f = r.finding("leakage_train_test")
    assert f is not None and f.severity == "error"
    ex = next(e for e in f.examples if e["kind"] == "near")
    core = ex["text"].strip("…")[60:100]  # the excerpts show the matched span of the bodies, not the headers
    assert core in ex["text_match"] and "Received:" not in ex["text"] + ex["text_match"]


def test_text_similarity_and_boilerplate() -> None:
    a = lexical_tokens("From: a@b.c\nTo: d@e.f\n\nthe cat sat on the mat today\n> quoted\n-- \nsig")
    assert a == ["the", "cat", "sat", "on", "the", "mat", "today"]
    assert text_similarity(a, a) == 1.0
    assert text_similarity(a, ["the", "dog", "sat", "on", "the", "mat", "today"]) == pytest.approx(12 / 14)
    assert strip_boilerplate("no header: here\njust text") == "no header: here\njust text"
    assert strip_boilerplate("single line") == "single line"


def test_excerpts_are_centred_on_the_problem() -> None:
    text = "x " * 200 + "price Â£5 only" + " y" * 200
    e = excerpt(text, text.index("Â£"), text.index("Â£") + 2, width=60)
    assert "Â£5" in e and e.startswith("…") and e.endswith("…")
    same = "the very same sentence here"
    a, b = matched_excerpts("intro " * 80 + same, "other " * 80 + same)
    assert "the very same sentence here" in a and "the very same sentence here" in b


def test_size_sentences_never_contradict() -> None:
    """300 training rows (enough to try fine-tuning by count) but a class with 5: one sentence, 'too few'."""
    rng = np.random.default_rng(0)
    y = np.array([0] * 200 + [1] * 195 + [2] * 7)
    texts = [f"text {i} " + " ".join(rng.choice(["a", "b", "c", "d"], 5)) for i in range(len(y))]
    split = np.array(["train"] * len(y), dtype=object)
    split[[i for i in range(len(y)) if i % 4 == 3 and y[i] != 2][:90]] = "test"
    split[396] = "test"  # one 'c' in test, 6 in train: under the 10 per class fine-tuning needs
    task = Task("sizes", texts, y, ["a", "b", "c"], split, {"kind": "memory"})
    r = run_audit(task, encoder=None, label_errors=False)
    msg = r.finding("supported_families").message
    assert "too few for fine-tuning" in msg and "enough to try fine-tuning" not in msg
    assert msg.count("fine-tuning (") == 1


def test_encoding_garbage_examples_show_the_garbage() -> None:
    texts = [("word " * 60) + "costs Â£5 today" if i == 0 else f"clean text number {i} about things" for i in range(60)]
    y = np.array([i % 2 for i in range(60)])
    split = np.array(["train"] * 40 + ["validation"] * 10 + ["test"] * 10, dtype=object)
    r = run_audit(Task("moji", texts, y, ["x", "y"], split, {"kind": "memory"}), encoder=None, label_errors=False)
    ex = next(e for e in r.finding("noisy_texts").examples if e["kind"] == "encoding garbage")
    assert "Â£5" in ex["text"] and ex["chars"] == "Â£"


class WholeTextEncoder:
    """Maps listed paraphrases onto one vector; reads up to 256 tokens (short texts are read whole)."""

    max_length = 256

    def __init__(self, same: dict[str, str]) -> None:
        self.same = same
        self.ids: dict[str, int] = {}

    def encode(self, texts, *, progress: bool = False, desc: str = "") -> np.ndarray:
        out = np.zeros((len(texts), 1024), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, self.ids.setdefault(self.same.get(t, t), len(self.ids))] = 1.0  # one axis per distinct text
        return out


def test_paraphrases_the_encoder_read_whole_still_count() -> None:
    """Short texts fit the encoder's window, so its similarity is a whole-text comparison: a reworded
    question copied into test is near leakage even though few words are shared."""
    rng = np.random.default_rng(1)
    texts = [f"question number {i} about " + " ".join(rng.choice(["cats", "maps", "rain", "gold"], 3))
             for i in range(100)]
    y = np.array([i % 2 for i in range(100)])
    split = np.array(["train"] * 70 + ["validation"] * 15 + ["test"] * 15, dtype=object)
    texts[85] = "CNN is owned by whom ?"
    texts[0] = "Who owns CNN ?"
    y[85] = y[0]
    task = Task("para", texts, y, ["a", "b"], split, {"kind": "memory"})
    r = run_audit(task, encoder=WholeTextEncoder({texts[85]: texts[0]}), label_errors=False)
    assert r.stats["leakage"]["test_in_train"]["near"] == 1
    assert r.stats["near_duplicates"]["confirmed_as_read_whole"] == 1


def _rfc822(i: int, body: str, rng: np.random.Generator) -> str:
    """A full message as a public spam/ham corpus stores it: mbox line, long folded headers, a quoted
    reply with its attribution, and the list's footer after a rule."""
    return (f"From list-bounces@example-list.org  Mon Sep  2 10:{i % 60:02d}:00 2002\n"
            "Return-Path: <list-bounces@example-list.org>\n"
            "Received: from mail.example-list.org (mail.example-list.org [10.0.0.1])\n"
            f"\tby mx.example.com (Postfix) with ESMTP id {i:05X}\n"
            "\tfor <me@example.com>; Mon, 2 Sep 2002 10:00:00 +0100\n"
            f"From: user{int(rng.integers(0, 9))}@example.org\nTo: list@example-list.org\n"
            f"Subject: Re: [example-list] thread {i % 7}\nMessage-ID: <{i}@example.org>\n"
            "X-Spam-Status: No, hits=-2.6 required=5.0 tests=IN_REP_TO,KNOWN_MAILING_LIST,QUOTED_EMAIL_TEXT\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
            f"{body}\n\nOn Sun, 1 Sep 2002, someone wrote:\n> an earlier message in the thread\n> quoted here\n\n"
            "_______________________________________________\nexample-list mailing list\n"
            "example-list@example-list.org\nhttp://example-list.org/mailman/listinfo/example-list\n")


def _rfc822_task(plant_same_body: int = 0, plant_edited: int = 0, n: int = 240) -> Task:
    rng = np.random.default_rng(11)
    vocab = _vocabs(rng)["ham"]
    bodies = [_body(rng, vocab, n=int(rng.integers(45, 70))) for _ in range(n)]
    labels = rng.integers(0, 2, size=n)
    split = np.array(["train"] * 168 + ["validation"] * 36 + ["test"] * 36, dtype=object)
    te, tr = np.flatnonzero(split == "test"), np.flatnonzero(split == "train")
    k = 0
    for _ in range(plant_same_body):  # the same body under other headers
        bodies[int(te[k])] = bodies[int(tr[k])]
        labels[int(te[k])] = labels[int(tr[k])]
        k += 1
    for _ in range(plant_edited):  # the body with two words changed
        words = bodies[int(tr[k])].split(" ")
        words[3], words[-4] = "changed", "edited"
        bodies[int(te[k])] = " ".join(words)
        labels[int(te[k])] = labels[int(tr[k])]
        k += 1
    texts = [_rfc822(i, b, rng) for i, b in enumerate(bodies)]
    return Task("rfc822", texts, labels, ["ham", "spam"], split, {"kind": "memory"})


def test_full_messages_with_different_bodies_are_not_near_copies() -> None:
    """Shared headers, quoted text and list footer; bodies of 45-70 words from one vocabulary that share
    no sentence: the encoder reads each whole and finds them alike, the word check does not."""
    task = _rfc822_task()
    r = run_audit(task, encoder=TrigramEncoder(window=300), label_errors=False)
    assert r.stats["leakage"]["test_in_train"]["near"] == 0 and not r.has_errors
    assert r.stats["near_duplicates"]["pairs"] == 0
    body = strip_boilerplate(task.texts[0])
    assert "Received" not in body and "mailing list" not in body and "quoted here" not in body
    assert "wrote:" not in body and body.split()[0] in task.texts[0]


@pytest.mark.parametrize(("same", "edited"), [(6, 0), (0, 6), (3, 3)])
def test_planted_copies_among_full_messages_are_caught(same: int, edited: int) -> None:
    task = _rfc822_task(plant_same_body=same, plant_edited=edited)  # 6 of 36 test rows: 16.7%
    r = run_audit(task, encoder=TrigramEncoder(window=300), label_errors=False)
    leak = r.stats["leakage"]["test_in_train"]
    assert leak["exact"] + leak["near"] == 6
    assert r.finding("leakage_train_test").severity == "error"
