"""`gaitlu enroll`, `gaitlu search` and `gaitlu galleries`: the service's command-line clients.

Exit codes fit scripts: 0 all done, 1 some sequences failed (each reported with its reason), 2 a usage
or configuration error, or a server that stayed unreachable (the CLI face prints `error: ...`).
`--json` prints one JSON document on stdout for scripts; progress and logs go to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from client.api import DEFAULT_SERVER, GaitluClient, RetryPolicy, file_upload
from client.enroll import (
    EnrollSummary,
    Layout,
    RemoteTarget,
    Target,
    enroll_items,
    local_target,
    scan_dataset,
)
from gaitlu.errors import ConfigError
from gaitlu.schemas import MAX_K, MAX_RETENTION_DAYS, MAX_TOP_M, ErasurePublic, GalleriesPublic, GalleryPublic

MAX_FAILED_SHOWN = 20

enroll_app = typer.Typer(add_completion=False)
search_app = typer.Typer(add_completion=False)
galleries_app = typer.Typer(add_completion=False)

Server = Annotated[str, typer.Option(envvar="GAITLU_SERVER", help="Service URL.")]
ApiKey = Annotated[
    str | None, typer.Option(envvar="GAITLU_API_KEY", help="API key, sent as X-API-Key.", show_default=False)
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
Retries = Annotated[
    int, typer.Option(min=0, max=20, help="Retries of a failed request (429, 5xx, connection), with backoff.")
]


def _client(server: str, api_key: str | None, retries: int) -> GaitluClient:
    return GaitluClient(server, api_key, retry=RetryPolicy(attempts=retries + 1))


def _emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


@contextmanager
def _progress(enabled: bool) -> Iterator[tuple[Any, Any]]:
    """(on_plan, on_result) callbacks driving a progress bar on stderr (no-ops when disabled)."""
    if not enabled:
        yield None, None
        return
    columns = (TextColumn("enrolling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("enroll", total=None)
        yield (lambda n: bar.update(task, total=n)), (lambda outcome: bar.advance(task))


def _summary_table(summary: EnrollSummary) -> Table:
    table = Table(title="Enrolment")
    table.add_column("outcome")
    table.add_column("sequences", justify="right")
    table.add_row("enrolled", str(summary.enrolled))
    table.add_row("skipped (already held)", str(summary.skipped))
    if summary.conflicts:
        table.add_row("conflict (held with other content)", str(len(summary.conflicts)))
    table.add_row("failed", str(len(summary.failed)))
    if summary.not_done:
        table.add_row("not done (the run stopped)", str(summary.not_done))
    return table


def _print_failures(console: Console, failed: list[tuple[str, str]], label: str = "failed") -> None:
    for path, reason in failed[:MAX_FAILED_SHOWN]:
        console.print(f"[red]{label}[/red] {path}: {reason}", highlight=False, markup=True)
    if len(failed) > MAX_FAILED_SHOWN:
        console.print(f"... and {len(failed) - MAX_FAILED_SHOWN} more (--json lists them all)")


@enroll_app.command()
def enroll(
    dataset_dir: Annotated[Path, typer.Argument(help="Dataset folder: OpenGait layout or flat.")],
    gallery: Annotated[str, typer.Option(help="Gallery to enrol into.")],
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    retries: Retries = 5,
    layout: Annotated[
        Layout,
        typer.Option(
            help="opengait: <subject>/<condition>/<view>/*.pkl; flat: <subject>/<sequence or video>."
        ),
    ] = Layout.opengait,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Sequences in flight at once.")] = 4,
    create: Annotated[bool, typer.Option(help="Create the gallery if it does not exist.")] = False,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Build a local store without a server (needs --data-dir, --artifact)."
        ),
    ] = False,
    data_dir: Annotated[Path | None, typer.Option(help="--offline: the service's data folder.")] = None,
    artifact: Annotated[Path | None, typer.Option(help="--offline: the export artifact folder.")] = None,
    backend: Annotated[
        str,
        typer.Option(
            envvar="GAITLU_BACKEND",
            help="--offline: inference backend (auto, openvino, cpu, cuda, tensorrt, trt-plan).",
        ),
    ] = "auto",
    precision: Annotated[
        str,
        typer.Option(envvar="GAITLU_PRECISION", help="--offline: auto, fp32, bf16 (OpenVINO), int8 or fp16."),
    ] = "auto",
    threads: Annotated[
        int | None, typer.Option(envvar="GAITLU_THREADS", min=1, help="--offline: inference threads.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Enrol every sequence (or video, --layout flat) of a dataset folder; re-running skips what the
    gallery already holds."""
    if offline != (data_dir is not None and artifact is not None) or (not offline and (data_dir or artifact)):
        raise ConfigError("--offline needs both --data-dir and --artifact, and they mean nothing without it")
    items = scan_dataset(dataset_dir, layout)
    if not items:
        raise ConfigError(f"no sequences found in {dataset_dir} with --layout {layout.value}")
    with _progress(not as_json) as (on_plan, on_result), ExitStack() as stack:
        if offline:
            assert data_dir is not None and artifact is not None  # checked above
            target: Target = stack.enter_context(
                local_target(data_dir, artifact, gallery, concurrency, backend, precision, threads)
            )
        else:
            client = stack.enter_context(_client(server, api_key, retries))
            target = RemoteTarget(client, gallery, concurrency)
        summary = enroll_items(
            items, target, create=create, concurrency=concurrency, progress=on_result, on_plan=on_plan
        )
    if as_json:
        _emit_json({"gallery": gallery, **summary.as_dict()})
    else:
        console = Console()
        console.print(_summary_table(summary))
        _print_failures(console, summary.conflicts, "conflict")
        _print_failures(console, summary.failed)
    if summary.fatal is not None:
        raise summary.fatal
    raise typer.Exit(summary.exit_code)


def _filter_option(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--filter must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError('--filter must be a JSON object, e.g. \'{"camera": "gate-2"}\'')
    return value


@search_app.command()
def search(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Probes: sequences (.pkl, .npy, .npz, .zip, a PNG folder) or videos, in one call."
        ),
    ],
    gallery: Annotated[str, typer.Option(help="Gallery to search.")],
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    retries: Retries = 5,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=MAX_K, help="Subjects to return.")] = 5,
    threshold: Annotated[
        float | None, typer.Option(min=-1.0, max=1.0, help="Accept scores >= this (leave out the others).")
    ] = None,
    max_far: Annotated[
        float | None,
        typer.Option(help="Accept scores whose false accept rate is at most this (a calibrated model)."),
    ] = None,
    top_m: Annotated[
        int, typer.Option(min=1, max=MAX_TOP_M, help="A subject scores the mean of its best top_m sequences.")
    ] = 1,
    filter_json: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help='Only sequences matching, JSON: \'{"camera": ["c1", "c2"], "tags_any": ["day"]}\'.',
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Rank a gallery's subjects against one or more sequences or videos, best first. With --max-far (or
    --threshold) each probe gets an answer: its match, or "no match" (not in the gallery)."""
    uploads = [file_upload(file) for file in files]
    with _client(server, api_key, retries) as client:
        result = client.search(
            gallery, uploads, k, threshold, max_far=max_far, top_m=top_m, filter=_filter_option(filter_json)
        )
    if as_json:  # the API's own response, key for key
        _emit_json(result.model_dump(mode="json"))
        return
    console = Console()
    for file, probe in zip(files, result.data, strict=True):
        if probe.error is not None:
            console.print(
                f"[red]{file.name}: {probe.error.code}[/red]: {probe.error.message}", highlight=False
            )
            continue
        table = Table(title=f"{file.name} in gallery '{gallery}'")
        for column in ("rank", "subject", "score", "FAR", "best sequence"):
            table.add_column(column, justify="right" if column in ("rank", "score", "FAR") else "left")
        for i, hit in enumerate(probe.data, 1):
            far = "-" if hit.far is None else f"{hit.far:.2g}"
            table.add_row(str(i), hit.subject_id, f"{hit.score:.4f}", far, hit.sequence_id)
        console.print(table if probe.data else f"{file.name}: no subject scored above the threshold")
        if probe.unknown is not None:
            verdict = f"match: {probe.match.subject_id}" if probe.match else "no match: not in the gallery"
            console.print(f"{file.name}: {verdict} (threshold {result.threshold:.4f})")


@galleries_app.callback(invoke_without_command=True)
def galleries(
    ctx: typer.Context,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    retries: Retries = 5,
    as_json: AsJson = False,
) -> None:
    """List the server's galleries with their sizes; `create` and `update` set what one keeps and for
    how long; `export` and `import` move one gallery to or from a file; `erasures` and `erase` bring an
    export in step with later erasures; `new-key` and `rotate-key` manage the local store's encryption
    at rest."""
    if ctx.invoked_subcommand is not None:
        return
    with _client(server, api_key, retries) as client:
        found = client.list_galleries()
    if as_json:  # the API's own listing, key for key
        _emit_json(GalleriesPublic(data=found, count=len(found)).model_dump(mode="json"))
        return
    table = Table(title=f"Galleries on {server}")
    for column in ("name", "subjects", "sequences", "model", "usable"):
        table.add_column(column, justify="right" if column in ("subjects", "sequences") else "left")
    for g in found:
        usable = "yes" if g.model_matches else "no: another model"
        table.add_row(g.name, str(g.subject_count), str(g.sequence_count), g.model_hash[:12], usable)
    Console().print(table)


# Export and import open the store directly, as the service would (its GAITLU_* variables apply): the
# local store only while no service holds it; a Milvus server at any time.
StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        "--backend",  # the older name, still accepted
        envvar="GAITLU_GALLERY_BACKEND",
        help="Gallery store: local or milvus (--backend: its older name).",
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="GAITLU_DATA_DIR", help="local: the service's data folder."),
]
MilvusUri = Annotated[
    str | None, typer.Option("--milvus-uri", envvar="GAITLU_MILVUS_URI", help="milvus: the server's URI.")
]
MilvusToken = Annotated[
    str | None,
    typer.Option("--milvus-token", envvar="GAITLU_MILVUS_TOKEN", help="milvus: token.", show_default=False),
]
MilvusDb = Annotated[str, typer.Option("--milvus-db", envvar="GAITLU_MILVUS_DB", help="milvus: database.")]


@contextmanager
def _store(kind: str, data_dir: Path | None, uri: str | None, token: str | None, db: str) -> Iterator[Any]:
    from gallery.crypto import master_key_from_env
    from gallery.stores import STORE_FILE, MilvusSettings, open_gallery_store

    if kind == "local":
        if data_dir is None:
            raise ConfigError("the local store needs --data-dir (GAITLU_DATA_DIR)")
        store = open_gallery_store(
            "local", store_path=data_dir / STORE_FILE, encryption_key=master_key_from_env()
        )
    elif kind == "milvus":
        if uri is None:
            raise ConfigError("the milvus store needs --milvus-uri (GAITLU_MILVUS_URI)")
        store = open_gallery_store("milvus", milvus=MilvusSettings(uri=uri, token=token, db_name=db))
    else:
        raise ConfigError(f"unknown gallery store {kind!r}: use local or milvus")
    with store:
        yield store


@contextmanager
def _bar(what: str, total: int | None, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


@galleries_app.command("export")
def export(
    name: Annotated[str, typer.Argument(help="Gallery to export.")],
    out: Annotated[
        Path, typer.Option("--out", help="File to write (a gaitlu-gallery tar, docs/gallery.md).")
    ],
    kind: StoreOption = "local",
    data_dir: DataDir = None,
    milvus_uri: MilvusUri = None,
    milvus_token: MilvusToken = None,
    milvus_db: MilvusDb = "default",
    as_json: AsJson = False,
) -> None:
    """Write one gallery (ids, subjects, metadata, embeddings, model hash) to a portable file."""
    from gallery.portable import export_gallery

    with _store(kind, data_dir, milvus_uri, milvus_token, milvus_db) as store:
        total = store.get_gallery(name).sequence_count
        with _bar("exporting", total, not as_json) as progress:
            done = export_gallery(store, name, out, progress=progress)
    _report(done, out, as_json, "exported")


@galleries_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A file written by `gaitlu galleries export`.")],
    as_name: Annotated[
        str | None, typer.Option("--as", help="Gallery name (default: the exported one).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an import into the gallery that stopped.")] = False,
    kind: StoreOption = "local",
    data_dir: DataDir = None,
    milvus_uri: MilvusUri = None,
    milvus_token: MilvusToken = None,
    milvus_db: MilvusDb = "default",
    as_json: AsJson = False,
) -> None:
    """Create a gallery from a portable file (checked whole first), in either store."""
    from gallery.portable import check_file, import_gallery

    if not file.is_file():
        raise ConfigError(f"{file}: no such file")
    with _bar("checking", None, not as_json) as checked:
        manifest = check_file(file, checked)
    with (
        _store(kind, data_dir, milvus_uri, milvus_token, milvus_db) as store,
        _bar("importing", manifest.sequences, not as_json) as progress,
    ):
        done = import_gallery(store, file, name=as_name, resume=resume, progress=progress, manifest=manifest)
    _report(done, file, as_json, "imported")


@galleries_app.command("rotate-key")
def rotate_key(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", envvar="GAITLU_DATA_DIR", help="The service's data folder.")
    ],
    new_data_keys: Annotated[
        bool,
        typer.Option(
            "--new-data-keys", help="Also re-encrypt every embedding and picture under fresh data keys."
        ),
    ] = False,
) -> None:
    """Re-wrap the local store's data keys under a new master key, in one transaction: a crash leaves it
    whole under the old key or the new one. The current key comes from GAITLU_ENCRYPTION_KEY (or
    GAITLU_ENCRYPTION_KEY_FILE), the new one from GAITLU_NEW_ENCRYPTION_KEY (or ..._FILE): keys never go on
    the command line. Stop the service first (one process owns the store)."""
    from gallery.crypto import NEW_KEY_ENV, NEW_KEY_FILE_ENV, key_id, master_key_from_env

    new = master_key_from_env(new=True)
    if new is None:
        raise ConfigError(f"set {NEW_KEY_ENV} (or {NEW_KEY_FILE_ENV}) to the new master key")
    with _store("local", data_dir, None, None, "default") as store:
        store.rotate_key(new, new_data_keys)
    typer.echo(
        f"{data_dir}: now encrypted under key {key_id(new)} only; start the service with it as "
        "GAITLU_ENCRYPTION_KEY" + (" (every value re-encrypted under new data keys)" if new_data_keys else "")
    )


@galleries_app.command("new-key")
def new_key() -> None:
    """Print a fresh random master key (base64 of 32 bytes) for GAITLU_ENCRYPTION_KEY. Keep a copy
    apart from the data: without it the encrypted galleries cannot be read by anyone."""
    from gallery.crypto import new_key as fresh

    typer.echo(fresh())


def _report(done: Any, file: Path, as_json: bool, verb: str) -> None:
    if as_json:
        _emit_json(
            {"gallery": done.gallery, "sequences": done.sequences, "chunks": done.chunks, "file": str(file)}
        )
    else:
        Console(stderr=True).print(f"{verb} {done.sequences} sequences of gallery '{done.gallery}' ({file})")


# ----- what a gallery keeps, and erasure (docs/privacy.md)

RetentionDays = Annotated[
    int | None,
    typer.Option(
        "--retention-days",
        min=0,
        max=MAX_RETENTION_DAYS,
        help="Erase sequences older than this many days (0: keep them until deleted).",
    ),
]
StorePictures = Annotated[
    bool | None,
    typer.Option(
        "--store-pictures/--no-store-pictures", help="Keep each sequence's GEI picture in its metadata."
    ),
]


def _show_gallery(info: GalleryPublic, as_json: bool) -> None:
    if as_json:
        _emit_json(info.model_dump(mode="json"))
        return
    kept = "until deleted" if info.retention_days is None else f"{info.retention_days} days"
    pictures = "kept" if info.store_pictures else "not kept"
    Console(stderr=True).print(f"gallery '{info.name}': sequences kept {kept}, pictures {pictures}")


@galleries_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Gallery to create, for the server's model.")],
    retention_days: RetentionDays = 0,
    store_pictures: StorePictures = True,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    retries: Retries = 5,
    as_json: AsJson = False,
) -> None:
    """Create an empty gallery, with how long it keeps sequences and whether it keeps pictures."""
    with _client(server, api_key, retries) as client:
        info = client.create_gallery(name, None, retention_days or None, bool(store_pictures))
    _show_gallery(info, as_json)


@galleries_app.command("update")
def update(
    name: Annotated[str, typer.Argument(help="Gallery to change.")],
    retention_days: RetentionDays = None,
    store_pictures: StorePictures = None,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    retries: Retries = 5,
    as_json: AsJson = False,
) -> None:
    """Change how long a gallery keeps sequences or whether it keeps pictures (turning pictures off
    erases those it holds)."""
    changes: dict[str, Any] = {}
    if retention_days is not None:
        changes["retention_days"] = retention_days or None
    if store_pictures is not None:
        changes["store_pictures"] = store_pictures
    if not changes:
        raise ConfigError("nothing to change: give --retention-days, --store-pictures or --no-store-pictures")
    with _client(server, api_key, retries) as client:
        info = client.update_gallery(name, changes)
    _show_gallery(info, as_json)


@galleries_app.command("erasures")
def erasures(
    out: Annotated[Path, typer.Option("--out", help="File to write: one erasure per line (JSON).")],
    gallery: Annotated[str | None, typer.Option(help="Only this gallery's erasures.")] = None,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    retries: Retries = 5,
) -> None:
    """Save the service's erasure log, to apply to exports later (`gaitlu galleries erase --erasures`)."""
    from gaitlu.files import atomic_write

    with _client(server, api_key, retries) as client:
        found = client.erasures(gallery)
    with atomic_write(out, "w") as f:
        f.writelines(e.model_dump_json() + "\n" for e in found)
    Console(stderr=True).print(f"saved {len(found)} erasures ({out})")


def _ids(text: str | None) -> set[str]:
    return {part.strip() for part in (text or "").split(",") if part.strip()}


def _read_erasures(path: Path) -> list[Any]:
    """An erasure log saved by `gaitlu galleries erasures`, as the store's records."""
    from pydantic import ValidationError

    from gallery.records import Erasure

    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            e = ErasurePublic.model_validate_json(line)
        except ValidationError as exc:
            raise ConfigError(f"{path}, line {number}: not an erasure ({exc.errors()[0]['msg']})") from None
        found.append(Erasure(e.gallery, e.action, e.time, e.subject_id, tuple(e.sequence_ids)))
    return found


@galleries_app.command("erase")
def erase(
    file: Annotated[Path, typer.Argument(help="A file written by `gaitlu galleries export`.")],
    subjects: Annotated[str | None, typer.Option(help="Subject ids to erase, comma-separated.")] = None,
    sequences: Annotated[str | None, typer.Option(help="Sequence ids to erase, comma-separated.")] = None,
    erasures_file: Annotated[
        Path | None,
        typer.Option("--erasures", help="An erasure log (`gaitlu galleries erasures`) to apply."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write here instead of rewriting FILE in place.")] = None,
    as_json: AsJson = False,
) -> None:
    """Rewrite an export without some people: given subjects or sequences, or what the service erased
    after they were enrolled (its erasure log)."""
    from gallery.portable import erase_export

    if not file.is_file():
        raise ConfigError(f"{file}: no such file")
    if not (subjects or sequences or erasures_file):
        raise ConfigError("nothing to erase: give --subjects, --sequences or --erasures")
    log = _read_erasures(erasures_file) if erasures_file is not None else []
    target = out or file
    written, removed = erase_export(
        file, target, subjects=_ids(subjects), sequences=_ids(sequences), erasures=log
    )
    if as_json:
        report = {"gallery": written.gallery, "erased": removed, "sequences": written.sequences}
        _emit_json(report | {"file": str(target)})
    else:
        left = f"{written.sequences} left in the export of '{written.gallery}'"
        Console(stderr=True).print(f"erased {removed} sequences; {left} ({target})")
