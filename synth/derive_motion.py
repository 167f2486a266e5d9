"""Derive the packaged motion basis (synth/data/motion.npz) from the CMU walking BVH files.

    python -m synth.derive_motion BVH_DIR --out synth/data/motion.npz

Only this compact derivative (segment angles of steady gait cycles on a phase grid) is committed, so the
generator runs without the BVH folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import typer

from gaitlu.errors import DataError
from gaitlu.files import atomic_write
from synth.mocap import SEGMENTS, extract_cycles

log = logging.getLogger(__name__)
N_PHASES = 64


def derive_motion(bvh_dir: Path, out: Path, n_phases: int = N_PHASES) -> int:
    """Extract the cycles of every BVH under bvh_dir and write them to out; returns the cycle count."""
    files = sorted(Path(bvh_dir).rglob("*.bvh"))
    if not files:
        raise DataError(f"no .bvh files under {bvh_dir}")
    cycles = [c for f in files for c in extract_cycles(f, n_phases)]
    if not cycles:
        raise DataError(f"no steady walking cycles found in the BVH files under {bvh_dir}")
    with atomic_write(out) as f:
        np.savez_compressed(
            f,
            angles=np.stack([c.angles for c in cycles]).astype(np.float16),  # (C, P, S, 2) radians
            pelvis=np.stack([c.pelvis for c in cycles]).astype(np.float16),  # (C, P, 3) leg lengths
            stride=np.array([c.stride for c in cycles], dtype=np.float32),
            duration=np.array([c.duration for c in cycles], dtype=np.float32),
            source=np.array([c.source for c in cycles]),
            segments=np.array(list(SEGMENTS)),
        )
    log.info("%d cycles from %d files -> %s", len(cycles), len(files), out)
    return len(cycles)


def main(
    bvh_dir: Path = typer.Argument(..., help="Folder with the CMU walking BVH files."),
    out: Path = typer.Option(Path(__file__).parent / "data" / "motion.npz", help="Output .npz."),
) -> None:
    """Write the motion basis the synthetic walker replays."""
    n = derive_motion(bvh_dir, out)
    typer.echo(f"wrote {n} gait cycles to {out}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    typer.run(main)
