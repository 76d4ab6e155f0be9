"""Load test of `adaptladder serve`: throughput and p50/p99 latency vs concurrent users, micro-batched or not.

For each rung (tfidf, features) and each mode (--batching / --no-batching) a server is started
on loopback (127.0.0.1, a free port) from a finished run directory, and locust (headless,
benchmarks/locustfile.py) runs 1, 8, 32 and 128 users, each sending one text per request with
no think time, for a fixed short duration per point. Reported: requests/s, p50/p99 latency
(ms), failures, and the micro-batched / unbatched throughput ratio at each concurrency.

    python benchmarks/bench_serve.py --run-dir /tmp/serve/sms --rungs tfidf,features \
        --users 1,8,32,128 --seconds 20 --out benchmarks/results/serve.json

The machine is shared with other work: numbers are indicative; compare modes side by side
within one invocation, not across machines.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dir: str, rung: str, batching: bool, port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "adaptladder", "serve", run_dir, "--rung", rung, "--host", "127.0.0.1",
           "--port", str(port), "--batching" if batching else "--no-batching", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("server did not start within 300 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()  # SIGTERM: graceful shutdown
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def batch_stats(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    vals = {}
    for line in text.splitlines():
        for key in ("adaptladder_batch_size_texts_sum", "adaptladder_batch_size_texts_count"):
            if line.startswith(key + " "):
                vals[key] = float(line.split()[1])
    return vals


def run_locust(port: int, users: int, seconds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "r"
        cmd = [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless", "-u", str(users),
               "-r", str(max(users, 1)), "-t", f"{seconds}s", "--host", f"http://127.0.0.1:{port}", "--csv",
               str(prefix), "--only-summary", "--stop-timeout", "10", "--loglevel", "WARNING"]
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 120, check=False)
        with open(f"{prefix}_stats.csv") as f:
            rows = {r["Name"]: r for r in csv.DictReader(f)}
    r = rows.get("Aggregated") or next(iter(rows.values()))
    return {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
            "rps": float(r["Requests/s"]), "p50_ms": float(r["50%"]), "p99_ms": float(r["99%"]),
            "mean_ms": float(r["Average Response Time"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--rungs", default="tfidf,features")
    ap.add_argument("--users", default="1,8,32,128")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--max-batch-size", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--out", default=str(HERE / "results" / "serve.json"))
    a = ap.parse_args()
    users = [int(u) for u in a.users.split(",")]
    results = []
    for rung in a.rungs.split(","):
        for batching in (True, False):
            port = free_port()
            proc = start_server(a.run_dir, rung, batching, port,
                                ["--max-batch-size", str(a.max_batch_size), "--max-wait-ms", str(a.max_wait_ms),
                                 "--timeout", "300"])
            try:
                for u in users:
                    before = batch_stats(port)
                    res = run_locust(port, u, a.seconds)
                    after = batch_stats(port)
                    calls = after.get("adaptladder_batch_size_texts_count", 0) - before.get(
                        "adaptladder_batch_size_texts_count", 0)
                    texts = after.get("adaptladder_batch_size_texts_sum", 0) - before.get(
                        "adaptladder_batch_size_texts_sum", 0)
                    res.update(rung=rung, batching=batching, users=u, seconds=a.seconds,
                               mean_batch=round(texts / calls, 2) if calls else None,
                               load_before=os.getloadavg()[0])
                    results.append(res)
                    print(json.dumps(res), flush=True)
            finally:
                stop_server(proc)
    out = {"settings": vars(a), "cpu_count": os.cpu_count(), "results": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(table(results))


def table(results: list[dict]) -> str:
    lines = ["| rung | users | batched req/s | p50 / p99 ms | mean batch | unbatched req/s | p50 / p99 ms | "
             "ratio | failures |", "|---|---|---|---|---|---|---|---|---|"]
    by = {(r["rung"], r["batching"], r["users"]): r for r in results}
    for (rung, batching, u), b in by.items():
        if not batching:
            continue
        n = by.get((rung, False, u))
        ratio = f"{b['rps'] / n['rps']:.2f}x" if n and n["rps"] else "-"
        lines.append(f"| {rung} | {u} | {b['rps']:.1f} | {b['p50_ms']:.0f} / {b['p99_ms']:.0f} | {b['mean_batch']} | "
                     + (f"{n['rps']:.1f} | {n['p50_ms']:.0f} / {n['p99_ms']:.0f} | " if n else "- | - | ")
                     + f"{ratio} | {b['failures']} / {n['failures'] if n else '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
