"""The ``mlops`` FastAPI app that the plugin mounts on the api-server under ``/mlops``.

It is built on first use (the api-server reads the plugin's ``fastapi_apps`` once, at start),
so no other Airflow component pays for FastAPI routes or templates. Each view is one module
with its own ``router``: :mod:`.sweep_view` (a DAG run's sweep), :mod:`.models_view`,
:mod:`.features_view` and :mod:`.gpus_view` (nav pages). Every route requires a signed-in
Airflow user (:mod:`.auth`); every response carries a Content-Security-Policy that allows no
script but the app's own ``static/links.js`` (which lets a link leave the UI's sandboxed frame),
and is never cached.
"""

from __future__ import annotations

import functools
import importlib
import logging
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from airflow_mlops_provider.plugins.auth import CurrentUser  # noqa: TC001 (FastAPI reads annotations at runtime)
from airflow_mlops_provider.plugins.render import page, redact
from airflow_mlops_provider.plugins.warmup import start_warmup

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["URL_PREFIX", "build_app", "fastapi_apps"]

log = logging.getLogger(__name__)

#: Where the api-server mounts the app.
URL_PREFIX = "/mlops"
#: The view modules; each has a ``router``.
VIEW_MODULES = ("sweep_view", "models_view", "features_view", "gpus_view")
#: Sent with every response: no script but the app's own ``links.js`` (no inline script, no
#: other origin), frames only from Airflow's own origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _wants_html(request: Request) -> bool:
    return "/api/" not in request.url.path and "text/html" in request.headers.get("accept", "")


@functools.cache
def build_app() -> FastAPI:
    """Build the app once: the views' routers, the headers, and readable error pages."""
    app = FastAPI(title="airflow-mlops-provider views", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start_warmup()
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> Response:
        detail = str(redact(str(err.detail)))
        if not _wants_html(request):
            return JSONResponse({"detail": detail}, status_code=err.status_code, headers=err.headers)
        title = {401: "Sign in to Airflow", 403: "Not allowed", 404: "Not found"}.get(
            err.status_code, "Error"
        )
        return page(
            "error.html", status_code=err.status_code, title=title, status=err.status_code, message=detail
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, err: Exception) -> Response:
        log.exception("mlops view %s failed", request.url.path)
        message = str(redact(f"{type(err).__name__}: {err}"))
        # This handler runs outside the app's middleware: add the headers here.
        response: Response
        if not _wants_html(request):
            response = JSONResponse({"detail": message}, status_code=500)
        else:
            response = page(
                "error.html", status_code=500, title="This view failed", status=500, message=message
            )
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/", include_in_schema=False)
    async def index(user: CurrentUser) -> Response:
        return RedirectResponse(f"{URL_PREFIX}/models", status_code=307)

    @app.get("/assets/mlops.css", include_in_schema=False)
    async def stylesheet(user: CurrentUser) -> Response:
        css = files("airflow_mlops_provider.plugins").joinpath("static/mlops.css").read_text()
        return Response(css, media_type="text/css")

    @app.get("/assets/links.js", include_in_schema=False)
    async def link_script(user: CurrentUser) -> Response:
        js = files("airflow_mlops_provider.plugins").joinpath("static/links.js").read_text()
        return Response(js, media_type="text/javascript")

    @app.get("/assets/icon.svg", include_in_schema=False)
    async def icon(user: CurrentUser) -> Response:
        svg = files("airflow_mlops_provider.plugins").joinpath("static/icon.svg").read_text()
        return Response(svg, media_type="image/svg+xml")

    for name in VIEW_MODULES:
        module = importlib.import_module(f"airflow_mlops_provider.plugins.{name}")
        app.include_router(module.router)
    return app


def fastapi_apps() -> list[dict[str, Any]]:
    """The plugin's ``fastapi_apps`` entry: the app, mounted under :data:`URL_PREFIX`."""
    return [{"name": "mlops", "app": build_app(), "url_prefix": URL_PREFIX}]
