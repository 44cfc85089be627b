"""OIDC ID tokens like the ones Cloud Tasks mints for HTTP tasks, and their public keys.

An RSA key is generated when the emulator first starts on a data directory and kept there
with the rest of its state (in memory only: at every start). Each attempt of a task with
an ``oidc_token`` gets its own RS256 token, minted at dispatch time, with the claims Google
puts in a service account's ID token. The keys are served over HTTP in the three shapes
verifiers read: PEM certificates by key id (``/oauth2/v1/certs``, what
``google.oauth2.id_token.verify_token(certs_url=...)`` reads), a JWKS
(``/oauth2/v3/certs``) and an OpenID configuration.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from collections.abc import Callable
from typing import Any

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ISSUER = "https://accounts.google.com"
TOKEN_LIFETIME_SECONDS = 3600


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def subject_of(email: str) -> str:
    """A stable numeric id for a service account, shaped like Google's 21-digit ``sub``."""
    digest = int.from_bytes(hashlib.sha256(email.encode()).digest()[:9], "big")
    return "1" + str(digest).zfill(20)[-20:]


class TokenSigner:
    """Holds the emulator's signing key and mints ID tokens with it."""

    def __init__(self, key_pem: bytes | None = None, cert_pem: bytes | None = None) -> None:
        """A new key, or the one ``key_pem`` and ``cert_pem`` hold (``pem()`` of a signer
        kept with the emulator's state): the same key id, so tokens minted before a
        restart keep verifying. A kept certificate past its end is made anew for the same
        key (a new key id)."""
        now = datetime.datetime.now(datetime.UTC)
        if key_pem is not None:
            key = serialization.load_pem_private_key(key_pem, password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError("the kept OIDC signing key is not an RSA key")
            self._key = key
        else:
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = x509.load_pem_x509_certificate(cert_pem) if cert_pem is not None else None
        if (
            cert is None
            or cert.not_valid_after_utc <= now
            or cert.public_key() != (self._key.public_key())
        ):
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tasks-emulator-oidc")])
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(self._key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=365))
                .sign(self._key, hashes.SHA256())
            )
        self._cert = cert
        self.key_id = self._cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - an id, not security

    def pem(self) -> tuple[bytes, bytes]:
        """The private key (PKCS#8) and the certificate, as PEM: what ``TokenSigner(...)``
        takes back."""
        key = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return key, self._cert.public_bytes(serialization.Encoding.PEM)

    def mint(self, email: str, audience: str, now: float) -> str:
        """An ID token for ``email`` with ``audience``, issued at ``now`` (epoch seconds)."""
        issued = int(now)
        subject = subject_of(email)
        claims = {
            "aud": audience,
            "azp": subject,
            "email": email,
            "email_verified": True,
            "exp": issued + TOKEN_LIFETIME_SECONDS,
            "iat": issued,
            "iss": ISSUER,
            "sub": subject,
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id})

    def sign(self, claims: dict[str, Any]) -> str:
        """A JWT of ``claims`` signed (RS256) with this signer's key."""
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id})

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        """The claims of a JWT this signer signed for ``audience``; jwt.InvalidTokenError
        otherwise. Times are left to the caller, which reads them on its own clock."""
        claims: dict[str, Any] = jwt.decode(
            token,
            self._key.public_key(),
            algorithms=["RS256"],
            audience=audience,
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
        return claims

    def pem_certs(self) -> dict[str, str]:
        pem = self._cert.public_bytes(serialization.Encoding.PEM).decode()
        return {self.key_id: pem}

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": self.key_id,
                    "n": _b64url_uint(numbers.n),
                    "e": _b64url_uint(numbers.e),
                }
            ]
        }


def keys_app(signer: TokenSigner, base_url: Callable[[], str]) -> web.Application:
    """The HTTP application serving ``signer``'s public keys. Their URLs in the OpenID
    configuration start with ``base_url()``, the address the emulator was started on:
    never the request's Host, which a client chooses."""

    async def v1_certs(_: web.Request) -> web.Response:
        return web.json_response(signer.pem_certs(), headers={"Cache-Control": "no-store"})

    async def v3_certs(_: web.Request) -> web.Response:
        return web.json_response(signer.jwks(), headers={"Cache-Control": "no-store"})

    async def openid_configuration(_: web.Request) -> web.Response:
        base = base_url()
        return web.json_response(
            {
                "issuer": ISSUER,
                "jwks_uri": f"{base}/oauth2/v3/certs",
                "id_token_signing_alg_values_supported": ["RS256"],
                "subject_types_supported": ["public"],
                "response_types_supported": ["id_token"],
                "claims_supported": [
                    *("aud", "azp", "email", "email_verified"),
                    *("exp", "iat", "iss", "sub"),
                ],
            }
        )

    app = web.Application()
    app.router.add_get("/oauth2/v1/certs", v1_certs)
    app.router.add_get("/oauth2/v3/certs", v3_certs)
    app.router.add_get("/.well-known/openid-configuration", openid_configuration)
    return app
