"""Threads under contention: the same LM job quiet and beside a competing CPU-bound process.

The job: the packaged SmolLM2-135M generating ``--new`` tokens for ``--prompts`` prompts of about
``--words`` words through adaptladder's Generator (batch 4), in a fresh process each time.
Four settings, interleaved round by round, medians of ``--repeats``:
  - torch's default threads (one per core; what a plain transformers job does) and
  - ``threads=auto`` (adaptladder.threads: gives up the cores other processes hold),
each quiet and beside one competitor (a pure-Python busy loop: one core taken). The report is the
slowdown of each setting beside the competitor against its own quiet time; with one of two
cores taken the fair slowdown is ~2x.

``python benchmarks/bench_threads.py [--repeats 3] [--prompts 8] [--new 16] [--words 120]``
Run it on an otherwise idle machine (check ``uptime``); it prints a Markdown table and the CPU flags.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import time

JOB = r"""
import json, sys, time
threads = sys.argv[1]
n, new, words = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
import torch
from adaptladder.generation.decode import Generator
if threads == "default":
    setting = torch.get_num_threads()  # torch's own choice: a thread per core
else:
    setting = "auto"
gen = Generator("smollm2", batch_size=4, threads=setting, device="cpu")
gen.tokenizer
base = "the committee met on tuesday to review the budget for the coming year and agreed on new rules ".split()
prompts = [gen.build_prompt(" ".join((base * 20)[i:i + words]), "Summarise the text in one line.") for i in range(n)]
gen.generate(prompts[:1], max_new_tokens=2)  # warm-up
t = time.perf_counter()
gen.generate(prompts, max_new_tokens=new)
print(json.dumps({"seconds": time.perf_counter() - t, "threads_end": torch.get_num_threads()}))
"""


def _spin(seconds: float) -> None:
    end = time.time() + seconds
    x = 0
    while time.time() < end:
        x += 1


def _job(threads: str, args: argparse.Namespace) -> dict:
    out = subprocess.run([sys.executable, "-c", JOB, threads, str(args.prompts), str(args.new), str(args.words)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--words", type=int, default=120)
    args = ap.parse_args()
    times: dict[tuple[str, str], list[float]] = {}
    ends: dict[tuple[str, str], list[int]] = {}
    for r in range(args.repeats):
        for load in ("quiet", "beside a competitor"):
            for threads in ("default", "auto"):
                hog = None
                if load != "quiet":
                    hog = mp.Process(target=_spin, args=(3600,), daemon=True)
                    hog.start()
                    time.sleep(1.0)  # let the policy see it
                try:
                    res = _job(threads, args)
                finally:
                    if hog is not None:
                        hog.terminate()
                        hog.join()
                times.setdefault((threads, load), []).append(res["seconds"])
                ends.setdefault((threads, load), []).append(res["threads_end"])
                print(f"round {r + 1}: {threads:7s} {load:20s} {res['seconds']:7.2f} s "
                      f"(threads at the end: {res['threads_end']})", file=sys.stderr, flush=True)
    from adaptladder.encode import cpu_flags

    print(f"CPU flags: {cpu_flags()}; {args.prompts} prompts of ~{args.words} words, {args.new} new tokens, "
          f"medians of {args.repeats}")
    print("| threads | quiet (s) | beside a competitor (s) | slowdown |")
    print("|---|---|---|---|")
    for threads in ("default", "auto"):
        q = statistics.median(times[(threads, "quiet")])
        b = statistics.median(times[(threads, "beside a competitor")])
        print(f"| {threads} | {q:.2f} | {b:.2f} | {b / q:.2f}x |")


if __name__ == "__main__":
    main()
