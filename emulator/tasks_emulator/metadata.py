"""A GCE-style metadata server for one service account, as Cloud Run gives each service:
``google.auth.default()`` finds it through ``GCE_METADATA_HOST``/``GCE_METADATA_IP`` and
gets from it the project id, the account's email and scopes, an access token (one this
emulator's IAM recognises as that account) and ID tokens signed with the emulator's OIDC
key, shaped like Google's.

As the real server does, it answers every request with ``Metadata-Flavor: Google`` and
serves ``/computeMetadata/`` only to requests that carry that header and no
``X-Forwarded-For`` (so a page in a browser cannot read tokens from it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from .clock import Clock
from .iam import ACCESS_TOKEN_SECONDS, DEFAULT_SCOPES, Iam
from .oidc import TokenSigner

FLAVOR = {"Metadata-Flavor": "Google"}
ACCOUNT_RE = re.compile(
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@([a-z][a-z0-9-]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com$"
)
ACCOUNT_FORMAT = "NAME@PROJECT_ID.iam.gserviceaccount.com"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def project_of(email: str) -> str:
    """The project a service account belongs to; ValueError naming the expected form."""
    match = ACCOUNT_RE.match(email)
    if match is None:
        raise ValueError(f"{email!r} is not a service account email ({ACCOUNT_FORMAT})")
    return match.group(1)


def numeric_project_id(project: str) -> str:
    """A stable 12-digit project number for ``project``, shaped like Google's."""
    return str(10**11 + int.from_bytes(hashlib.sha256(project.encode()).digest()[:5], "big"))


def _text(body: str) -> web.Response:
    return web.Response(text=body, content_type="application/text", headers=FLAVOR)


@web.middleware
async def _flavor(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/computeMetadata/"):
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(
                status=403,
                text="Missing required header: Metadata-Flavor: Google\n",
                headers=FLAVOR,
            )
        if "X-Forwarded-For" in request.headers:
            return web.Response(status=403, text="X-Forwarded-For is not allowed\n", headers=FLAVOR)
    try:
        return await handler(request)
    except web.HTTPException as error:
        error.headers.update(FLAVOR)
        raise


class _Account:
    """The metadata answers of one service account."""

    def __init__(self, iam: Iam, signer: TokenSigner, clock: Clock, email: str) -> None:
        self.iam = iam
        self.signer = signer
        self.clock = clock
        self.email = email
        self.project = project_of(email)
        self.scopes = list(DEFAULT_SCOPES)

    def check(self, request: web.Request) -> None:
        if request.match_info["account"] not in ("default", self.email):
            raise web.HTTPNotFound(text=f"no service account {request.match_info['account']}\n")

    async def ping(self, _: web.Request) -> web.Response:
        return _text("computeMetadata/\n")

    async def listing(self, _: web.Request) -> web.Response:
        return _text(f"default/\n{self.email}/\n")

    async def info(self, request: web.Request) -> web.StreamResponse:
        self.check(request)
        if request.query.get("recursive") == "true":
            body = {"aliases": ["default"], "email": self.email, "scopes": self.scopes}
            return web.json_response(body, headers=FLAVOR)
        return _text("aliases\nemail\nidentity\nscopes\ntoken\n")

    async def get_email(self, request: web.Request) -> web.Response:
        self.check(request)
        return _text(self.email)

    async def get_scopes(self, request: web.Request) -> web.Response:
        self.check(request)
        return _text("\n".join(self.scopes) + "\n")

    async def token(self, request: web.Request) -> web.Response:
        self.check(request)
        asked = tuple(filter(None, request.query.get("scopes", "").split(","))) or DEFAULT_SCOPES
        body = {
            "access_token": self.iam.mint_access_token(self.email, asked),
            "expires_in": ACCESS_TOKEN_SECONDS,
            "token_type": "Bearer",
        }
        return web.json_response(body, headers=FLAVOR)

    async def identity(self, request: web.Request) -> web.Response:
        self.check(request)
        audience = request.query.get("audience", "")
        if not audience:
            return web.Response(
                status=400, text="non-empty audience parameter required\n", headers=FLAVOR
            )
        return _text(self.signer.mint(self.email, audience, self.clock.now()))

    async def project_id(self, _: web.Request) -> web.Response:
        return _text(self.project)

    async def project_number(self, _: web.Request) -> web.Response:
        return _text(numeric_project_id(self.project))


def metadata_app(iam: Iam, signer: TokenSigner, clock: Clock, email: str) -> web.Application:
    """The metadata server of the service account ``email``."""
    served = _Account(iam, signer, clock, email)
    base = "/computeMetadata/v1"
    account = base + "/instance/service-accounts/{account}"
    app = web.Application(middlewares=[_flavor])
    app.router.add_get("/", served.ping)
    app.router.add_get(base + "/project/project-id", served.project_id)
    app.router.add_get(base + "/project/numeric-project-id", served.project_number)
    app.router.add_get(base + "/instance/service-accounts/", served.listing)
    app.router.add_get(account + "/", served.info)
    app.router.add_get(account + "/email", served.get_email)
    app.router.add_get(account + "/scopes", served.get_scopes)
    app.router.add_route("GET", account + "/token", served.token)
    app.router.add_route("POST", account + "/token", served.token)
    app.router.add_get(account + "/identity", served.identity)
    return app
