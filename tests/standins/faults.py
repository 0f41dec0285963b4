"""A fault-injecting HTTP proxy for tests: it forwards every request to a stand-in, and fails
the requests to a path in the way a test asks.

    python -m tests.standins.faults --upstream http://127.0.0.1:PORT

prints one line, ``LISTENING http://127.0.0.1:PORT``, once it accepts connections. The agent
under test is pointed at the proxy instead of the stand-in. Control, on the proxy itself:

- ``PUT /_faults`` with ``{"path": "/v1/chat/completions", "fault": KIND, ...}`` fails every
  request to that path from now on, until it is cleared. KIND is one of

  ``refuse``  close the connection at once, without answering;
  ``status``  answer ``"status"`` (500 by default) with a JSON error body;
  ``hang``    read the request and never answer, the connection kept open;
  ``stall``   answer the first ``"part"`` (half by default) of the stand-in's answer, then
              send nothing more, the connection kept open;
  ``cut``     answer the first ``"part"`` of the stand-in's answer, then close the connection;
  ``slow``    wait ``"delay_secs"`` before passing the stand-in's answer on, unchanged.

- ``DELETE /_faults`` clears every fault and lets go of the connections held open.
- ``GET /_faults`` returns ``{"faults": {path: fault}, "injected": [{"path", "fault"}, ...]}``:
  the faults set now, and every request a fault was applied to, in order.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from tests.standins.process import serve

KINDS = ("refuse", "status", "hang", "stall", "cut", "slow")
# Headers that belong to one connection, not to the message: the proxy sets its own.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "upgrade",
    "te",
    "trailer",
}


def _fault(body: Any) -> tuple[str, dict[str, Any]]:
    """The path and fault a control request asks for; a 400 if it makes no sense."""
    if not isinstance(body, dict) or not isinstance(body.get("path"), str):
        raise web.HTTPBadRequest(text='expected {"path": "/v1/...", "fault": KIND, ...}')
    fault = {k: v for k, v in body.items() if k != "path"}
    if fault.get("fault") not in KINDS:
        raise web.HTTPBadRequest(text=f"fault must be one of {KINDS}")
    part = fault.setdefault("part", 0.5)
    if not isinstance(part, int | float) or not 0 <= part < 1:
        raise web.HTTPBadRequest(text="part must be a fraction from 0 to 1 (exclusive)")
    status = fault.setdefault("status", 500)
    if not isinstance(status, int) or not 400 <= status <= 599:
        raise web.HTTPBadRequest(text="status must be an HTTP error status")
    delay = fault.setdefault("delay_secs", 1.0)
    if not isinstance(delay, int | float) or delay < 0:
        raise web.HTTPBadRequest(text="delay_secs must be a number of seconds")
    return body["path"], fault


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: dict[str, dict[str, Any]] = {}
        self.injected: list[dict[str, str]] = []
        self.release = asyncio.Event()  # lets go of held connections
        self.session: aiohttp.ClientSession | None = None

    # --- control -----------------------------------------------------------------------

    async def set_fault(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        path, fault = _fault(body)
        self.faults[path] = fault
        return web.json_response({"path": path, **fault})

    async def clear_faults(self, _: web.Request) -> web.Response:
        self.faults.clear()
        self.release.set()
        self.release = asyncio.Event()
        return web.Response(status=204)

    async def list_faults(self, _: web.Request) -> web.Response:
        return web.json_response({"faults": self.faults, "injected": self.injected})

    # --- the proxy ---------------------------------------------------------------------

    async def forward(self, request: web.Request) -> web.StreamResponse:
        fault = self.faults.get(request.path)
        if fault is None:
            return await self._pass_on(request, await self._ask_upstream(request))
        self.injected.append({"path": request.path, "fault": fault["fault"]})
        kind = fault["fault"]
        # Taken in whole first, as a server's socket would have: closing on unread bytes
        # makes the kernel reset the connection, which the agent may then see mid-upload.
        body = await request.read()
        if kind == "refuse":
            return self._close(request)
        if kind == "status":
            message = f"fault injected by the test proxy: {fault['status']}"
            return web.json_response(
                {"detail": message, "error": {"message": message, "type": "api_error"}},
                status=fault["status"],
            )
        if kind == "hang":
            await self.release.wait()
            return self._close(request)
        if kind == "slow":
            await asyncio.sleep(fault["delay_secs"])
            return await self._pass_on(request, await self._ask_upstream(request, body))
        return await self._answer_part(request, body, fault)

    async def _ask_upstream(
        self, request: web.Request, body: bytes | None = None
    ) -> aiohttp.ClientResponse:
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        return await self.session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=await request.read() if body is None else body,
        )

    @staticmethod
    def _response_for(upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        response = web.StreamResponse(status=upstream.status, headers=headers)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        else:
            response.enable_chunked_encoding()
        return response

    async def _pass_on(
        self, request: web.Request, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        async with upstream:
            response = self._response_for(upstream)
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionError:
                pass  # the agent went away
            return response

    async def _answer_part(
        self, request: web.Request, body: bytes, fault: dict[str, Any]
    ) -> web.StreamResponse:
        """The first part of the stand-in's whole answer, then silence or a closed socket."""
        async with await self._ask_upstream(request, body) as upstream:
            whole = await upstream.read()
            response = self._response_for(upstream)
        await response.prepare(request)
        try:
            await response.write(whole[: int(len(whole) * fault["part"])])
        except ConnectionError:
            return response
        if fault["fault"] == "stall":
            await self.release.wait()
        return self._close(request)

    @staticmethod
    def _close(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.close()
        return web.StreamResponse()

    async def start(self, _: web.Application) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))

    async def stop(self, _: web.Application) -> None:
        self.release.set()
        if self.session is not None:
            await self.session.close()


def build_app(upstream: str) -> web.Application:
    proxy = FaultProxy(upstream)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.on_startup.append(proxy.start)
    app.on_shutdown.append(proxy.stop)
    app.router.add_put("/_faults", proxy.set_fault)
    app.router.add_delete("/_faults", proxy.clear_faults)
    app.router.add_get("/_faults", proxy.list_faults)
    app.router.add_route("*", "/{tail:.*}", proxy.forward)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.standins.faults",
        description="A proxy that fails requests on purpose; prints 'LISTENING <url>'.",
    )
    parser.add_argument("--upstream", required=True, help="the stand-in's base URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    args = parser.parse_args(argv)
    asyncio.run(serve(build_app(args.upstream), args.host, args.port))


if __name__ == "__main__":
    main()
