"""The HTTP service of the online router (FastAPI; the ``serve`` extra): :func:`agents.online.http.app.create_app`.

One module per concern: ``schemas`` (request and response models), ``middleware`` (body limit), ``responses``
(JSON bodies and the exception → status mapping), ``commit`` (group commit), ``service`` (settings and shared
state), the ``APIRouter`` factories ``routing``, ``decisions``, ``admin`` and ``metrics``, ``hotpath`` (route and
feedback in front of FastAPI) and ``app`` (the factory that puts them together).
"""

# Every module of this package needs the extra; checked once here, before any of them imports it.
try:
    import fastapi  # noqa: F401
    import pydantic  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "agents.online.create_app needs FastAPI, uvicorn and pydantic: pip install 'routing-env[serve]'"
    ) from exc
