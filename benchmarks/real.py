"""Real people: the models on the real CASIA-B development set (subjects 001-074), the measure that counts.

    python benchmarks/real.py --quick                       # <= 60 s once the dev set is unpacked
    nice -n 10 python benchmarks/real.py --write-results    # full: fine-tunes for up to an hour first
    nice -n 10 python benchmarks/real.py --write-results --finetuned RUN_DIR   # reuse a fine-tune run

Dev protocol (docs/evaluation.md): test subjects 051-074, gallery nm-01..04, probes NM / BG / CL,
cross-view Rank-1 (%) excluding identical views, Euclidean and cosine. Rows:
- GEI: the mean silhouette, nearest neighbour (no learning);
- synthetic: the synthetic-only model (models/synthetic, trained only on synthetic walkers), zero-shot;
- random: the same network with random weights (what the architecture alone gives);
- fine-tuned: its checkpoint fine-tuned on real subjects 001-050 (configs/finetune_casiab_dev.yaml).
GEI and the synthetic model are also scored zero-shot on all 74 subjects (it never saw any of them).
The default model (models/default) is trained on all 74, so it is scored by benchmarks/recipe.py through
its recipe's dev-split run instead.
Verification on the 051-074 cross-view pairs (every probe against every gallery sequence of another
view): EER and TAR at FAR 1e-2 / 1e-3, and the genuine / impostor score distributions are plotted to
benchmarks/plots/real_scores.png. Every learned model runs as an exported ONNX artifact on onnxruntime
(one thread), as the service runs it.

`--quick` scores GEI and the synthetic model on 051-062 with each sequence cut to its first 16 frames (a
pipeline check: fewer people make Rank-1 higher, shorter clips lower). The dev set is found as in
tests/support/casiab_dev.py ($GAITLU_CASIAB_DEV, else unpacked once into .data/casiab-dev). The last
line holds the headline Rank-1s as name=value pairs.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from results_md import write_section

from gaitlu.evaluation.crossview import CASIA_B_GALLERY, CASIA_B_PROBES, casia_b
from gaitlu.evaluation.embeddings import EmbeddingSet
from gaitlu.evaluation.gei import gei_embed
from gaitlu.evaluation.verification import PairScores, VerificationReport, pair_scores, verification
from gaitlu.labelled import LabelledSequence, read_labelled, scan_labelled
from gaitlu.manifest import MANIFEST_NAME
from gaitlu.preprocess import to_model_frames
from tests.support import casiab_dev
from workflows.models import CHECKPOINT_FILE, MODELS

REPO = Path(__file__).resolve().parents[1]
FINETUNE_CONFIG = REPO / "configs" / "finetune_casiab_dev.yaml"
DEV_PARTITION = REPO / "configs" / "casiab_dev_partition.json"
PLOT = REPO / "benchmarks" / "plots" / "real_scores.png"
CONDITIONS = ("NM", "BG", "CL")
METRICS = ("euc", "cos")
QUICK_FRAMES, QUICK_SUBJECTS = 16, 12
Embed = Callable[[list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class RealSet:
    """Real sequences held in memory (model frames), in scan order."""

    sequences: list[LabelledSequence]
    frames: list[np.ndarray]

    def subset(self, subjects: tuple[str, ...]) -> RealSet:
        keep = [i for i, s in enumerate(self.sequences) if s.subject in set(subjects)]
        return RealSet([self.sequences[i] for i in keep], [self.frames[i] for i in keep])


def load_real(subjects: tuple[str, ...], max_frames: int | None = None) -> RealSet:
    """The dev set's sequences of `subjects`, read through the project's loader (first frames only
    when `max_frames` is given)."""
    root = casiab_dev.dev_tree(subjects)
    sequences = scan_labelled(root, set(subjects))
    return RealSet(sequences, [read_labelled(s)[:max_frames] for s in sequences])


def embed_set(data: RealSet, embed: Embed, batch: int = 8) -> EmbeddingSet:
    chunks = [embed(data.frames[i : i + batch]) for i in range(0, len(data.frames), batch)]
    emb = np.concatenate([c if c.ndim == 3 else c[:, None] for c in chunks])
    labels = [(s.subject, s.condition, s.view) for s in data.sequences]
    subject, cond, view = (np.array(x) for x in zip(*labels, strict=True))
    return EmbeddingSet(emb, subject, cond, view)


def artifact_embed(artifact: Path, precision: str = "fp32") -> Embed:
    """The service's ONNX runtime on one CPU thread (what `gaitlu serve` runs); the model's own output,
    as `gaitlu eval --artifact` scores it."""
    from runtime.embedder import load_artifact_embedder

    return load_artifact_embedder(artifact, "cpu", precision, threads=1, inter_threads=1).embed_output


def cross_view(data: EmbeddingSet) -> dict[str, dict[str, float]]:
    """{metric: {NM, BG, CL, mean}} headline Rank-1s."""
    out = {}
    for metric in METRICS:
        headline = casia_b(data, metric).headline()
        out[metric] = {**headline, "mean": float(np.mean([headline[c] for c in CONDITIONS]))}
    return out


def verification_pairs(data: EmbeddingSet, metric: str = "cos") -> PairScores:
    """All probe (NM, BG and CL) x gallery pairs of different views."""
    probes = [c for conds in CASIA_B_PROBES.values() for c in conds]
    return pair_scores(
        data.select(np.isin(data.cond, probes)), data.select(np.isin(data.cond, CASIA_B_GALLERY)), metric
    )


@dataclass
class Row:
    name: str
    label: str
    command: str
    build_s: float | None  # wall time to make the model (None: nothing to build)
    test: EmbeddingSet  # its embeddings of 051-074
    dev: dict[str, dict[str, float]]  # Rank-1 on 051-074
    zero_shot: dict[str, dict[str, float]] | None  # Rank-1 on all 74
    verify: VerificationReport
    scores: PairScores
    synthetic: dict[str, dict[str, dict[str, float]]] = field(
        default_factory=dict
    )  # set -> metric -> figures


def score_model(
    name: str,
    label: str,
    command: str,
    build_s: float | None,
    embed: Embed,
    dev: RealSet,
    full: RealSet | None,
) -> Row:
    """Embed (all 74 subjects when `full` is given, else 051-074) and score."""
    start = time.perf_counter()
    everyone = embed_set(full, embed) if full is not None else None
    test = everyone.select(np.isin(everyone.subject, casiab_dev.TEST)) if everyone else embed_set(dev, embed)
    scores = verification_pairs(test)
    logging.info(
        "%s: %d sequences embedded in %.0f s", name, len(everyone or test), time.perf_counter() - start
    )
    zero_shot = cross_view(everyone) if everyone is not None else None
    return Row(name, label, command, build_s, test, cross_view(test), zero_shot, verification(scores), scores)


def shown(path: Path) -> str:
    """A path as the table prints it: relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def run(command: list[str]) -> float:
    """Run a gaitlu command (as a user would), return its wall time."""
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "gaitlu"), *command], check=True)
    return time.perf_counter() - start


def random_artifact(work: Path, model: Path) -> tuple[Path, float]:
    """The model's architecture with seeded random weights, exported like any checkpoint."""
    import torch

    from gaitlu.manifest import read_manifest
    from train.checkpoint import atomic_save, build_checkpoint
    from train.config import config_to_dict
    from train.zoo.registry import build_network

    info = read_manifest(model).model
    torch.manual_seed(0)
    network = build_network(info.name, info.config)
    ckpt = work / "random.pt"
    atomic_save(build_checkpoint(network, {"model": config_to_dict(network.config)}, 0), ckpt)
    return work / "random", run(["export", str(ckpt), "--out", str(work / "random")])


def finetune_wall_s(run_dir: Path) -> float:
    """Training wall time of a fine-tune run from its metrics log (steps x batch / throughput)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    batch = config["data"]["subjects_per_batch"] * config["data"]["sequences_per_subject"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    total, last = 0.0, 0
    for r in records:
        total += (r["step"] - last) * batch / r["sequences_per_s"]
        last = r["step"]
    return total


def finetuned_artifact(work: Path, model: Path, run_dir: Path | None) -> tuple[Path, float, str]:
    """Fine-tune the synthetic model's checkpoint on 001-050 (or reuse `run_dir`); export fp32 + int8 + fp16,
    int8 calibrated on real training people (001-004)."""
    from train.checkpoint import latest_checkpoint

    command = (
        f"gaitlu train finetune --config {FINETUNE_CONFIG.relative_to(REPO)} --init "
        f"{shown(model / CHECKPOINT_FILE)} --dataset DEV --partition "
        f"{DEV_PARTITION.relative_to(REPO)} --out RUN --device cpu"
    )
    dataset = casiab_dev.dev_tree(casiab_dev.ALL)
    if run_dir is None:
        run_dir = work / "finetune"
        run(command.replace("DEV", str(dataset)).replace("RUN", str(run_dir)).split()[1:])
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None, f"no checkpoint in {run_dir}"
    calibration = work / "calibration"
    calibration.mkdir(exist_ok=True)
    for subject in casiab_dev.TRAIN[:4]:
        if not (calibration / subject).exists():
            (calibration / subject).symlink_to(dataset / subject)
    out = work / "finetuned"
    run(["export", str(ckpt), "--out", str(out), "--int8", "--fp16", "--calibration", str(calibration)])
    return out, finetune_wall_s(run_dir), command


def plot_scores(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.2), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        both = np.concatenate([row.scores.genuine, row.scores.impostor])
        bins = np.linspace(both.min(), both.max(), 80)
        ax.hist(row.scores.impostor, bins, density=True, alpha=0.6, label="impostor")
        ax.hist(row.scores.genuine, bins, density=True, alpha=0.6, label="genuine")
        ax.set_title(f"{row.label}\nEER {row.verify.eer:.1f} %", fontsize=9)
        ax.set_xlabel("score = - cosine distance")
        ax.legend(fontsize=7)
    fig.suptitle("Real CASIA-B 051-074, cross-view pairs (probes NM/BG/CL vs gallery nm-01..04)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


SHIFT = ("--fps", "15", "--elevation", "25", "35", "--person-px", "40")  # another dataset's capture
SHIFT_SUBJECTS, SHIFT_SEED = 12, 500
SYNTH_FRAMES = 40  # synthetic test walks are cut to their first 40 frames (a relative comparison)
DISTRACTOR_FRAMES = 30  # distractor walks only need to be plausible neighbours
DISTRACTOR_COPIES = 18  # 001-050's embeddings tiled with noise: about 100k gallery sequences


def synthetic_sets(work: Path) -> dict[str, Path]:
    """The same 12 synthetic people filmed as CASIA-B is and as another dataset might be (15 fps,
    cameras 25-35 degrees up, 40-px-tall people): does a model's gain travel?"""
    sets = {"synthetic": work / "synth-casiab", "shifted": work / "synth-shifted"}
    base = ["synth", "--subjects", str(SHIFT_SUBJECTS), "--seed", str(SHIFT_SEED), "--workers", "2"]
    for name, extra in (("synthetic", ()), ("shifted", SHIFT)):
        if not (sets[name] / "partition.json").exists():
            run([*base, "--out", str(sets[name]), *extra])
    return sets


def synthetic_rank1(folder: Path, embed: Embed) -> dict[str, dict[str, float]]:
    """Cross-view Rank-1 over all the set's subjects (no model trained on any of them)."""
    sequences = scan_labelled(folder)
    frames = [to_model_frames(read_labelled(s))[:SYNTH_FRAMES] for s in sequences]
    return cross_view(embed_set(RealSet(sequences, frames), embed))


def precision_rank1(artifact: Path, dev: RealSet, fp32: Row) -> dict[str, dict[str, dict[str, float]]]:
    """Dev Rank-1 of the fp32 (the row already scored), int8 and fp16 files of one artifact."""
    out = {"fp32": fp32.dev}
    for precision in ("int8", "fp16"):
        out[precision] = cross_view(embed_set(dev, artifact_embed(artifact, precision)))
    return out


def index_rank1(test: EmbeddingSet, distractors: EmbeddingSet, rng: np.random.Generator) -> dict[str, float]:
    """Rank-1 (%) of the service's subject search, exact vs the approximate index, on a gallery of the
    real test people (nm-01..04, all views) plus distractors: the other real people's embeddings tiled
    DISTRACTOR_COPIES times with noise (each copy a new identity). Probes: the NM, BG and CL walks."""
    from gallery.index import GalleryIndex
    from gallery.search import search_subjects
    from gallery.settings import IndexSettings

    gallery = test.select(np.isin(test.cond, CASIA_B_GALLERY))
    probes = test.select(~np.isin(test.cond, CASIA_B_GALLERY))
    parts = gallery.emb.shape[1]
    noise = np.float32(0.3 * distractors.emb.std())
    tiles = [
        distractors.emb + noise * rng.standard_normal(distractors.emb.shape, np.float32)
        for _ in range(DISTRACTOR_COPIES)
    ]
    extra = np.concatenate(tiles)
    extra /= np.linalg.norm(extra, axis=2, keepdims=True)  # per-part L2, as the model's output
    labels = [*gallery.subject, *(f"d{c}-{s}" for c in range(DISTRACTOR_COPIES) for s in distractors.subject)]
    x = np.ascontiguousarray(np.concatenate([gallery.emb, extra]).reshape(len(labels), -1))  # (N, P*C)
    sequences = {i: (subject, str(i)) for i, subject in enumerate(labels)}
    names, counts = np.unique(np.array(labels), return_counts=True)
    sizes = dict(zip(names.tolist(), counts.tolist(), strict=True))
    queries = np.ascontiguousarray(probes.emb.reshape(len(probes), -1))
    out = {"gallery": float(len(x))}
    ids = np.arange(len(x), dtype=np.int64)
    sample = np.random.default_rng(1)

    def sampler(n: int) -> list[np.ndarray]:
        return [x[sample.permutation(len(x))[:n]]]

    for name, settings in (("exact", IndexSettings(exact_max=len(x))), ("approximate", IndexSettings())):
        index = GalleryIndex.build(x.shape[1], len(x), settings, sampler, [(ids, x)])
        hits = search_subjects(index.search, queries, index.ntotal, parts, sequences, sizes, 1, 1, None)
        out[name] = 100.0 * float(
            np.mean([h[0].subject_id == s for h, s in zip(hits, probes.subject, strict=True)])
        )
    return out


def fmt(figures: dict[str, float]) -> str:
    return " / ".join(f"{figures[c]:.1f}" for c in CONDITIONS) + f" ({figures['mean']:.1f})"


def report(rows: list[Row], quick: bool, elapsed: float) -> tuple[str, str]:
    """The RESULTS.md section body and the name=value headline."""
    lines = [
        "| model | how it was made | wall time | 051-074 euc NM / BG / CL (mean) | cos | EER % | TAR@1e-2 | "
        "TAR@1e-3 | all 74, zero-shot: euc | cos |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tar = r.verify.tar
        zero = [fmt(r.zero_shot[m]) for m in METRICS] if r.zero_shot else ["-", "-"]
        build = f"{r.build_s / 60:.0f} min" if r.build_s is not None else "-"
        lines.append(
            f"| {r.label} | {r.command} | {build} | {fmt(r.dev['euc'])} | {fmt(r.dev['cos'])} | "
            f"{r.verify.eer:.1f} | {tar[1e-2]:.1f} | {tar[1e-3]:.1f} | {zero[0]} | {zero[1]} |"
        )
    setup = (
        "`python benchmarks/real.py --write-results` on a 2-core x86-64 CPU, no GPU, shared "
        "with other jobs (wall times are this shared machine's); "
        f"{elapsed / 60:.0f} min in all. Real CASIA-B dev set, cross-view Rank-1 (%) excluding identical "
        "views, gallery nm-01..04, whole sequences (first 720 frames); verification pairs: every NM/BG/CL "
        "probe against every gallery sequence of another view (cosine), 051-074. Every learned model runs as "
        "its exported ONNX artifact (onnxruntime, one thread)."
    )
    if quick:
        setup = f"`--quick`: subjects 051-062, sequences cut to their first {QUICK_FRAMES} frames."
    body = textwrap.fill(setup, 105) + "\n\n" + "\n".join(lines)
    pairs = [f"{r.name}_{c.lower()}={r.dev['euc'][c]:.1f}" for r in rows for c in CONDITIONS]
    pairs += [f"{r.name}_zero_shot_mean={r.zero_shot['euc']['mean']:.1f}" for r in rows if r.zero_shot]
    pairs += [f"{r.name}_eer={r.verify.eer:.1f}" for r in rows]
    return body, " ".join(pairs)


def synthetic_report(rows: list[Row]) -> str:
    lines = [
        "| model | synthetic, CASIA-B capture: euc NM / BG / CL (mean) | synthetic, other capture | kept |",
        "|---|---|---|---|",
    ]
    for r in rows:
        if r.synthetic:
            same, shifted = r.synthetic["synthetic"]["euc"], r.synthetic["shifted"]["euc"]
            lines.append(
                f"| {r.label} | {fmt(same)} | {fmt(shifted)} | {shifted['mean'] / same['mean']:.2f} |"
            )
    return "\n".join(lines)


def compression_report(precisions: dict[str, dict[str, dict[str, float]]], index: dict[str, float]) -> str:
    fp32 = precisions["fp32"]
    lines = [
        "| variant | 051-074 euc NM / BG / CL (mean) | cos | change of the mean vs fp32 (euc / cos) |",
        "|---|---|---|---|",
    ]
    for name, figures in precisions.items():
        change = " / ".join(f"{figures[m]['mean'] - fp32[m]['mean']:+.2f}" for m in METRICS)
        lines.append(f"| {name} | {fmt(figures['euc'])} | {fmt(figures['cos'])} | {change} |")
    exact, approx = index["exact"], index["approximate"]
    search = (
        f"Subject search (`LocalStore`'s aggregation) over {index['gallery']:.0f} gallery sequences: the "
        f"1,056 nm-01..04 walks of 051-074 plus {DISTRACTOR_COPIES} noisy copies of 001-050's embeddings "
        "(each copy other identities); probes: 051-074's 1,584 NM/BG/CL walks, any view. Rank-1 exact "
        f"{exact:.2f} %, approximate index (default settings: projection to 256-d, IVF with 4-bit PQ "
        f"fast-scan, fp16 re-scoring) {approx:.2f} %: change {approx - exact:+.2f} points."
    )
    lines += ["", textwrap.fill(search, 105)]
    return "\n".join(lines)


Precisions = dict[str, dict[str, dict[str, float]]]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="GEI + default on short clips, <= 60 s")
    parser.add_argument("--finetuned", type=Path, help="reuse this fine-tune run folder (skip training)")
    parser.add_argument(
        "--mixed",
        type=Path,
        help="also score this run: fine-tuned on 001-050 mixed with synthetic identities",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=MODELS["synthetic"],
        help="the synthetic model's folder (default: models/synthetic)",
    )
    parser.add_argument("--workdir", type=Path, help="keep artifacts and runs here (default: a temp dir)")
    parser.add_argument("--write-results", action="store_true", help="update RESULTS.md and the plot")
    args = parser.parse_args()
    if not (args.model / MANIFEST_NAME).is_file():
        parser.error(f"no model at {args.model}: build it with `make synthetic-model` or pass --model DIR")
    return args


def trained_rows(
    args: argparse.Namespace, work: Path, dev: RealSet, embeds: dict[str, Embed]
) -> tuple[list[Row], Path]:
    """The random-init, fine-tuned (and `--mixed`) models' rows, and the fine-tuned artifact; their
    embedders join `embeds`."""
    random_dir, random_s = random_artifact(work, args.model)
    embeds["random"] = artifact_embed(random_dir)
    rows = [
        score_model(
            "random",
            "same network, random init",
            "seeded init",
            random_s,
            embeds["random"],
            dev,
            None,
        )
    ]
    tuned_dir, tuned_s, command = finetuned_artifact(work, args.model, args.finetuned)
    embeds["finetuned"] = artifact_embed(tuned_dir)
    label = "synthetic model fine-tuned on 001-050"
    rows.append(score_model("finetuned", label, f"`{command}`", tuned_s, embeds["finetuned"], dev, None))
    if args.mixed is not None:
        from train.checkpoint import latest_checkpoint

        mixed_dir = work / "mixed"
        run(["export", str(latest_checkpoint(args.mixed)), "--out", str(mixed_dir)])
        embeds["mixed"] = artifact_embed(mixed_dir)
        label = "synthetic model fine-tuned on 001-050 + 100 synthetic people"
        command = "the same, `--dataset` = 001-050 and 100 synthetic subject folders (docs/training.md)"
        rows.append(
            score_model("mixed", label, command, finetune_wall_s(args.mixed), embeds["mixed"], dev, None)
        )
    return rows, tuned_dir


def compression_scores(
    work: Path, tuned_dir: Path, dev: RealSet, everyone: RealSet, rows: list[Row], embeds: dict[str, Embed]
) -> tuple[Precisions, dict[str, float]]:
    """Fills each learned row's synthetic-set Rank-1s; returns the fine-tuned model's Rank-1 per precision
    and, exact against approximate, in an index padded with the other people as distractors."""
    sets = synthetic_sets(work)
    for row in rows:
        if row.name != "random":
            row.synthetic = {name: synthetic_rank1(path, embeds[row.name]) for name, path in sets.items()}
    tuned_row = next(r for r in rows if r.name == "finetuned")
    precisions = precision_rank1(tuned_dir, dev, tuned_row)
    others = everyone.subset(casiab_dev.TRAIN)
    others = RealSet(others.sequences, [f[:DISTRACTOR_FRAMES] for f in others.frames])
    distractors = embed_set(others, embeds["finetuned"])
    return precisions, index_rank1(tuned_row.test, distractors, np.random.default_rng(0))


def write_results(rows: list[Row], body: str, headline: str, extra: str, compression: str) -> None:
    """The plot and RESULTS.md's two sections on real people."""
    plot_scores(rows, PLOT)
    body += f"\n\n![score distributions](plots/{PLOT.name})"
    body += (
        "\n\nDoes the gain travel? The same models on 12 synthetic people (no model trained on them; "
        f"walks cut to their first {SYNTH_FRAMES} frames), "
        "filmed as CASIA-B is and with another capture (15 fps, cameras 25-35 degrees up, 40-px-tall "
        "people; `gaitlu synth " + " ".join(SHIFT) + "`); kept = other / CASIA-B capture mean:\n\n" + extra
    )
    write_section(f"## Real people (CASIA-B dev set)\n\n{body}\n\n{headline}\n")
    write_section(
        "## Compression and search on real embeddings\n\n"
        "The fine-tuned model of the real-people table (its ONNX artifact exported with `--int8 --fp16`, "
        "int8 calibrated on real subjects 001-004), on real CASIA-B 051-074; `benchmarks/real.py`.\n\n"
        f"{compression}\n"
    )


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        dev = load_real(
            casiab_dev.TEST[:QUICK_SUBJECTS] if args.quick else casiab_dev.TEST,
            QUICK_FRAMES if args.quick else None,
        )
        everyone = None if args.quick else load_real(casiab_dev.ALL)
        default = f"{shown(args.model)} (synthetic walkers only; `make synthetic-model`)"
        embeds: dict[str, Embed] = {
            "gei": gei_embed,
            "default": artifact_embed(args.model),
        }  # the model under test
        rows = [
            score_model("gei", "GEI", "-", None, embeds["gei"], dev, everyone),
            score_model(
                "default", "synthetic model, zero-shot", default, None, embeds["default"], dev, everyone
            ),
        ]
        if everyone is not None:  # not --quick
            trained, tuned_dir = trained_rows(args, work, dev, embeds)
            rows += trained
            precisions, index = compression_scores(work, tuned_dir, dev, everyone, rows, embeds)
    body, headline = report(rows, args.quick, time.perf_counter() - start)
    print(body)
    if not args.quick:
        extra = synthetic_report(rows)
        compression = compression_report(precisions, index)
        print(extra, compression, sep="\n\n")
        int8_change = precisions["int8"]["euc"]["mean"] - precisions["fp32"]["euc"]["mean"]
        headline += f" finetuned_int8_change={int8_change:.2f}"
        headline += f" index_rank1_change={index['approximate'] - index['exact']:.2f}"
        if args.write_results:
            write_results(rows, body, headline, extra, compression)
    print(headline)


if __name__ == "__main__":
    main()
