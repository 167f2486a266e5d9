"""Calibrated scores on people the calibration never saw, centring on and off, and batched search.

For each labelled set (a synthetic one this benchmark generates with `gaitlu synth`, and the real
CASIA-B development subjects when an unpacked copy is found), the subjects are split in two disjoint
halves of people: the first half calibrates (`gaitlu.evaluation.calibration`, as `gaitlu calibrate`
does; with centring, its mean is the centre), the second half is measured with those thresholds:

- EER and TAR at FAR 1e-2 / 1e-3 of the subject-level score (/search's: a probe against an enrolled
  subject's best sequence) and of the sequence-pair score, and Rank-1, without and with centring;
- the FAR actually observed at each calibrated threshold on the other half (target: within 2x of
  the nominal 1e-2 and 1e-3).

Then the service: one /search call with 32 probes against 32 calls of one probe, on a gallery of
precomputed embeddings (JSON, the search path alone) and with sequence files (multipart, inference
included), sequential calls, same server.

    python benchmarks/calibration.py --quick   # <= 60 s (the shipped default model, models/default)
    python benchmarks/calibration.py --write-results

The real set (full mode only): CASIA-B dev subjects 051-074, found or unpacked as in
tests/support/casiab_dev.py ($GAITLU_CASIAB_DEV, else unpacked once into .data/casiab-dev); absent, it
is skipped with a message. Its figures are research use only; nothing per sequence is written anywhere.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks run as scripts (their folder is on the path already, after it)

from honest import ok  # noqa: E402
from results_md import RESULTS, write_section  # noqa: E402

from gaitlu.embedding import EmbeddingLayout  # noqa: E402
from gaitlu.evaluation.calibration import (  # noqa: E402
    FARS,
    calibrate,
    reference_centre,
    sequence_scores,
    service_vectors,
    split_subjects,
    subject_comparisons,
)
from gaitlu.evaluation.embeddings import EmbeddingSet  # noqa: E402
from gaitlu.evaluation.runner import embed_sequences  # noqa: E402
from gaitlu.evaluation.verification import PairScores, equal_error_rate, tar_at_far  # noqa: E402
from gaitlu.labelled import scan_labelled  # noqa: E402
from gaitlu.manifest import FarTable, read_manifest  # noqa: E402
from runtime import load_artifact_embedder  # noqa: E402
from synth.layout import generate_opengait  # noqa: E402
from tests.support import casiab_dev  # noqa: E402
from tests.support.servers import npy_bytes, served_in_thread  # noqa: E402
from tests.support.walkers import walking_sequence  # noqa: E402

SYNTH_SEED = 404  # people the default model (seed 0) never saw
PROBES = 32


@dataclass
class Measured:
    """One set, one centring choice: figures on the measured half with the other half's calibration."""

    name: str
    centred: bool
    subjects: tuple[int, int]  # calibrating, measured
    rank1: float
    eer: dict[str, float]  # comparison -> %
    tar: dict[str, dict[float, float]]  # comparison -> FAR -> TAR % (the measured half's own thresholds)
    observed: dict[str, dict[float, tuple[float, int]]]  # comparison -> nominal FAR -> (observed FAR, n)


def embed_set(artifact: Path, root: Path, cache: Path | None) -> EmbeddingSet:
    """The set's model output through the artifact's runtime, cached (outside the repo) when asked."""
    manifest = read_manifest(artifact)
    key = f"{manifest.model_sha256[:16]}-{abs(hash(str(root.resolve()))):x}.npz"
    if cache is not None and (cache / key).is_file():
        with np.load(cache / key) as f:
            return EmbeddingSet(f["emb"], f["subject"], f["cond"], f["view"])
    embedder = load_artifact_embedder(artifact, backend="cpu")
    data = embed_sequences(scan_labelled(root), embedder.embed_output, progress=False).data
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cache / key, emb=data.emb, subject=data.subject, cond=data.cond, view=data.view)
    return data


def observed_far(table: FarTable, impostor: np.ndarray) -> dict[float, tuple[float, int]]:
    """At each calibrated threshold: the share of these (new) impostor comparisons accepted, and how many."""
    return {t.far: (float((impostor >= t.score).mean()), len(impostor)) for t in table.thresholds}


def measure(data: EmbeddingSet, name: str, enrolled: int, centred: bool, seed: int = 0) -> Measured:
    names = np.random.default_rng(seed).permutation(np.unique(data.subject))
    first = np.isin(data.subject, names[: len(names) // 2])
    calibrating, measured = data.select(first), data.select(~first)
    centre = reference_centre(service_vectors(calibrating.emb)) if centred else None
    calibration = calibrate(calibrating, name, enrolled, centre, seed)
    vectors = service_vectors(measured.emb, centre)
    comparisons = subject_comparisons(
        vectors, measured.subject, split_subjects(measured.subject, enrolled, seed)
    )
    scores: dict[str, PairScores] = {
        "subject": comparisons.scores(),
        "sequence": sequence_scores(vectors, measured.subject),
    }
    return Measured(
        name=name,
        centred=centred,
        subjects=(len(np.unique(calibrating.subject)), len(np.unique(measured.subject))),
        rank1=comparisons.rank1(),
        eer={c: equal_error_rate(s) for c, s in scores.items()},
        tar={c: {far: tar_at_far(s, far) for far in FARS[:2]} for c, s in scores.items()},
        observed={c: observed_far(calibration.table(c), s.impostor) for c, s in scores.items()},  # type: ignore[arg-type]
    )


def synthetic_set(folder: Path, subjects: int, per_subject: int) -> Path:
    root = folder / "synthetic"
    generate_opengait(root, subjects, seed=SYNTH_SEED, sequences_per_subject=per_subject, workers=2)
    return root


def casiab_root() -> Path | None:
    """The real dev set's test subjects 051-074 (found or unpacked as tests/support/casiab_dev.py does)."""
    try:
        return casiab_dev.dev_tree(casiab_dev.TEST)
    except FileNotFoundError as exc:
        print(f"real CASIA-B set skipped: {exc}", file=sys.stderr)
        return None


def linked(root: Path, folder: Path, subjects: tuple[str, ...]) -> Path:
    """A tree of just `subjects` of `root`, as links (the dev set's test people)."""
    out = folder / "casiab-dev-test"
    out.mkdir()
    for subject in subjects:
        (out / subject).symlink_to((root / subject).resolve())
    return out


# ----- batched search through the service


def answered(request: Callable[[], httpx.Response], probes: int) -> None:
    """Every probe answered without an error (a refusal waited out for its Retry-After, benchmarks/
    honest.py): a search's 200 carries each probe's own error."""
    data = ok(request).json()["data"]
    errors = [p["error"] for p in data if p["error"] is not None]
    if len(data) != probes or errors:
        raise RuntimeError(f"/search answered {len(data)} of {probes} probes, errors: {errors[:3]}")


def search_throughput(artifact: Path, folder: Path, sequences: int) -> dict[str, float]:
    """Probes per second: one /search with PROBES probes vs PROBES calls of one, JSON and multipart."""
    manifest = read_manifest(artifact)
    layout = EmbeddingLayout(manifest.output.parts, manifest.output.part_dim)
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((sequences, layout.parts, layout.part_dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=2, keepdims=True)
    gallery = rows.reshape(sequences, -1)
    with (
        served_in_thread(artifact, folder / "data", max_files=PROBES) as url,
        httpx.Client(base_url=url, timeout=120) as api,
    ):
        ok(lambda: api.post("/galleries", json={"name": "bench"}))
        for start in range(0, sequences, PROBES):
            chunk = [{"embedding": v.tolist()} for v in gallery[start : start + PROBES]]
            body = {"model_hash": manifest.model_sha256, "embeddings": chunk}
            ok(functools.partial(api.post, f"/galleries/bench/subjects/p{start}/sequences", json=body))
        probes = [v.tolist() for v in gallery[rng.choice(sequences, PROBES, replace=False)]]
        files = [("files", (f"q{i}.npy", npy_bytes(walking_sequence(i, 30)))) for i in range(PROBES)]

        # Bodies encoded once: Python's json spends ~1.5 us a float, which would time this client instead.
        batch_body = json.dumps({"gallery": "bench", "k": 5, "embeddings": probes}).encode()
        single_bodies = [json.dumps({"gallery": "bench", "k": 5, "embeddings": [p]}).encode() for p in probes]
        headers = {"Content-Type": "application/json"}

        def json_batch() -> None:
            answered(lambda: api.post("/search", content=batch_body, headers=headers), PROBES)

        def json_single() -> None:
            for body in single_bodies:
                answered(functools.partial(api.post, "/search", content=body, headers=headers), 1)

        def files_batch() -> None:
            answered(lambda: api.post("/search", data={"gallery": "bench", "k": "5"}, files=files), PROBES)

        def files_single() -> None:
            for item in files:
                search = functools.partial(api.post, "/search", data={"gallery": "bench", "k": "5"})
                answered(functools.partial(search, files=[item]), 1)

        rates = {}
        for name, call in (("json_batch", json_batch), ("json_single", json_single),
                           ("files_batch", files_batch), ("files_single", files_single)):  # fmt: skip
            call()  # warm
            started, rounds = time.perf_counter(), 0
            while rounds < 2 or time.perf_counter() - started < 1.0:
                call()
                rounds += 1
            rates[name] = PROBES * rounds / (time.perf_counter() - started)
    return rates


# ----- report


def fmt_observed(value: tuple[float, int], nominal: float) -> str:
    far, n = value
    expected = nominal * n
    return f"{far:.2e} ({far / nominal:.2f}x; {expected:.0f} expected)"


def table(results: list[Measured]) -> str:
    lines = [
        "| set (calibrate / measure subjects) | centring | Rank-1 % | subject EER % | TAR@1e-2 | TAR@1e-3 "
        "| sequence EER % | TAR@1e-2 | TAR@1e-3 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} ({r.subjects[0]} / {r.subjects[1]}) | {'on' if r.centred else 'off'} "
            f"| {r.rank1:.1f} "
            f"| {r.eer['subject']:.2f} | {r.tar['subject'][1e-2]:.1f} | {r.tar['subject'][1e-3]:.1f} "
            f"| {r.eer['sequence']:.2f} | {r.tar['sequence'][1e-2]:.1f} | {r.tar['sequence'][1e-3]:.1f} |"
        )
    lines += [
        "",
        "FAR observed on the measured half at the calibrating half's thresholds (ratio to nominal; how many "
        "impostor comparisons the nominal FAR expects above it):",
        "",
        "| set | centring | comparison | at 1e-2 | at 1e-3 | at 1e-4 |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in results:
        for comparison in ("subject", "sequence"):
            cells = " | ".join(fmt_observed(r.observed[comparison][far], far) for far in FARS)
            lines.append(f"| {r.name} | {'on' if r.centred else 'off'} | {comparison} | {cells} |")
    return "\n".join(lines)


def section(results: list[Measured], rates: dict[str, float], quick: bool, artifact: Path, sets: str) -> str:
    manifest = read_manifest(artifact)
    model = f"`{manifest.model.name}` {json.dumps(manifest.model.config.get('channels'))}"
    checkpoint = Path(manifest.source.checkpoint).name
    speed = (
        f"| probes | one call of {PROBES} | {PROBES} calls of one | speed-up |\n|---|---:|---:|---:|\n"
        f"| embeddings (JSON, search only) | {rates['json_batch']:.0f}/s | {rates['json_single']:.0f}/s "
        f"| {rates['json_batch'] / rates['json_single']:.2f}x |\n"
        f"| sequences (multipart, with inference) | {rates['files_batch']:.1f}/s "
        f"| {rates['files_single']:.1f}/s "
        f"| {rates['files_batch'] / rates['files_single']:.2f}x |"
    )
    return f"""## Calibration

`python benchmarks/calibration.py{" --quick" if quick else ""}` on {platform.machine()}, this shared 2-core
CPU (other jobs running: ratios side by side in one run count, absolute rates do not). Model: {model}
from `{checkpoint}` (model {manifest.model_sha256[:12]}), the default model's recipe. Sets: {sets}. Each
set's subjects are split in two disjoint halves of people: one calibrates (thresholds, and with centring
the centre), the other is measured; subject scores enrol 4 sequences per subject, the rest probe.

{table(results)}

Batched search, one server, sequential calls, k = 5, a gallery of precomputed embeddings:

{speed}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sets (<= 60 s)")
    parser.add_argument("--artifact", type=Path, default=ROOT / "models" / "default",
                        help="export artifact (default: the shipped default model)")  # fmt: skip
    parser.add_argument("--cache", type=Path, help="keep embeddings here between runs (outside the repo)")
    parser.add_argument("--write-results", action="store_true", help=f"update the section in {RESULTS}")
    args = parser.parse_args()
    if not (args.artifact / "manifest.json").is_file():
        raise SystemExit(
            f"no artifact at {args.artifact}: run `make run` (or gaitlu demo) first, or pass --artifact"
        )
    subjects, per_subject = (20, 8) if args.quick else (150, 12)
    results, described = [], []
    with tempfile.TemporaryDirectory(prefix="gaitlu-bench-calibration-") as tmp:
        folder = Path(tmp)
        sets = [(f"synthetic seed {SYNTH_SEED}", synthetic_set(folder, subjects, per_subject))]
        described.append(
            f"synthetic, {subjects} people x {per_subject} walks (`gaitlu synth --seed {SYNTH_SEED}`)"
        )
        real = None if args.quick else casiab_root()  # --quick: synthetic only, within its 60 s
        if real is not None:
            root = linked(real, folder, casiab_dev.TEST)
            sets.append(("CASIA-B dev", root))
            count = len([p for p in root.iterdir() if p.is_dir()])
            described.append(f"real CASIA-B development subjects ({count} people, all conditions and views)")
        for name, root in sets:
            data = embed_set(args.artifact, root, args.cache)
            results += [measure(data, name, 4, centred) for centred in (False, True)]
        rates = search_throughput(args.artifact, folder, 256 if args.quick else 4096)
    print(table(results))
    print(f"probes/s json batch {rates['json_batch']:.0f} single {rates['json_single']:.0f}; "
          f"files batch {rates['files_batch']:.1f} single {rates['files_single']:.1f}")  # fmt: skip
    if args.write_results:
        write_section(section(results, rates, args.quick, args.artifact, "; ".join(described)))
    head = {(r.name, r.centred): r for r in results}
    synth = [head[(sets[0][0], c)] for c in (False, True)]
    pairs = [
        f"synthetic_subject_eer_off={synth[0].eer['subject']:.2f}",
        f"synthetic_subject_eer_on={synth[1].eer['subject']:.2f}",
        *(
            f"synthetic_observed_far_ratio_{far:g}={synth[1].observed['subject'][far][0] / far:.2f}"
            for far in FARS[:2]
        ),
    ]
    if len(sets) > 1:
        real_on = head[(sets[1][0], True)]
        real_off = head[(sets[1][0], False)]
        pairs += [
            f"casiab_subject_eer_off={real_off.eer['subject']:.2f}",
            f"casiab_subject_eer_on={real_on.eer['subject']:.2f}",
        ]
        pairs += [
            f"casiab_observed_far_ratio_{far:g}={real_on.observed['subject'][far][0] / far:.2f}"
            for far in FARS[:2]
        ]
    pairs += [
        f"batch_speedup_json={rates['json_batch'] / rates['json_single']:.2f}",
        f"batch_speedup_files={rates['files_batch'] / rates['files_single']:.2f}",
    ]
    print(" ".join(pairs))


if __name__ == "__main__":
    main()
