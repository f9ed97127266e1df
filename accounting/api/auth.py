"""Bearer-token guard of the write endpoints.

Writes change what every later footprint says (a certificate claimed, a factor version loaded,
a period recomputed), so they need the deployment's API token; reads are open to the plant
network. A server started without a token refuses all writes with 403, rather than accepting
anonymous ones.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="the API token the server was started with")


def require_token(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    expected: str | None = request.app.state.api_token
    if expected is None:
        raise HTTPException(403, "writes are disabled on this server: start it with an API token")
    if credentials is None:
        raise HTTPException(401, "this endpoint needs 'Authorization: Bearer <API token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(401, "the bearer token is not this server's API token",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


Writer = Depends(require_token)
