"""The protocol names `gaitlu eval` knows, their default metrics, and one entry point for all four."""

from __future__ import annotations

from pathlib import Path

from gaitlu.errors import ConfigError
from gaitlu.evaluation.crossview import CrossViewReport, casia_b, oumvlp
from gaitlu.evaluation.distance import METRICS
from gaitlu.evaluation.embeddings import EmbeddingSet, load_embeddings
from gaitlu.evaluation.retrieval import GrewReport, RetrievalReport, gait3d, grew
from gaitlu.labelled import Partition

# Euclidean for the first three and cosine for Gait3D, as the GaitSSB paper evaluates them.
DEFAULT_METRIC = {"casia-b": "euc", "oumvlp": "euc", "grew": "euc", "gait3d": "cos"}
PROTOCOLS = tuple(DEFAULT_METRIC)

Report = CrossViewReport | RetrievalReport | GrewReport


def check_partition(protocol: str, partition: Partition) -> None:
    """Fail before any embedding is computed when the partition cannot serve `protocol`."""
    if protocol == "gait3d" and not partition.probe:
        raise ConfigError("the gait3d protocol needs a partition with a non-empty PROBE_SET")


def evaluate(
    data: EmbeddingSet,
    protocol: str,
    metric: str | None = None,
    partition: Partition | None = None,
    submission: str | Path | None = None,
) -> Report:
    """Score the test-set embeddings `data` under `protocol`.

    `partition` is needed only for gait3d (its PROBE_SET); `submission` is the CSV path GREW's
    unlabelled probes are ranked into (None: not written).
    """
    if protocol not in DEFAULT_METRIC:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    metric = metric or DEFAULT_METRIC[protocol]
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    match protocol:
        case "casia-b":
            return casia_b(data, metric)
        case "oumvlp":
            return oumvlp(data, metric)
        case "grew":
            return grew(data, submission, metric)
        case _:
            return gait3d(data, partition.probe if partition else None, metric)


def evaluate_saved(
    path: str | Path,
    protocol: str,
    metric: str | None = None,
    partition: Partition | None = None,
    submission: str | Path | None = None,
) -> Report:
    """Recompute a protocol from an embedding file written with `--save-embeddings`."""
    return evaluate(load_embeddings(path), protocol, metric, partition, submission)
