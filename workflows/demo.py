"""`gaitlu demo`: the README main job, composed from the public commands a user would type.

From nothing to a running service: take a shipped model (models/default, trained on real CASIA-B
people, or models/synthetic, trained only on synthetic walkers: workflows/models.py; built from scratch
by the same commands where it is missing), enrol a demo gallery of synthetic subjects, then serve on
127.0.0.1 with an API key. Everything else lands under the data dir; every finished step is skipped on
a rerun, so a warm start is seconds.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from gaitlu.files import SECRET_MODE, write_atomic
from gaitlu.manifest import MANIFEST_NAME, read_manifest
from workflows.models import (
    CASIAB_DEV_SOURCE,
    GALLERY_WALKS,
    MODELS,
    RealRecipe,
    Recipe,
    SyntheticRecipe,
    calibrate,
    console,
    gaitlu,
    once,
    shipped_model,
)

app = typer.Typer(add_completion=False)

DEMO_GALLERY = "demo"
RECIPES: dict[str, Recipe] = {"default": RealRecipe(), "synthetic": SyntheticRecipe()}


def enroll_demo_gallery(data_dir: Path, artifact: Path, service_dir: Path, subjects: int, seed: int) -> Path:
    """Enrol a labelled synthetic set offline as gallery 'demo'; return a probe: a new walk of subject 3."""
    demo = data_dir / "demo"
    labelled = demo / "gallery-set"
    once(
        demo / ".done" / "gallery-set",
        "Synthetic demo subjects (CASIA-B layout)",
        [
            "synth",
            "--out",
            str(labelled),
            "--subjects",
            str(subjects),
            "--sequences-per-subject",
            str(GALLERY_WALKS),
            "--seed",
            str(seed),
            "--layout",
            "opengait",
        ],
    )
    once(
        service_dir / ".demo-enrolled",
        f"Enrol gallery '{DEMO_GALLERY}' (offline, same store as the server)",
        [
            "enroll",
            str(labelled),
            "--gallery",
            DEMO_GALLERY,
            "--create",
            "--offline",
            "--data-dir",
            str(service_dir),
            "--artifact",
            str(artifact),
        ],
    )
    probe = demo / "probe-003.pkl"
    if not probe.exists():
        import numpy as np

        from gaitlu.sequence import save_sequence
        from synth import identity_for, render_sequence

        walk = render_sequence(identity_for(seed, 3), 54.0, "nm", 80, np.random.default_rng(seed + 12345))
        save_sequence(walk, probe)
    page_walkers(service_dir, subjects, seed)
    return probe


PAGE_ENROLLED = ("003", "011", "027")  # enrolled subjects the web page offers new walks of ...
PAGE_STRANGERS = 2  # ... and people the gallery has never seen


def page_walkers(service_dir: Path, subjects: int, seed: int) -> list[Path]:
    """The web page's demo walkers (the server's DATA_DIR/demo, service/demo.py): new walks of enrolled
    subjects, `enrolled-<id>.pkl` (a search should name them), and of strangers, `stranger-<n>.pkl` (it
    should answer "no match"). Written once; with these present the server renders none of its own,
    all of whom would be strangers to the demo gallery."""
    import numpy as np

    from gaitlu.preprocess import to_model_frames
    from gaitlu.sequence import save_sequence
    from service.demo import demo_folder
    from synth import identity_for, render_sequence

    folder = demo_folder(service_dir)
    people = [(f"enrolled-{s}", int(s)) for s in PAGE_ENROLLED if int(s) <= subjects]
    people += [(f"stranger-{n}", subjects + 1000 + n) for n in range(1, PAGE_STRANGERS + 1)]
    written = []
    for name, person in people:
        path = folder / f"{name}.pkl"
        if not path.exists():
            rng = np.random.default_rng(seed + 23456 + person)  # not a walk the gallery holds
            walk = render_sequence(identity_for(seed, person), 54.0, "nm", 60, rng)
            save_sequence(to_model_frames(walk), path)  # (T, 64, 44): small downloads for the page
        written.append(path)
    return written


def page_url(host: str, port: int, key: str) -> str:
    """The web page's address with the API key handed over in its fragment (never sent to the server;
    the page stores the key and removes it from the address bar), like a notebook server's token URL."""
    return f"http://{host}:{port}/#key={key}"


def api_key(data_dir: Path) -> str:
    """The demo's API key: made once, kept (owner-readable only) so reruns print the same one. Written
    whole or not at all (an interrupted first run leaves no empty key to serve with), owner-only from the
    file's creation on, never readable by others even for a moment."""
    path = data_dir / "api-key"
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # a demo started beside this one made it first
            write_atomic(path, secrets.token_urlsafe(24), permissions=SECRET_MODE, exclusive=True)
    return path.read_text().strip()


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its gallery, data and builds.")] = Path(
        ".data"
    ),
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
    model: Annotated[
        str,
        typer.Option(
            help="default: trained on real CASIA-B people (its weights carry CASIA-B's terms); synthetic: "
            "trained only on synthetic walkers (no third-party data terms)."
        ),
    ] = "default",
    model_dir: Annotated[
        Path | None, typer.Option(help="Serve the model in this folder instead (built there if missing).")
    ] = None,
    rebuild: Annotated[bool, typer.Option(help="Build the model from scratch even if it is there.")] = False,
    casiab_dev: Annotated[
        Path, typer.Option(help="The packed CASIA-B dev set that a build of the default trains on.")
    ] = CASIAB_DEV_SOURCE,
    subjects: Annotated[int, typer.Option(help="Subjects in the demo gallery.")] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the demo gallery's synthetic people.")] = 0,
    serve: Annotated[bool, typer.Option(help="Start the server at the end.")] = True,
) -> None:
    """Take (or build) a shipped model, enrol a demo gallery (cached under --data-dir), then serve."""
    if model not in RECIPES:
        raise typer.BadParameter(f"{model!r}: choose one of {', '.join(RECIPES)}", param_hint="--model")
    data_dir = data_dir.resolve()
    recipe = RECIPES[model]
    builds = data_dir / "models"
    folder = (model_dir or MODELS[model]).resolve()
    artifact = shipped_model(folder, builds, recipe, rebuild, casiab_dev.resolve())
    if not serve and rebuild:
        return  # `make default-model`: the model is built, calibrated and published, nothing to demo
    if calibrate(artifact, builds, recipe.calibration) is not None:  # a model from before calibration
        console.print(f"[yellow]{artifact / MANIFEST_NAME} now holds its calibration: keep it.[/yellow]")
    # One service folder per model: a gallery is only searchable with the model that enrolled it.
    service_dir = data_dir / "service" / read_manifest(artifact).model_sha256[:12]
    probe = enroll_demo_gallery(data_dir, artifact, service_dir, subjects, seed)
    key = api_key(data_dir)
    print_ready(host, port, key, data_dir, subjects, probe)
    if serve:
        os.environ["GAITLU_API_KEYS"] = key
        gaitlu(
            "Serve",
            [
                "serve",
                "--artifact",
                str(artifact),
                "--data-dir",
                str(service_dir),
                "--host",
                host,
                "--port",
                str(port),
            ],
        )


def print_ready(host: str, port: int, key: str, data_dir: Path, subjects: int, probe: Path) -> None:
    """Where the web page and the API are, the key, and a search to paste."""
    url = f"http://{host}:{port}"
    console.rule("[bold green]gaitlu is ready[/bold green]")
    console.print(f"Web page:  {page_url(host, port, key)}")
    console.print("           (hands the page the API key; the demo walkers enrolled-* are in the gallery,")
    console.print(f"            stranger-* are not)   API docs: {url}/docs")
    console.print(f"API key:   {key}   (kept in {data_dir / 'api-key'})")
    console.print(f"Gallery:   '{DEMO_GALLERY}' ({subjects} synthetic subjects)")
    console.print("Search with a new walk of subject 003:")
    console.print(
        f"  curl -s -H 'X-API-Key: {key}' -F gallery={DEMO_GALLERY} -F k=5 -F max_far=0.001 "
        f"-F files=@{probe} {url}/search",
        soft_wrap=True,
    )
