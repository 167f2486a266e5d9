"""Typed dependencies for routes: the engine, the settings, and API-key access (read or write).

With no API keys configured every request is allowed (the settings only permit that on loopback or
with --insecure). Otherwise `X-API-Key` must hold a full key, or a read-only key for read access:
missing or unknown -> Unauthorized, a read-only key on a write -> Forbidden (service/errors.py).

Every dependency is `async def`: FastAPI runs a plain `def` one in the thread pool, where it would wait
behind whatever fills the pool (gallery calls stalled on a lock), and every route would hang with it.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from engine import Engine
from service.errors import Forbidden, Unauthorized
from service.settings import Settings

Scope = Literal["read", "write"]
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="A full or read-only API key.")


class KeyRing:
    """The configured keys as bytes, compared in constant time."""

    def __init__(self, settings: Settings) -> None:
        self.full = [k.get_secret_value().encode() for k in settings.api_keys]
        self.read_only = [k.get_secret_value().encode() for k in settings.read_only_keys]

    @property
    def enabled(self) -> bool:
        return bool(self.full)

    def scope_of(self, key: str) -> Scope | None:
        given = key.encode()
        # Compare against every key (no early exit) so timing does not tell which list matched.
        full = any([hmac.compare_digest(given, k) for k in self.full])
        read_only = any([hmac.compare_digest(given, k) for k in self.read_only])
        return "write" if full else "read" if read_only else None


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine  # set by the lifespan (service/app.py)
    return engine


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _authorize(request: Request, key: str | None, needed: Scope) -> None:
    keys: KeyRing = request.app.state.keys
    if not keys.enabled:
        return
    if not key:
        raise Unauthorized("missing API key: send it in the X-API-Key header")
    scope = keys.scope_of(key)
    if scope is None:
        raise Unauthorized("unknown API key")
    if needed == "write" and scope != "write":
        raise Forbidden("this API key is read-only: it may embed, search and read")


async def read_access(request: Request, key: Annotated[str | None, Security(_api_key)]) -> None:
    _authorize(request, key, "read")


async def write_access(request: Request, key: Annotated[str | None, Security(_api_key)]) -> None:
    _authorize(request, key, "write")


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ReadAccess = Depends(read_access)
WriteAccess = Depends(write_access)
