"""Synthetic gait: a procedural 3-D walker driven by real CMU motion capture, rendered as silhouettes.

Public API: sample or rebuild a person (`sample_identity`, `identity_for`), render one walk
(`render_sequence` for dataset frames, `render_raw` for ground-truth masks at any canvas size) and write
whole corpora (`generate_opengait`, `generate_gaitlu`). See docs/synthetic.md.
"""

from synth.identity import Identity, identity_for, sample_identity, sequence_rng
from synth.layout import generate_gaitlu, generate_opengait
from synth.motion import load_basis
from synth.render import render_raw, render_sequence

__all__ = [
    "Identity",
    "generate_gaitlu",
    "generate_opengait",
    "identity_for",
    "load_basis",
    "render_raw",
    "render_sequence",
    "sample_identity",
    "sequence_rng",
]
