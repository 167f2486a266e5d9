"""Quality ladder: does GaitSSB pretraining help, and does fine-tuning help more? (synthetic data, CPU)

    nice -n 10 .venv/bin/python benchmarks/quality.py --write-results  # full: ~12-15 CPU min of pretraining
    .venv/bin/python benchmarks/quality.py --quick                     # pipeline smoke run, <= 60 s

1. An unlabelled GaitLU-style corpus (`gaitlu synth --layout gaitlu`, seed 11) pretrains the tiny
   GaitSSB (configs/gaitssb_tiny.yaml) with the paper recipe; only batch and steps shrink.
2. A SEPARATE labelled CASIA-B-like set (`--layout opengait`, seed 12: other people) is scored with the
   CASIA-B protocol (Rank-1 excluding identical views, Euclidean) for four models: the GEI baseline,
   the same network randomly initialised, the SSL-pretrained network (zero-shot), and the pretrained
   network fine-tuned on the labelled set's TRAIN_SET (configs/finetune_tiny.yaml, fewer steps).
Targets: pretrained beats random init and GEI on NM/BG/CL; fine-tuned beats pretrained.
The last line holds the Rank-1s as name=value pairs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from results_md import write_section

from gaitlu.evaluation.gei import gei_embed
from gaitlu.evaluation.protocols import evaluate
from gaitlu.evaluation.runner import Embed, embed_sequences, select_test_sequences
from gaitlu.labelled import load_partition
from synth.layout import generate_gaitlu, generate_opengait
from train import finetune, pretrain
from train.config import load_config, replace
from train.embedder import CheckpointEmbedder, load_checkpoint_embedder
from train.model import GaitSSB

REPO = Path(__file__).resolve().parents[1]
UNLABELLED_SEED, LABELLED_SEED = 11, 12
CONDITIONS = ("NM", "BG", "CL")


@dataclass(frozen=True)
class Size:
    unlabelled_subjects: int
    unlabelled_per_subject: int
    labelled_subjects: int  # 74/124 of them train, the rest are the test set
    labelled_per_subject: int  # 110 = every condition x view of CASIA-B
    pretrain_batch: int
    pretrain_steps: int
    finetune_p: int
    finetune_k: int
    finetune_steps: int


FULL = Size(400, 4, 40, 110, 32, 300, 4, 4, 60)
QUICK = Size(16, 2, 4, 12, 8, 2, 2, 2, 2)


def scaled(milestones: tuple[int, ...], total: int, steps: int) -> tuple[int, ...]:
    """The recipe's milestones at the same fractions of a shorter run."""
    return tuple(max(1, round(m * steps / total)) for m in milestones)


def make_data(root: Path, size: Size) -> tuple[Path, Path]:
    corpus, labelled = root / "unlabelled", root / "labelled"
    generate_gaitlu(corpus, size.unlabelled_subjects, UNLABELLED_SEED, size.unlabelled_per_subject, workers=2)
    generate_opengait(labelled, size.labelled_subjects, LABELLED_SEED, size.labelled_per_subject, workers=2)
    return corpus, labelled


def run_pretrain(corpus: Path, run_dir: Path, size: Size) -> Path:
    cfg = pretrain.load_pretrain_config(REPO / "configs" / "gaitssb_tiny.yaml")
    t = cfg.trainer
    cfg = replace(
        cfg,
        data=replace(cfg.data, global_batch=size.pretrain_batch),
        scheduler=replace(
            cfg.scheduler, milestones=scaled(cfg.scheduler.milestones, t.max_steps, size.pretrain_steps)
        ),
        trainer=replace(t, max_steps=size.pretrain_steps, checkpoint_every=size.pretrain_steps, log_every=10),
    )
    result = pretrain.train(cfg, corpus, run_dir, device="cpu")
    assert result.checkpoint is not None
    return result.checkpoint


def run_finetune(init: Path, labelled: Path, run_dir: Path, size: Size) -> Path:
    cfg = load_config(REPO / "configs" / "finetune_tiny.yaml", finetune.FinetuneConfig)
    t = cfg.trainer
    cfg = replace(
        cfg,
        data=replace(cfg.data, subjects_per_batch=size.finetune_p, sequences_per_subject=size.finetune_k),
        scheduler=replace(
            cfg.scheduler, milestones=scaled(cfg.scheduler.milestones, t.max_steps, size.finetune_steps)
        ),
        trainer=replace(t, max_steps=size.finetune_steps, checkpoint_every=size.finetune_steps, log_every=10),
    )
    result = finetune.finetune(cfg, init, labelled, labelled / "partition.json", run_dir, device="cpu")
    assert result.checkpoint is not None
    return result.checkpoint


def rank1(labelled: Path, embed: Embed) -> dict[str, float]:
    """CASIA-B headline Rank-1 (%) per probe condition of `embed` on the labelled set's test subjects."""
    split = load_partition(labelled / "partition.json")
    run = embed_sequences(select_test_sequences(labelled, split), embed, progress=False)
    return evaluate(run.data, "casia-b", "euc").headline()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a pipeline check, not a result")
    parser.add_argument("--workdir", type=Path, help="keep data and runs here (default: a temp folder)")
    parser.add_argument(
        "--write-results", action="store_true", help="update benchmarks/RESULTS.md (full mode)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)  # on a shared 2-core machine one thread per process is faster
    size = QUICK if args.quick else FULL

    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        clock: dict[str, float] = {}
        start = time.perf_counter()
        corpus, labelled = make_data(root, size)
        clock["data"] = time.perf_counter() - start
        start = time.perf_counter()
        pretrained = run_pretrain(corpus, root / "pretrain", size)
        clock["pretrain"] = time.perf_counter() - start
        start = time.perf_counter()
        finetuned = run_finetune(pretrained, labelled, root / "finetune", size)
        clock["finetune"] = time.perf_counter() - start

        torch.manual_seed(0)
        random_init = GaitSSB(pretrain.load_pretrain_config(REPO / "configs" / "gaitssb_tiny.yaml").model)
        models: dict[str, Embed] = {
            "gei": gei_embed,
            "random": CheckpointEmbedder(random_init, "random-init", torch.device("cpu")).embed,
            "ssl": load_checkpoint_embedder(pretrained, "cpu").embed,
            "ft": load_checkpoint_embedder(finetuned, "cpu").embed,
        }
        start = time.perf_counter()
        results = {name: rank1(labelled, embed) for name, embed in models.items()}
        clock["eval"] = time.perf_counter() - start
        test_subjects = len(load_partition(labelled / "partition.json").test)

    body, headline = report(results, clock, size, test_subjects)
    print(body)
    if args.write_results and not args.quick:
        write_section(f"## Quality ladder\n\n{body}\n\n{headline}\n")
    print(headline)


def report(
    results: dict[str, dict[str, float]], clock: dict[str, float], size: Size, test_subjects: int
) -> tuple[str, str]:
    """The RESULTS.md section body (markdown) and the name=value headline line."""
    labels = {
        "gei": "GEI baseline",
        "random": "GaitSSB, random init",
        "ssl": "GaitSSB, SSL-pretrained (zero-shot)",
        "ft": "+ fine-tuned on the TRAIN_SET",
    }
    rows = [
        f"| {labels[n]} | " + " | ".join(f"{r[c]:.1f}" for c in CONDITIONS) + " |" for n, r in results.items()
    ]
    ssl_wins = all(results["ssl"][c] > max(results["gei"][c], results["random"][c]) for c in CONDITIONS)
    ft_wins = all(results["ft"][c] > results["ssl"][c] for c in CONDITIONS)
    setup = " ".join(
        [
            "`nice -n 10 python benchmarks/quality.py --write-results` on a 2-core x86-64 CPU, no GPU,",
            "shared with other jobs. Unlabelled corpus: `gaitlu synth --layout gaitlu`,",
            f"{size.unlabelled_subjects} identities x {size.unlabelled_per_subject} sequences",
            f"(seed {UNLABELLED_SEED}). Separate labelled set: `gaitlu synth --layout opengait`,",
            f"{size.labelled_subjects} other people x {size.labelled_per_subject} sequences",
            f"(seed {LABELLED_SEED}; {test_subjects} test subjects). Tiny GaitSSB",
            "(configs/gaitssb_tiny.yaml) pretrained with the paper recipe for",
            f"{size.pretrain_steps} steps of {size.pretrain_batch} sequences ({clock['pretrain']:.0f} s);",
            "fine-tuned with configs/finetune_tiny.yaml (the CASIA-B recipe, stage 1 frozen) for",
            f"{size.finetune_steps} steps of {size.finetune_p} x {size.finetune_k} clips of 30 frames",
            f"({clock['finetune']:.0f} s). CASIA-B protocol: gallery nm-01..04, Rank-1 (%) excluding",
            "identical views, Euclidean.",
        ]
    )
    verdict = (
        f"Pretrained beats random init and GEI on NM/BG/CL: {'yes' if ssl_wins else 'NO'}. Fine-tuned beats "
        f"pretrained on all three: {'yes' if ft_wins else 'NO'}. Caveats: {test_subjects} test subjects "
        "(Rank-1 moves in coarse steps), synthetic silhouettes, one seed. `--quick` (about 55 s) only checks "
        "the pipeline end to end."
    )
    table = ["| model | NM | BG | CL |", "|---|---|---|---|", *rows]
    body = "\n\n".join([textwrap.fill(setup, 105), "\n".join(table), textwrap.fill(verdict, 105)])
    pairs = [f"{name}_{c.lower()}={results[name][c]:.1f}" for name in results for c in CONDITIONS]
    pairs += [f"{k}_s={v:.0f}" for k, v in clock.items()]
    return body, " ".join(pairs)


if __name__ == "__main__":
    main()
