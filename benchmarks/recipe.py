"""Choosing the default's recipe on real people: dev-split Rank-1, plain and under capture shifts, beside GEI.

    python benchmarks/recipe.py --quick                                   # <= 60 s: GEI + one model, 4 people
    nice -n 10 python benchmarks/recipe.py --run dev-a=runs/dev-a --write-results

Each `--run NAME=RUN_DIR` is a `gaitlu train supervised` run on the dev split's training subjects
(001-050); its newest checkpoint is embedded in bf16 (torch, 2 threads: recipe selection only; the
shipped model is measured through its ONNX artifact by benchmarks/real.py). `--artifact NAME=DIR`
scores an exported artifact on onnxruntime instead. Test subjects 051-074, CASIA-B cross-view protocol
(gallery nm-01..04, probes NM / BG / CL, identical views excluded), Euclidean and cosine.

Shifts (train/shifts.py::TEST_SHIFTS) model the held-out sets' captures: low resolution (32 x 22,
upsampled blocky), one gait cycle (10 frames), half the frame rate, outdoor segmentation (thinner,
holes, shadow or blobs), and low resolution with one cycle. A shift is applied to gallery and probes
alike (a camera films both), to each sequence's first `SHIFT_FRAMES` frames (a few cycles: keeps the
run short), and GEI is scored on the same shifted sequences. The last line holds the headline figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from real import CONDITIONS, Embed, RealSet, artifact_embed, cross_view, embed_set, fmt, load_real
from results_md import write_section

from gaitlu.evaluation.calibration import (
    decode_centre,
    sequence_scores,
    service_vectors,
    split_subjects,
    subject_comparisons,
)
from gaitlu.evaluation.embeddings import EmbeddingSet
from gaitlu.evaluation.gei import gei_embed
from gaitlu.manifest import read_manifest
from tests.support import casiab_dev
from train.shifts import TEST_SHIFTS, shifted

SHIFT_FRAMES = 40
QUICK_SUBJECTS, QUICK_FRAMES = 4, 16


def checkpoint_embed(path: Path) -> Embed:
    """A checkpoint's network in eval mode under bf16 autocast (fp32 where the CPU lacks bf16)."""
    import torch

    from train.checkpoint import latest_checkpoint, load_checkpoint
    from train.run import cpu_has_bf16

    newest = latest_checkpoint(path) if path.is_dir() else path
    if newest is None:
        raise SystemExit(f"no checkpoint in {path}")
    model, _ = load_checkpoint(newest)
    bf16 = cpu_has_bf16()

    def embed(batch: list[np.ndarray]) -> np.ndarray:
        out = []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for frames in batch:
                x = torch.from_numpy(frames.astype(np.float32) / 255.0)[None]  # (1, T, 64, 44)
                out.append(model(x).float().numpy())
        return np.concatenate(out)

    return embed


Figures = dict[str, dict[str, dict[str, float]]]  # variant -> metric -> NM / BG / CL / mean


def score(embed: Embed, test: RealSet, variants: dict[str, RealSet]) -> tuple[Figures, EmbeddingSet]:
    """{variant: {metric: {NM, BG, CL, mean}}}, "plain" first, and the plain embeddings."""
    plain = embed_set(test, embed)
    out = {"plain": cross_view(plain)}
    for name, data in variants.items():
        out[name] = cross_view(embed_set(data, embed))
    return out, plain


def observed_far(data: EmbeddingSet, artifact: Path) -> str:
    """The FAR observed on real people (`data`) at the thresholds `artifact`'s calibration promises
    (its scores as the service computes them: per-part unit vectors, centred when the artifact is)."""
    manifest = read_manifest(artifact)
    calibration = manifest.calibration
    if calibration is None:
        raise SystemExit(f"{artifact} is not calibrated (gaitlu calibrate)")
    centring = manifest.indexing.centring
    vectors = service_vectors(data.emb, decode_centre(centring) if centring is not None else None)
    split = split_subjects(data.subject, calibration.enrolled_per_subject)
    measured = {
        "subject": subject_comparisons(vectors, data.subject, split).scores(),
        "sequence": sequence_scores(vectors, data.subject),
    }
    lines = [
        "| comparison | promised FAR | threshold | observed FAR (impostor comparisons) |",
        "|---|---|---|---|",
    ]
    for comparison, scores in measured.items():
        for threshold in calibration.table(comparison).thresholds:  # type: ignore[arg-type]
            observed = float(np.mean(scores.impostor >= threshold.score))
            lines.append(
                f"| {comparison} | {threshold.far:g} | {threshold.score:.4f} | {observed:.2e} "
                f"({observed / threshold.far:.2f}x; {len(scores.impostor)}) |"
            )
    return f"Calibrated on {calibration.dataset}; measured on CASIA-B 051-074:\n\n" + "\n".join(lines)


def named(values: list[str], kind: str) -> dict[str, Path]:
    pairs = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name:
            raise SystemExit(f"--{kind} takes NAME=PATH, got {value!r}")
        pairs[name] = Path(path)
    return pairs


def wall_s(run_dir: Path) -> float | None:
    """The training wall time a run's metrics.jsonl records (its last line's elapsed seconds)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    return float(json.loads(lines[-1]).get("elapsed_s", 0.0)) if lines else None


def losses(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, training loss) as the run logged them (metrics.jsonl, every `log_every` steps)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return np.array([r["step"] for r in rows]), np.array([r["loss"] for r in rows])


def plot_losses(runs: dict[str, Path], path: Path) -> str:
    """Each run's loss curve on one chart (e.g. the same recipe in fp32 and in bf16), and a line giving
    each run's mean loss over its last quarter of logged steps: do the curves agree?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    tails = []
    for name, run_dir in runs.items():
        steps, loss = losses(run_dir)
        ax.plot(steps, loss, label=name)
        tails.append(f"{name} {loss[-max(1, len(loss) // 4) :].mean():.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (triplet + BNNeck CE)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return "mean loss over the last quarter of steps: " + ", ".join(tails)


def report(results: dict[str, Figures], notes: dict[str, str]) -> str:
    variants = list(next(iter(results.values())))
    lines = [
        "| model | how | " + " | ".join(f"{v} (euc)" for v in variants) + " | plain (cos) |",
        "|---" * (len(variants) + 3) + "|",
    ]
    for name, res in results.items():
        cells = [fmt(res[v]["euc"]) for v in variants]
        lines.append(
            f"| {name} | {notes.get(name, '-')} | " + " | ".join(cells) + f" | {fmt(res['plain']['cos'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR of a supervised run")
    parser.add_argument("--artifact", action="append", default=[], help="NAME=ARTIFACT_DIR")
    parser.add_argument(
        "--calibrated",
        action="append",
        default=[],
        help="NAME=ARTIFACT: the FAR observed on the test people at ARTIFACT's calibrated thresholds, "
        "with run NAME's embeddings (the artifact exported from that run)",
    )
    parser.add_argument("--curves", type=Path, help="plot the --run loss curves into this PNG")
    parser.add_argument("--quick", action="store_true", help="4 test people, 16 frames each, <= 60 s")
    parser.add_argument("--write-results", action="store_true", help="update RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    start = time.perf_counter()
    subjects = casiab_dev.TEST[:QUICK_SUBJECTS] if args.quick else casiab_dev.TEST
    test = load_real(subjects, QUICK_FRAMES if args.quick else None)
    cut = [f[:SHIFT_FRAMES] for f in test.frames]
    variants = {name: RealSet(test.sequences, shifted(cut, name)) for name in TEST_SHIFTS}

    embeds: dict[str, Embed] = {"GEI": gei_embed}
    notes = {"GEI": "no learning"}
    for name, path in named(args.run, "run").items():
        embeds[name] = checkpoint_embed(path)
        seconds = wall_s(path)
        notes[name] = f"`{path}`" + (f", {seconds / 60:.0f} min of training" if seconds else "")
    for name, path in named(args.artifact, "artifact").items():
        embeds[name] = artifact_embed(path)
        notes[name] = f"artifact `{path}`"
    if args.quick and len(embeds) == 1:
        from workflows.models import MODELS

        embeds["synthetic"] = artifact_embed(MODELS["synthetic"])
        notes["synthetic"] = "models/synthetic, zero-shot"
    results: dict[str, Figures] = {}
    plain: dict[str, EmbeddingSet] = {}
    for name, embed in embeds.items():
        began = time.perf_counter()
        results[name], plain[name] = score(embed, test, variants)
        logging.info("%s scored in %.0f s", name, time.perf_counter() - began)
    body = report(results, notes)
    for name, artifact in named(args.calibrated, "calibrated").items():
        body += f"\n\nObserved FAR, {name}: " + observed_far(plain[name], artifact)
    runs = named(args.run, "run")
    if args.curves and runs:
        body += "\n\n" + plot_losses(runs, args.curves) + f" ({args.curves.name})"
    print(body)
    gei = results["GEI"]
    headline = []
    for name, res in results.items():
        if name == "GEI":
            continue
        worst = min(res[v]["euc"]["mean"] / max(gei[v]["euc"]["mean"], 1e-9) for v in res)
        euc = res["plain"]["euc"]
        headline += [f"{name}_{c.lower()}={euc[c]:.1f}" for c in CONDITIONS]
        headline.append(f"{name}_worst_shift_vs_gei={worst:.2f}")
    headline.append(f"elapsed_s={time.perf_counter() - start:.0f}")
    if args.write_results and not args.quick:
        write_section(
            "## Capture shifts on the dev split\n\n"
            "`benchmarks/recipe.py`: test subjects 051-074, cross-view Rank-1 % (NM / BG / CL (mean)), "
            f"Euclidean; each shift applied to gallery and probes, to each sequence's first {SHIFT_FRAMES} "
            "frames; GEI on the same shifted data.\n\n" + body + "\n\n" + " ".join(headline) + "\n"
        )
    print(" ".join(headline))


if __name__ == "__main__":
    main()
