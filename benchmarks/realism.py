"""Realism gap of the synthetic walker: real-vs-synthetic frame classifier and per-view shape statistics.

    python benchmarks/realism.py --quick           # small sets, <= 60 s: a pipeline check
    python benchmarks/realism.py --write-results   # the RESULTS.md figures (a few CPU minutes)

A small CNN learns to tell single real CASIA-B frames (dev subjects 001-050) from synthetic frames of
the same views and conditions (`gaitlu synth`'s walker), and is tested on frames of other people on
both sides (real 051-074, other synthetic identities). Its test accuracy is the realism gap: 50 % means
the frames cannot be told apart, 100 % means every frame gives the walker away. Frames are binarised at
128 first, so the classifier judges shape, not the grey levels of the edges (the dev set keeps four
levels, the generator's resize gives 256).

Beside it, per view, the mean of simple per-frame measures (silhouette width, area, width of the head,
torso, leg and foot bands) and the width's swing over the gait cycle, real against synthetic: they say
where the gap is. The dev set is located as in tests/support/casiab_dev.py. The last line holds the
figures as name=value pairs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from results_md import write_section

from gaitlu.labelled import read_labelled, scan_labelled
from gaitlu.preprocess import to_model_frames
from synth import identity_for, render_sequence, sequence_rng
from synth.layout import OPENGAIT_SEQUENCES
from tests.support import casiab_dev

SYNTH_SEED = 21  # identities the classifier trains on; SYNTH_SEED + 1 are the test identities
STAT_VIEWS = ("000", "036", "090", "126", "162")
BANDS = {"head": (0, 8), "torso": (16, 32), "legs": (44, 58), "feet": (58, 64)}  # rows of the 64x44 frame


@dataclass(frozen=True)
class Size:
    train_subjects: int  # real subjects from 001 and synthetic identities, each
    test_subjects: int  # real subjects from 051 and other synthetic identities, each
    frames_per_sequence: int
    epochs: int


FULL = Size(50, 24, 4, 4)
QUICK = Size(6, 4, 2, 1)


def pick_frames(seq: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    return seq[np.sort(rng.choice(len(seq), size=min(count, len(seq)), replace=False))]


def real_frames(subjects: tuple[str, ...], count: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(N, 64, 44) sampled frames of these real subjects and their whole nm sequences at STAT_VIEWS."""
    rng = np.random.default_rng(seed)
    root = casiab_dev.dev_tree(casiab_dev.ALL)
    frames, whole = [], []
    for seq in scan_labelled(root, set(subjects)):
        data = read_labelled(seq)
        frames.append(pick_frames(data, count, rng))
        if seq.condition.startswith("nm") and seq.view in STAT_VIEWS:
            whole.append((seq.view, data))
    return np.concatenate(frames), whole


def synthetic_frames(subjects: int, seed: int, count: int) -> tuple[np.ndarray, list]:
    """The same for `subjects` synthetic people at every CASIA-B (condition, view), 40-frame walks."""
    rng = np.random.default_rng(seed)
    frames, whole = [], []
    for s in range(1, subjects + 1):
        person = identity_for(seed, s)
        for i, (cond, view) in enumerate(OPENGAIT_SEQUENCES):
            data = to_model_frames(render_sequence(person, view, cond[:2], 40, sequence_rng(seed, s, i)))
            frames.append(pick_frames(data, count, rng))
            if cond.startswith("nm") and f"{view:03d}" in STAT_VIEWS:
                whole.append((f"{view:03d}", data))
    return np.concatenate(frames), whole


class FrameClassifier(nn.Module):
    """Three strided convs and a linear layer: enough to find any systematic shape difference."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in ((1, 16), (16, 32), (32, 64)):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x).mean(dim=(2, 3)))  # (N, 1, 64, 44) -> (N, 2)


def as_input(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((frames > 127).astype(np.float32))[:, None]  # binarised (N, 1, 64, 44)


def classifier_accuracy(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], epochs: int
) -> float:
    """Balanced test accuracy (%) of a FrameClassifier trained on (real, synthetic) frames."""
    torch.manual_seed(0)
    x = torch.cat([as_input(train[0]), as_input(train[1])])
    y = torch.cat([torch.zeros(len(train[0]), dtype=torch.long), torch.ones(len(train[1]), dtype=torch.long)])
    model = FrameClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 128):
            idx = order[start : start + 128]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        correct = [
            float((model(as_input(frames)).argmax(1) == label).float().mean())
            for label, frames in enumerate(test)
        ]
    return 100.0 * float(np.mean(correct))


def frame_measures(seq: np.ndarray) -> np.ndarray:
    """(T, 6) per frame: width, area / 64, widths of the head, torso, leg and foot bands (pixels)."""
    mask = seq > 127
    band = [mask[:, a:b].any(axis=1).sum(axis=1) for a, b in BANDS.values()]
    return np.stack([mask.any(axis=1).sum(axis=1), mask.sum(axis=(1, 2)) / 64, *band], axis=1)


def view_statistics(whole: list) -> dict[str, np.ndarray]:
    """Per view: the 6 frame measures averaged over frames, then the width's std within a walk."""
    out = {}
    for view in STAT_VIEWS:
        measures = [frame_measures(seq) for v, seq in whole if v == view]
        swing = np.mean([m[:, 0].std() for m in measures])
        out[view] = np.append(np.concatenate(measures).mean(axis=0), swing)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sets: a pipeline check")
    parser.add_argument("--write-results", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--label", default="current walker", help="what this run measures (RESULTS.md)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    size = QUICK if args.quick else FULL
    start = time.perf_counter()
    train_ids = casiab_dev.ALL[: size.train_subjects]
    test_ids = casiab_dev.TEST[: size.test_subjects]
    real_train, _ = real_frames(train_ids, size.frames_per_sequence, 0)
    real_test, real_whole = real_frames(test_ids, size.frames_per_sequence, 1)
    syn_train, _ = synthetic_frames(size.train_subjects, SYNTH_SEED, size.frames_per_sequence)
    syn_test, syn_whole = synthetic_frames(size.test_subjects, SYNTH_SEED + 1, size.frames_per_sequence)
    accuracy = classifier_accuracy((real_train, syn_train), (real_test, syn_test), size.epochs)
    real_stats, syn_stats = view_statistics(real_whole), view_statistics(syn_whole)
    elapsed = time.perf_counter() - start

    names = ["width", "area/64", "head", "torso", "legs", "feet", "width swing"]
    rows = [
        f"| {view} | "
        + " | ".join(f"{r:.1f} / {s:.1f}" for r, s in zip(real_stats[view], syn_stats[view], strict=True))
        + " |"
        for view in STAT_VIEWS
    ]
    table = "\n".join([f"| view | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|", *rows])
    setup = (
        f"`python benchmarks/realism.py` ({args.label}; {elapsed:.0f} s on a 2-core x86-64 CPU shared with "
        f"other jobs). Classifier: {len(real_train)} real + {len(syn_train)} synthetic training frames "
        f"({size.train_subjects} people each), tested on {len(real_test)} + {len(syn_test)} frames of "
        f"{size.test_subjects} other people each, binarised at 128, {size.epochs} epochs. Statistics "
        "(real / synthetic, pixels of the 64x44 model frame, nm walks): band widths over rows 0-8 (head), "
        "16-32 (torso and arms), 44-58 (legs), 58-64 (feet); width swing = std of the width within a walk."
    )
    body = f"**Real-vs-synthetic frame classifier accuracy: {accuracy:.1f} %** (50 % = indistinguishable)\n\n"
    body += textwrap.fill(setup, 105) + "\n\n" + table
    print(body)
    headline = f"realism_classifier_acc={accuracy:.1f} " + " ".join(
        f"width_{v}_real={real_stats[v][0]:.1f} width_{v}_synth={syn_stats[v][0]:.1f}" for v in STAT_VIEWS
    )
    if args.write_results and not args.quick:
        write_section(f"## Realism of the synthetic walker ({args.label})\n\n{body}\n\n{headline}\n")
    print(headline)


if __name__ == "__main__":
    main()
