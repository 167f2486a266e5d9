"""One router per resource; `ROUTERS` is what the app includes."""

from service.routes import demo, embed, galleries, health, preview, search, web

ROUTERS = (
    health.router,
    embed.router,
    search.router,
    galleries.router,
    preview.router,
    demo.router,
    web.router,
)
