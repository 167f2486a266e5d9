"""The HTTP service (torch-free): `gaitlu serve`, the FastAPI app, its routes, auth, limits and metrics.

Routes (service/routes) only parse, call the engine (engine/) and format; every error they meet is turned
into a status in one table (service/errors.py).
"""
