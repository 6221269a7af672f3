"""The HTTP client webhooks are sent with: it connects to the very address `destinations.resolve` checked,
so DNS cannot answer differently in between. Apart from destinations.py so that httpx (~6 MB) is loaded
only by the process that sends webhooks, when it first has one to send."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from functools import cache

import httpcore
import httpx

from newsletter.webhooks.destinations import RefusedDestination, resolve


class _CheckedBackend(httpcore.SyncBackend):
    """Resolves and checks the host itself, then connects to the checked address; TLS still verifies the
    certificate against the host name (httpcore passes it as server_hostname)."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = resolve(host, port, allow_private=self.allow_private)
        except RefusedDestination as error:
            raise httpcore.ConnectError(str(error)) from None
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last = error
        raise last or httpcore.ConnectError(f"{host} has no address")


@cache
def _tls() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # loads the CA bundle: once per process, not per dispatch


def client(*, allow_private: bool, timeout: float) -> httpx.Client:
    """An HTTP client for webhooks: no proxies from the environment, no redirects, short timeouts, and
    connections only to addresses `resolve` allowed."""
    transport = httpx.HTTPTransport(verify=_tls(), retries=0)
    # httpx takes no network backend of its own; its pool is httpcore's, which does.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=_tls(),
        max_connections=10,
        retries=0,
        network_backend=_CheckedBackend(allow_private),
    )
    return httpx.Client(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        headers={"user-agent": "newsletter-webhooks/1"},
    )
