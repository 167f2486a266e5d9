"""The service's one settings object: typed fields from `GAITLU_*` environment variables and the CLI.

Validators fail closed: a short, non-ASCII or shared API key, a key in both lists, a CORS origin that is
not an origin, or a non-loopback host without API keys (unless `insecure`) is an error at start-up, never
a silently weaker server.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from engine import STORE_FILE, EngineOptions, EngineSettings
from gaitlu.errors import ConfigError
from gaitlu.schemas import MAX_SEQUENCES
from gallery.crypto import master_key
from gallery.settings import IndexSettings
from gallery.stores import MilvusIndexSettings, MilvusSettings, StoreKind

MIB = 1024 * 1024
MIN_KEY_LENGTH = 16  # a placeholder such as "changeme" is refused
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?")
_HOST_PATTERN = re.compile(r"\*|(\*\.)?[A-Za-z0-9.-]+|[0-9A-Fa-f:.]+")  # name, *.domain, IPv4 or IPv6
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARD_BINDS = ("0.0.0.0", "::", "")


def _split(value: Any) -> Any:
    """`a,b` from an environment variable -> ["a", "b"]; lists from code pass through."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _EngineVariables(PydanticBaseSettingsSource):
    """The engine's knobs from their variables, GAITLU_ + the `EngineOptions` field's upper-case name
    (GAITLU_MAX_BATCH=4), into the nested `engine` (as GAITLU_ENGINE__MAX_BATCH would be)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads them all at once

    def __call__(self) -> dict[str, Any]:
        environ = {key.upper(): value for key, value in os.environ.items()}
        names = {f"GAITLU_{name.upper()}": name for name in EngineOptions.model_fields}
        values = {name: environ[variable] for variable, name in names.items() if variable in environ}
        return {"engine": values} if values else {}


class Settings(BaseSettings):
    """Everything `gaitlu serve` can be told; env names are GAITLU_ + the upper-case field name."""

    model_config = SettingsConfigDict(
        env_prefix="GAITLU_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    artifact: Path  # export artifact folder (`gaitlu export ... --out DIR`)
    data_dir: Path  # galleries live in DATA_DIR/galleries.db
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    insecure: bool = False  # allow a non-loopback host without API keys

    # Auth: full keys may do everything; read-only keys may embed, search and GET.
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    read_only_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    # Host header names answered (DNS rebinding): () = the loopback names and the bind address (any name
    # when bound to all interfaces with API keys); "*" = any; "*.example.org" = a domain and its subdomains.
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()

    # Admission: what the server takes on at once. Beyond it a request is answered at once (429 with
    # Retry-After), before its body is read, never queued without bound.
    max_connections: int = Field(256, ge=1)  # open connections (uvicorn answers 503 beyond)
    max_requests_in_flight: int = Field(64, ge=1)  # requests being read or served (probes exempt)
    max_body_bytes_in_flight: int = Field(256 * MIB, ge=1024)  # their bodies (chunked: max_upload_bytes)
    body_timeout_s: float = Field(30.0, gt=0)  # a body must arrive within this (slowloris): else 408
    header_timeout_s: float = Field(10.0, gt=0)  # a request's head too (from connecting): else closed
    max_head_bytes: int = Field(64 * 1024, ge=1024)  # request line + headers: else 431 and closed

    # Input bounds.
    max_upload_bytes: int = Field(32 * MIB, ge=1024)  # the whole request body; uvicorn sets no limit
    max_files: int = Field(32, ge=1, le=MAX_SEQUENCES)  # sequences per request

    # The engine's knobs (engine/settings.py): the runtime, micro-batching, what one uploaded sequence or
    # video may cost, how many are decoded and extracted at once, the local store's size. Each is read
    # from GAITLU_ + its upper-case name (GAITLU_MAX_BATCH=4, GAITLU_DECODE_TIMEOUT_S=10, ...).
    engine: EngineOptions = EngineOptions()

    # Gallery indexes (gallery/settings.py): GAITLU_INDEX__NPROBE=64, or GAITLU_INDEX as JSON.
    index: IndexSettings = IndexSettings()

    # Where galleries live: "local" (DATA_DIR/galleries.db, one process) or "milvus" (a Milvus server or
    # cluster that every replica shares; docs/gallery.md).
    gallery_backend: StoreKind = "local"
    milvus_uri: str | None = None  # http://milvus:19530, a milvus-lite server address, or a local .db file
    milvus_token: SecretStr | None = None  # "user:password" or an API key, where the server wants one
    milvus_db: str = Field("default", pattern=r"[A-Za-z_][A-Za-z0-9_]{0,254}")
    milvus_index: MilvusIndexSettings = MilvusIndexSettings()  # for galleries created from now on
    # The audit trail (DATA_DIR/audit.db, docs/privacy.md): records older than this many days are
    # deleted by an hourly sweep that keeps the chain verifiable; 0 keeps them for ever. The AI Act
    # (Articles 19 and 26(6)) asks for at least six months.
    audit_retention_days: int = Field(365, ge=0)
    # Encryption at rest of the local store (docs/privacy.md): the master key, base64 of 32 random bytes
    # (`gaitlu galleries new-key`), or a file holding it that only its owner may read. Unset: plaintext.
    # A data folder encrypted with a key refuses to start without it; lose the key and the data is lost.
    encryption_key: SecretStr | None = None
    encryption_key_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _EngineVariables(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    @field_validator("api_keys", "read_only_keys", "cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("api_keys", "read_only_keys")
    @classmethod
    def _strong_keys(cls, keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for key in keys:
            secret = key.get_secret_value()
            # ASCII only: HTTP headers carry bytes, so a key with é could never be matched.
            if (
                len(secret) < MIN_KEY_LENGTH
                or not (secret.isascii() and secret.isprintable())
                or " " in secret
            ):
                raise ValueError(
                    f"API keys must be at least {MIN_KEY_LENGTH} printable ASCII characters without spaces "
                    "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
        return keys

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"CORS origin {origin!r} is not '*' or scheme://host[:port]")
        return origins

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for host in hosts:
            if not _HOST_PATTERN.fullmatch(host):
                raise ValueError(f"allowed host {host!r} is not a name, '*.domain', an IP address or '*'")
        return tuple(host.lower() for host in hosts)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        full = {k.get_secret_value() for k in self.api_keys}
        read_only = {k.get_secret_value() for k in self.read_only_keys}
        if full & read_only:
            raise ValueError("a key is listed both in api_keys and read_only_keys")
        if read_only and not full:
            raise ValueError("read_only_keys need at least one api_keys entry (else nobody could write)")
        if not self.auth_enabled and not is_loopback(self.host) and not self.insecure:
            raise ValueError(
                f"refusing to serve on {self.host} without API keys: set GAITLU_API_KEYS, "
                "bind 127.0.0.1, or pass --insecure"
            )
        if self.max_files > self.engine.max_queue:
            raise ValueError("max_files must not exceed max_queue (such a request could never be queued)")
        if self.gallery_backend == "milvus" and not self.milvus_uri:
            raise ValueError("the milvus gallery store needs GAITLU_MILVUS_URI (e.g. http://milvus:19530)")
        if self.max_body_bytes_in_flight < self.max_upload_bytes:
            raise ValueError(
                "max_body_bytes_in_flight must be at least max_upload_bytes (else no large upload fits)"
            )
        return self

    @property
    def hosts(self) -> tuple[str, ...]:
        """The Host names served: as configured, else loopback names and the bind address ("*": any)."""
        if self.allowed_hosts:
            return self.allowed_hosts
        if self.host in _WILDCARD_BINDS:  # all interfaces: the names clients use are not known here
            return ("*",) if self.auth_enabled else LOOPBACK_NAMES
        return tuple(dict.fromkeys((*LOOPBACK_NAMES, self.host.lower())))

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @property
    def store_path(self) -> Path:
        return self.data_dir / STORE_FILE

    def engine_settings(self) -> EngineSettings:
        """What the engine needs of these settings."""
        return EngineSettings(
            artifact=self.artifact,
            store_path=self.store_path,
            options=self.engine,
            index=self.index,
            store_kind=self.gallery_backend,
            milvus=self.milvus_settings(),
            encryption_key=master_key(
                self.encryption_key.get_secret_value() if self.encryption_key is not None else None,
                self.encryption_key_file,
            ),
        )

    def milvus_settings(self) -> MilvusSettings | None:
        if self.gallery_backend != "milvus" or self.milvus_uri is None:
            return None
        token = self.milvus_token.get_secret_value() if self.milvus_token is not None else None
        return MilvusSettings(
            uri=self.milvus_uri, token=token, db_name=self.milvus_db, index=self.milvus_index
        )


def load_settings(**values: Any) -> Settings:
    """Settings from `values` over the environment; every problem becomes one readable ConfigError. The
    engine's knobs may be given by name, as their variables are (`max_batch=4`)."""
    given = {k: v for k, v in values.items() if v is not None}
    engine = {k: given.pop(k) for k in EngineOptions.model_fields if k in given}
    if engine:
        given["engine"] = {**dict(given.get("engine") or {}), **engine}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid service settings: {problems}") from None
