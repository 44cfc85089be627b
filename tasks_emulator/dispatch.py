"""HTTP delivery of one attempt: the request goes out exactly as built, nothing followed.

Redirects are not followed (a 3xx is a failed attempt), responses are not decompressed,
and no header is added beyond Host and Content-Length: Cloud Tasks does not default
Content-Type, so neither does this client.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

# aiohttp would add these on its own; the real service's requests carry only the task's
# headers and its own X-CloudTasks-* and User-Agent.
_NO_AUTO_HEADERS = ("Content-Type", "Accept", "Accept-Encoding")


class HttpClient:
    """One pooled HTTP client for every queue. Deadlines are enforced by the engine
    (on its clock), so this client has no timeout of its own."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
            skip_auto_headers=_NO_AUTO_HEADERS,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str | None]:
        """Sends one request; returns the status and the Retry-After header, if any.
        Raises on a connection failure."""
        if self._session is None:
            raise RuntimeError("HttpClient.start() was not called")
        async with self._session.request(
            method,
            url,
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
        ) as response:
            # Drain the body so the connection goes back to the pool.
            async for _ in response.content.iter_chunked(1 << 16):
                pass
            return response.status, response.headers.get("Retry-After")
