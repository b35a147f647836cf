"""The HTTP face of ``flowyard serve``: a Starlette app run by uvicorn.

Routes: ``POST <webhook path>`` of each webhook flow (engine/serve/intake.py says what a
delivery gets), ``GET /metrics`` (Prometheus text format), ``GET /healthz`` (the process
answers) and ``GET /readyz`` (it takes deliveries: started, the state opened, not
stopping). The body of a delivery is read up to the flow's ``max_body`` and no further
(413 past it), verified as raw bytes, and answered only once the event is committed.

Why Starlette and uvicorn (docs/serve.md, "The server"): both are maintained by the
Encode team and used everywhere ASGI is; Starlette is routing, requests, responses and a
lifespan and nothing more, uvicorn a server with graceful shutdown. A partner who runs
their own ASGI, WSGI or other web app mounts intake with :meth:`Engine.accept` instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from engine.serve.intake import IntakeAnswer, too_large
from engine.serve.metrics import CONTENT_TYPE
from engine.store import InboxAdded

if TYPE_CHECKING:
    from engine.serve.server import Service


def build_app(service: Service) -> Starlette:
    """The ASGI app in front of ``service`` (started and stopped by its lifespan)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            # uvicorn calls this once requests in flight are answered
            await asyncio.get_running_loop().run_in_executor(None, service.stop)

    async def webhook(request: Request) -> Response:
        route = service.intake.route(request.url.path)
        if route is None:
            return JSONResponse({"error": f"no webhook at {request.url.path}"}, status_code=404)
        if request.method != "POST":
            return JSONResponse({"error": "webhooks are POSTed"}, status_code=405)
        if service.stopping.is_set():
            return JSONResponse(
                {"error": "stopping; deliver again"}, status_code=503, headers={"Retry-After": "5"}
            )
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > route.hook.max_body:
            return _answer(too_large(route.hook), route.flow.name, None)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > route.hook.max_body:
                return _answer(too_large(route.hook), route.flow.name, None)
            chunks.append(chunk)
        body = b"".join(chunks)
        started = time.perf_counter()
        checked = service.intake.check(route, request.headers.items(), body)
        if isinstance(checked, IntakeAnswer):
            return _answer(checked, route.flow.name, started)
        loop = asyncio.get_running_loop()
        kept: asyncio.Future[InboxAdded | BaseException] = loop.create_future()
        assert service.writer is not None  # started by the lifespan

        def done(answer: InboxAdded | BaseException) -> None:  # on the writer's thread
            loop.call_soon_threadsafe(kept.set_result, answer)

        service.writer.submit(route.flow.name, checked, done)
        return _answer(service.intake.answer(route, checked, await kept), route.flow.name, started)

    def _answer(answer: IntakeAnswer, flow: str, started: float | None) -> Response:
        seconds = time.perf_counter() - started if started is not None else 0.0
        service.metrics.webhook(flow, answer.outcome, seconds)
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    async def metrics(request: Request) -> Response:
        body = await asyncio.get_running_loop().run_in_executor(None, service.metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        if service.ready and not service.stopping.is_set():
            return PlainTextResponse("ready\n")
        return PlainTextResponse("not ready\n", status_code=503)

    routes = [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/{path:path}", webhook, methods=["POST", "GET", "PUT"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
