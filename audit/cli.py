"""`gaitlu audit verify / export / sweep / key-id`: the audit trail of a data folder, read offline.

They open DATA_DIR/audit.db beside a running server (SQLite WAL: readers never block it; a sweep takes
the write lock for one transaction). Exit codes: 0 done (verify: the chain holds), 1 the chain is
broken (the first broken record is named), 2 a usage or user error.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from audit.store import AUDIT_FILE, AuditStore, key_id
from gaitlu.errors import GaitluError
from gaitlu.files import atomic_write

app = typer.Typer(add_completion=False, help="The audit trail: verify its chain, export it, apply retention.")

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help=f"The service's data folder (holds {AUDIT_FILE}).",
        show_default=False,
    ),
]


def _open(data_dir: Path) -> AuditStore:
    return AuditStore.open_existing(data_dir / AUDIT_FILE)


@app.command("verify")
def verify(
    data_dir: DataDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON document.")] = False,
) -> None:
    """Check the hash chain: every record against its content and the one before it. Names the first
    broken record and exits 1 if there is one; prints the head hash (keep it elsewhere to detect a
    rewritten or truncated trail later)."""
    with _open(data_dir) as store:
        report = store.verify()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "records": report.records,
                    "first_id": report.first_id,
                    "head_id": report.head_id,
                    "head_hash": report.head_hash,
                    "broken_id": report.broken_id,
                    "problem": report.problem,
                },
                indent=2,
            )
        )
    elif report.ok:
        span = f"records {report.first_id}-{report.head_id}" if report.records else "no records"
        typer.echo(f"audit trail intact: {report.records} records ({span}); head hash {report.head_hash}")
    else:
        typer.echo(f"audit trail broken at record {report.broken_id}: {report.problem}", err=True)
        typer.echo(f"{report.records} records before it are intact", err=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command("export")
def export(
    data_dir: DataDir,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write here (atomically) instead of to stdout.")
    ] = None,
) -> None:
    """Every record as JSON lines, oldest first, each with its prev_hash and hash (hash = sha256 of
    prev_hash + the record's canonical JSON without those two keys: sorted keys, no spaces, ASCII)."""
    with _open(data_dir) as store:
        if out is None:
            for record in store.export():
                sys.stdout.write(json.dumps(record.exported(), sort_keys=True) + "\n")
            return
        count = 0
        with atomic_write(out, "w", encoding="utf-8") as f:
            for record in store.export():
                f.write(json.dumps(record.exported(), sort_keys=True) + "\n")
                count += 1
    typer.echo(f"{count} records written to {out}", err=True)


@app.command("sweep")
def sweep(
    data_dir: DataDir,
    days: Annotated[int, typer.Option("--days", min=1, help="Delete records older than this many days.")],
) -> None:
    """Apply retention now (the server also sweeps by GAITLU_AUDIT_RETENTION_DAYS): delete the records
    older than DAYS and record a retention checkpoint, so that the chain still verifies."""
    with _open(data_dir) as store:
        removed = store.sweep(datetime.now(UTC) - timedelta(days=days))
    typer.echo(f"{removed} records older than {days} days deleted")


@app.command("key-id")
def show_key_id() -> None:
    """The id the audit trail records an API key under, for the key read from stdin
    (`printf %s "$KEY" | gaitlu audit key-id`): the trail holds this short hash, never the key."""
    key = sys.stdin.readline().strip()
    if not key:
        raise GaitluError('no key on stdin: printf %s "$KEY" | gaitlu audit key-id')
    typer.echo(key_id(key))
