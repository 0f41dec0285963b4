"""JSON in and out of HTTP handlers: bodies read and checked, errors a person can read.

Every error is a JSON object ``{"error": <a sentence for a person>, "code": <word>}``;
nothing answers with a stack trace. Shared by the public routes and the workers' own.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import ClientPayloadError, web

log = structlog.get_logger("http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Retry-After of a refusal that says "try again in a moment", and "in a minute".
RETRY_SOON_SECS = 5
RETRY_LATER_SECS = 60


class BadRequest(Exception):
    """The request body is not what the route takes; the message says what is wrong."""


def json_error(
    status: int, code: str, message: str, retry_after_secs: int | None = None
) -> web.Response:
    """An error in words; a refusal for now says when to try again (``Retry-After``)."""
    response = web.json_response({"error": message, "code": code}, status=status)
    if retry_after_secs is not None:
        response.headers["Retry-After"] = str(retry_after_secs)
    return response


def unknown_session() -> web.Response:
    return json_error(404, "unknown_session", "That conversation has ended; start a new one.")


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as error:
        return json_error(400, "bad_request", str(error))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return http_error_as_json(request, error)
    except Exception:
        log.exception("request failed", method=request.method, path=request.path)
        return json_error(500, "internal", "Something went wrong in the agent; see its log.")


def http_error_as_json(request: web.Request, error: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no such page, wrong method, too large) in the API's words."""
    if error.status == 404:
        response = json_error(404, "not_found", "There is nothing at this address.")
    elif error.status == 405:
        response = json_error(
            405, "method_not_allowed", f"This address does not take {request.method} requests."
        )
        response.headers["Allow"] = error.headers.get("Allow", "")
    elif error.status == 413:
        response = too_large(request.client_max_size)
    elif error.status == 403:
        response = json_error(403, "forbidden", "That is not shown here.")
    else:
        response = json_error(error.status, "http_error", f"{error.reason}.")
    return response


def too_large(limit_bytes: int) -> web.Response:
    return json_error(
        413, "too_large", f"The request is too large: the limit is {limit_bytes // 1024} kB."
    )


async def read_body(request: web.Request) -> bytes:
    """The whole body (aiohttp keeps it for later reads); over ``client_max_size``: 413."""
    try:
        return await request.read()
    except (web.RequestPayloadError, ClientPayloadError, ConnectionError):
        # Cut short or badly chunked; the sender is usually gone and reads no answer.
        raise BadRequest("The body could not be read to its end.") from None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise BadRequest("The body must be JSON (Content-Type: application/json).")
    try:
        body = json.loads(await read_body(request))
    except ValueError:  # not JSON, not UTF-8, or a number too long to convert
        raise BadRequest("The body is not valid JSON.") from None
    except RecursionError:  # the parser recurses once per level of [ or {
        raise BadRequest("The body is nested too deeply to be read.") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    return body


ARTICLES = {str: "a string", bool: "true or false", int: "a number", list: "a list"}


def field(body: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    # JSON true/false are Python ints too: only a bool field accepts them.
    wrong_kind = not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
    if wrong_kind:
        raise BadRequest(f"'{name}' must be {ARTICLES[kind]}.")
    return value
