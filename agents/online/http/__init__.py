"""The HTTP service of the online router (FastAPI; the ``serve`` extra): :func:`agents.online.http.app.create_app`."""
