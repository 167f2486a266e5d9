"""Synthetic generator throughput: sequences/s written to disk, 1 vs 2 worker processes.

Writes a GaitLU-layout corpus (the bulk use: pretraining data) and an OpenGait-layout set into a temp
folder and times them. Besides wall-clock rates it reports CPU milliseconds per sequence (this process
and its workers), which is what the rate on N uncontended cores follows from: N * 1000 / cpu_ms.

    python benchmarks/synth_throughput.py --quick   # <= 60 s
    python benchmarks/synth_throughput.py           # larger run

The last line holds the headline figures as name=value pairs.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.layout import generate_gaitlu, generate_opengait


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the worker pool)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(generate, out: Path, subjects: int, k: int, workers: int) -> tuple[float, float]:
    """(sequences per second wall-clock, CPU ms per sequence) for one generate call."""
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    n = generate(out, subjects, seed=0, sequences_per_subject=k, workers=workers)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    return n / wall, 1000 * cpu / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run, <= 60 s")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    lu_subjects = 150 if args.quick else 1000
    og_subjects = 4 if args.quick else 20
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_gaitlu(root / "warm", 2, sequences_per_subject=2)  # load the motion basis, warm caches
        for workers in (1, 2):
            rate, cpu_ms = timed(generate_gaitlu, root / f"lu{workers}", lu_subjects, 4, workers)
            results[f"gaitlu_w{workers}_seq_per_s"] = rate
            results[f"gaitlu_w{workers}_cpu_ms_per_seq"] = cpu_ms
            print(
                f"gaitlu layout, {workers} worker(s): {rate:.0f} seq/s, {cpu_ms:.2f} CPU ms/seq", flush=True
            )
        rate, cpu_ms = timed(generate_opengait, root / "og", og_subjects, 110, 2)
        results["opengait_w2_seq_per_s"] = rate
        results["opengait_w2_cpu_ms_per_seq"] = cpu_ms
        print(f"opengait layout, 2 workers: {rate:.0f} seq/s, {cpu_ms:.2f} CPU ms/seq", flush=True)
    results["uncontended_2core_seq_per_s"] = 2000 / results["gaitlu_w2_cpu_ms_per_seq"]
    print(" ".join(f"{k}={v:.1f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
