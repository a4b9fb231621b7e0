"""Bearer tokens, compared in constant time; the token itself is never logged or echoed."""

from __future__ import annotations

import hmac

from starlette.requests import Request

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="dlzoo"'}
REFUSAL = {"error": "authorization: a valid `Authorization: Bearer <token>` header is required"}


def bearer_ok(request: Request, token: str) -> bool:
    """Whether ``request`` carries ``Authorization: Bearer <token>``."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )
