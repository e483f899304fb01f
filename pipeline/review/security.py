"""Who may use the workbench: the access token off loopback, and the cross-site checks on every change.

- Bound to a loopback address there is no login, but the Host header must name the loopback
  host, so a web page cannot reach the app through DNS rebinding.
- Bound to any other address every request needs the token: `Authorization: Bearer TOKEN`, the
  `kefu_token` cookie, or `?token=TOKEN` once (the app then sets the cookie, HttpOnly and SameSite=Strict).
- A request that changes something (any method but GET, HEAD, OPTIONS) must send JSON, must not
  come from another origin (Origin, when sent, names this host) and must not be marked
  cross-site by the browser (Sec-Fetch-Site). A cross-site form cannot send JSON, and a
  cross-site script's JSON needs a CORS preflight, which the app never grants.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "kefu_token"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: str) -> bool:
    """Whether an address to bind is only reachable from this machine."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh access token (printed at start when none is given)."""
    return secrets.token_urlsafe(24)


class Guard:
    """ASGI middleware applying the module's rules; `token` None means loopback mode."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        given = request.query_params.get("token")
        if self.token is not None and given is not None and request.cookies.get(COOKIE) != self.token:
            async def send_with_cookie(message: dict[str, object]) -> None:
                if message["type"] == "http.response.start":
                    cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                    headers = list(message.get("headers", []))  # type: ignore[call-overload]  # ASGI's list
                    headers.append((b"set-cookie", cookie.encode()))
                    message = {**message, "headers": headers}
                await send(message)

            await self.app(scope, receive, send_with_cookie)  # type: ignore[arg-type]  # an ASGI send
            return
        await self.app(scope, receive, send)

    def _refusal(self, request: Request) -> Response | None:
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
        if self.token is None and not is_loopback(host):
            return _refuse(421, "仅接受本机地址访问（Host 不是 127.0.0.1 / localhost）")
        if self.token is not None and not self._has_token(request):
            return _refuse(401, "需要访问令牌：请使用启动时打印的带 token 的地址，或发送 Authorization: Bearer <token>")
        if request.method in _SAFE:
            return None
        if request.headers.get("sec-fetch-site") == "cross-site":
            return _refuse(403, "拒绝跨站请求")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            return _refuse(403, "拒绝跨站请求：Origin 与本站不符")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _refuse(415, "修改数据的请求须以 JSON（application/json）发送")
        return None

    def _has_token(self, request: Request) -> bool:
        assert self.token is not None
        auth = request.headers.get("authorization", "")
        candidates = [request.cookies.get(COOKIE), request.query_params.get("token"),
                      auth[7:] if auth.lower().startswith("bearer ") else None]
        return any(c is not None and hmac.compare_digest(c.encode(), self.token.encode()) for c in candidates)


def _refuse(status: int, message: str) -> Response:
    return JSONResponse({"detail": message}, status_code=status)
