"""One router per resource; `ROUTERS` is what the app includes."""

from service.routes import (
    audit,
    demo,
    docs,
    embed,
    erasures,
    galleries,
    health,
    model,
    preview,
    search,
    web,
)

ROUTERS = (
    health.router,
    embed.router,
    search.router,
    model.router,
    galleries.router,
    erasures.router,
    audit.router,
    preview.router,
    demo.router,
    web.router,
    docs.router,
)
