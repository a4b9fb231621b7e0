"""Bearer tokens, compared in constant time; the token itself is never logged or echoed."""

from __future__ import annotations

import hmac
import json

from starlette.requests import Request

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="dlzoo"'}
REFUSAL = {"error": "authorization: a valid `Authorization: Bearer <token>` header is required"}


def bearer_ok(request: Request, token: str) -> bool:
    """Whether ``request`` carries ``Authorization: Bearer <token>``."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


class BearerAuth:
    """ASGI middleware: every HTTP request but those to ``open_paths`` needs the bearer token;
    otherwise a 401 with ``WWW-Authenticate: Bearer`` (and nothing else runs)."""

    def __init__(self, app, token: str, open_paths: tuple[str, ...]):
        self.app, self.token, self.open_paths = app, token, frozenset(open_paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        if bearer_ok(Request(scope), self.token):
            return await self.app(scope, receive, send)
        body = json.dumps(REFUSAL).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in CHALLENGE.items()]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
