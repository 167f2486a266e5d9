"""Video -> silhouettes: extraction speed per core, mask IoU against ground truth, identity kept (Rank-1).

Synthetic videos (tests/support/synthetic_video.py: the synthetic walker over textured scenes with lighting
and camera noise, encoded as mp4v) are written to a temp folder, then extracted with one OpenCV thread and one
decoding thread. Speed is frames per CPU-second of this process (decode + segment + track + align), so
it is a per-core figure even on a shared machine; the wall-clock rate is printed next to it.

    python benchmarks/video.py --quick   # <= 60 s
    python benchmarks/video.py           # more and longer videos

The last line holds the headline figures as name=value pairs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gaitlu.evaluation.gei import gei_embed
from gaitlu.preprocess import align_sequence, to_model_frames
from synth import identity_for, render_raw
from tests.support.synthetic_video import Walker, make_video, mask_iou
from video import BgSubConfig, ExtractConfig, extract_tracks


def run(videos, config: ExtractConfig) -> tuple[float, float, list[float]]:
    """(frames per CPU-second, frames per wall-second, per-video IoU) of extracting `videos`."""
    frames, cpu, wall, ious = 0, 0.0, 0.0, []
    for walk in videos:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = extract_tracks(walk.path, config=config)
        cpu += time.process_time() - cpu0
        wall += time.perf_counter() - wall0
        frames += result.frames_decoded
        ious.append(mask_iou(result.best, walk.union, result.work_size))
    return frames / cpu, frames / wall, ious


def rank1(root: Path, subjects: int) -> tuple[float, float]:
    """GEI Rank-1 of probes from ground-truth masks and from video, against ground-truth galleries."""
    gallery, truth, extracted = [], [], []
    for s in range(1, subjects + 1):
        person, rng = identity_for(5, s), np.random.default_rng(100 + s)
        gallery.append(to_model_frames(align_sequence(render_raw(person, 90, "nm", 50, rng, (240, 320)))))
        walk = make_video(root / f"id-{s}.mp4", rng, walkers=[Walker(person)], size=(240, 320))
        truth.append(to_model_frames(align_sequence(walk.union)))
        extracted.append(to_model_frames(extract_tracks(walk.path).best.sequence))
    g = gei_embed(gallery)[:, 0]  # (N, 2816)

    def score(probes: list[np.ndarray]) -> float:
        p = gei_embed(probes)[:, 0]
        dist = ((p[:, None] - g[None]) ** 2).sum(-1)  # (N, N)
        return float(np.mean(dist.argmin(axis=1) == np.arange(len(p))))

    return score(truth), score(extracted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run, <= 60 s")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cv2.setNumThreads(1)
    n_small, n_low, n_hd, subjects = (3, 2, 1, 8) if args.quick else (8, 4, 3, 20)
    config = ExtractConfig(keep_masks=True, decode_threads=1)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def videos(tag: str, n: int, size: tuple[int, int], frames: int = 60, **kw) -> list:
            """n videos; the walk is fitted to the frame, so a longer video shows a smaller person."""
            rngs = [np.random.default_rng(1000 * len(tag) + i) for i in range(n)]
            return [
                make_video(root / f"{tag}-{i}.mp4", r, n_frames=frames, size=size, **kw)
                for i, r in enumerate(rngs)
            ]

        small = videos("qvga", n_small, (240, 320))
        low = videos("low", n_low, (240, 320), low_contrast=True)
        far = videos("far", 2, (240, 320), frames=120)
        hd = videos("hd", n_hd, (720, 1280))
        knn = ExtractConfig(keep_masks=True, decode_threads=1, bgsub=BgSubConfig("knn"))
        fps, wall_fps, ious = run(small, config)
        _, _, low_ious = run(low, config)
        far_fps, _, far_ious = run(far, config)
        knn_fps, _, knn_ious = run(small, knn)
        hd_fps, hd_wall, hd_ious = run(hd, config)
        print(f"320x240 MOG2: {fps:.0f} frames/CPU-s ({wall_fps:.0f} wall), IoU {np.round(ious, 3)}")
        print(f"320x240 low contrast: IoU {np.round(low_ious, 3)}")
        print(f"320x240 120-frame walks (smaller person): {far_fps:.0f} frames/CPU-s", end="")
        print(f", IoU {np.round(far_ious, 3)}")
        print(f"320x240 KNN: {knn_fps:.0f} frames/CPU-s, IoU {np.mean(knn_ious):.3f}")
        print(f"1280x720: {hd_fps:.0f} frames/CPU-s ({hd_wall:.0f} wall), IoU {np.mean(hd_ious):.3f}")
        truth_r1, video_r1 = rank1(root, subjects)
        print(
            f"GEI Rank-1, {subjects} people: ground-truth probes {truth_r1:.3f}, video probes {video_r1:.3f}"
        )
    results.update(
        fps_320x240=fps,
        fps_1280x720=hd_fps,
        hd_cost_ratio=fps / hd_fps,
        knn_fps_320x240=knn_fps,
        iou=float(np.mean(ious)),
        iou_low_contrast=float(np.mean(low_ious)),
        iou_all=float(np.mean(ious + low_ious)),
        iou_small_person=float(np.mean(far_ious)),
        fps_320x240_long=far_fps,
        iou_1280x720=float(np.mean(hd_ious)),
        rank1_gt=truth_r1,
        rank1_video=video_r1,
    )
    print(" ".join(f"{k}={v:.3f}" if v < 10 else f"{k}={v:.0f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
