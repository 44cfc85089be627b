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


def metadata_app(iam: Iam, signer: TokenSigner, clock: Clock, email: str) -> web.Application:
    """The metadata server of the service account ``email``."""
    project = project_of(email)
    scopes = list(DEFAULT_SCOPES)
    base = "/computeMetadata/v1"
    account = base + "/instance/service-accounts/{account}"

    def check(request: web.Request) -> None:
        if request.match_info["account"] not in ("default", email):
            raise web.HTTPNotFound(text=f"no service account {request.match_info['account']}\n")

    async def ping(_: web.Request) -> web.Response:
        return _text("computeMetadata/\n")

    async def listing(_: web.Request) -> web.Response:
        return _text(f"default/\n{email}/\n")

    async def info(request: web.Request) -> web.StreamResponse:
        check(request)
        if request.query.get("recursive") == "true":
            body = {"aliases": ["default"], "email": email, "scopes": scopes}
            return web.json_response(body, headers=FLAVOR)
        return _text("aliases\nemail\nidentity\nscopes\ntoken\n")

    async def get_email(request: web.Request) -> web.Response:
        check(request)
        return _text(email)

    async def get_scopes(request: web.Request) -> web.Response:
        check(request)
        return _text("\n".join(scopes) + "\n")

    async def token(request: web.Request) -> web.Response:
        check(request)
        asked = tuple(filter(None, request.query.get("scopes", "").split(","))) or DEFAULT_SCOPES
        body = {
            "access_token": iam.mint_access_token(email, asked),
            "expires_in": ACCESS_TOKEN_SECONDS,
            "token_type": "Bearer",
        }
        return web.json_response(body, headers=FLAVOR)

    async def identity(request: web.Request) -> web.Response:
        check(request)
        audience = request.query.get("audience", "")
        if not audience:
            return web.Response(
                status=400, text="non-empty audience parameter required\n", headers=FLAVOR
            )
        return _text(signer.mint(email, audience, clock.now()))

    async def project_id(_: web.Request) -> web.Response:
        return _text(project)

    async def project_number(_: web.Request) -> web.Response:
        return _text(numeric_project_id(project))

    app = web.Application(middlewares=[_flavor])
    app.router.add_get("/", ping)
    app.router.add_get(base + "/project/project-id", project_id)
    app.router.add_get(base + "/project/numeric-project-id", project_number)
    app.router.add_get(base + "/instance/service-accounts/", listing)
    app.router.add_get(account + "/", info)
    app.router.add_get(account + "/email", get_email)
    app.router.add_get(account + "/scopes", get_scopes)
    app.router.add_route("GET", account + "/token", token)
    app.router.add_route("POST", account + "/token", token)
    app.router.add_get(account + "/identity", identity)
    return app
