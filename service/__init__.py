"""The HTTP service (torch-free): `gaitlu serve`, the async engine, micro-batching and the routes.

Layers, each usable without the one above: routes (service/routes, parse and format only) -> Engine
(service/engine.py, async API) -> Batcher (service/batcher.py, queue + inference thread) -> the runtime
(runtime/, an export artifact behind `embed`) and the galleries (gallery/).
"""
