"""One router per resource; `ROUTERS` is what the app includes."""

from service.routes import embed, galleries, health, search

ROUTERS = (health.router, embed.router, search.router, galleries.router)
