"""Where a webhook may be sent: https URLs whose host resolves to public addresses only (SSRF). The HTTP
transport that connects to the very address checked here is in newsletter/webhooks/transport.py."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from newsletter.errors import Invalid

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_LENGTH = 2000


class RefusedDestination(Invalid):
    """A webhook URL that may not be used: its scheme, or an address it resolves to."""


def check_url(url: str, *, allow_private: bool) -> str:
    """The URL, if it is an absolute http(s) URL we may send to; RefusedDestination otherwise."""
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise RefusedDestination(f"the URL must be 1 to {MAX_URL_LENGTH} characters long")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise RefusedDestination(f"not a valid URL: {error}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise RefusedDestination("the URL must start with https:// and name a host")
    if parts.scheme == "http" and not allow_private:
        raise RefusedDestination("the URL must use https:// (NEWSLETTER_WEBHOOKS_ALLOW_PRIVATE=true allows http)")
    if parts.username or parts.password:
        raise RefusedDestination("put no user name or password in the URL: requests are signed instead")
    if parts.fragment:
        raise RefusedDestination("the URL may not have a #fragment")
    resolve(parts.hostname, port or (443 if parts.scheme == "https" else 80), allow_private=allow_private)
    return url


def refusal(address: IPAddress) -> str | None:
    """Why an address is no place for a webhook, or None for a public one."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:127.0.0.1 reaches 127.0.0.1
        address = mapped
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if not address.is_global:  # shared address space (100.64/10), documentation ranges, ...
        return "non-public"
    return None


def resolve(host: str, port: int, *, allow_private: bool) -> list[IPAddress]:
    """The addresses of `host`, every one of them allowed; RefusedDestination if any is not (an attacker's
    name may list a public address beside 127.0.0.1 and let the client pick)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise RefusedDestination(f"cannot resolve {host}: {error}") from None
    addresses = _unique(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos)
    if not allow_private:
        for address in addresses:
            why = refusal(address)
            if why:
                where = f"{address} is" if host.strip("[]") == str(address) else f"{host} resolves to {address},"
                raise RefusedDestination(
                    f"{where} a {why} address: webhooks go to public addresses only "
                    "(NEWSLETTER_WEBHOOKS_ALLOW_PRIVATE=true allows it)"
                )
    return addresses


def _unique(addresses: Iterable[IPAddress]) -> list[IPAddress]:
    return list(dict.fromkeys(addresses))
