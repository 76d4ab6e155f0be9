"""Locust user for benchmarks/bench_serve.py: each user POSTs one text to /predict, back to back.

Texts come from a fixed pool (sms-spam-like messages, varied in length) so every request
carries a realistic single text; run headless by bench_serve.py, never against a remote host.
"""

from __future__ import annotations

import itertools
import random

from locust import FastHttpUser, constant, task

POOL = [
    "WINNER!! You have been selected to receive a £900 prize reward! Call now to claim, valid 12 hours only.",
    "Hey, are we still on for dinner tonight? I can pick you up around 7.",
    "URGENT! Your mobile number has won a free entry to our weekly draw, text WIN to 80086 now",
    "Sorry I missed your call, I'll ring you back after the meeting",
    "Free ringtones! Reply TONE to get 3 free polyphonic tones for your phone today",
    "Can you grab some milk on the way home? Thanks",
    "Congratulations, you have won a guaranteed cash prize, call 09061701461 to claim your reward now",
    "ok see you later then",
    "Did you see the match last night? Unbelievable finish, we have to watch the replay together",
    "Your account will be suspended unless you verify your details at the link below within 24 hours",
]


class PredictUser(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        rng = random.Random(id(self))
        self.texts = itertools.cycle(rng.sample(POOL, len(POOL)))

    @task
    def predict(self) -> None:
        with self.client.post("/predict", json={"text": next(self.texts)}, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
