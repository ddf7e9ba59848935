"""Audio the server pulls itself (Scriptix stream mode): a direct file URL, or an HLS playlist (M3U8) of
MP3/AAC segments, read as it streams. The bytes go to stt.audio like any client's.

Fetching URLs for a client is a server-side request forgery risk: by default a URL whose host resolves to a
loopback, private, link-local, multicast or reserved address is refused (allow_private lifts that, for a
server on a private network and for tests). Every URL is checked, redirects and playlist segments included.
An IPv6 address that carries an IPv4 address inside (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d,
NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16, Teredo 2001::/32) is judged by the IPv4 inside, which is
where a translator would send the request (`is_public`). The client is told only that its URL's host is not a
public address (UrlNotAllowed's message), never which address its name resolved to: that would make the server
a DNS oracle for the operator's internal names; the operator's log gets the address (`UrlNotAllowed.reason`).
Not covered: a DNS server that answers the check with a public address and the fetch with a private one
(rebinding); pin the address in a proxy if that matters.

httpx is used (on trio, through anyio) because HTTP/1.1 with redirects, chunked bodies and timeouts is what
a well-kept client does better than hand-written code.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import AsyncIterator
from urllib.parse import urljoin, urlsplit

import httpx
import trio

#: Largest playlist we read, and most segments we keep track of.
MAX_PLAYLIST_BYTES = 1 << 20
CHUNK_BYTES = 32 * 1024


class FetchError(Exception):
    """The audio URL cannot be read; the message says why, for the client."""


#: What a client whose URL is refused by the guard is told (and nothing more): NOT_ALLOWED: WHY_NOT.
NOT_ALLOWED, WHY_NOT = "the stream URL is not allowed", "its host is not a public address"
NOT_PUBLIC = f"{NOT_ALLOWED}: {WHY_NOT}"


class UrlNotAllowed(FetchError):
    """The URL's host is not a public address. The message (NOT_PUBLIC) is the client's; `reason`, which names
    the host and the address, is for the operator's log only."""

    def __init__(self, reason: str):
        super().__init__(NOT_PUBLIC)
        self.reason = reason


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: local-use translators
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # ::a.b.c.d, deprecated (RFC 4291) but still routed by some


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (empty: none): mapped, IPv4-compatible (not :: and ::1, which
    are addresses of their own), NAT64 (the last 32 bits; a local-use 64:ff9b:1::/48 address in another layout
    gives 0.0.0.0, never public), 6to4, and Teredo (its server and its client)."""
    value = int(address)
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in _IPV4_COMPATIBLE:
        return [] if value <= 1 else [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if address in _NAT64:
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if address in _NAT64_LOCAL:
        # The translator's prefix length is the operator's choice (RFC 6052: /48 to /96), so the IPv4 may sit
        # elsewhere than in the last 32 bits: only the /96 layout (bits 48-95 zero) is judged by its IPv4; any
        # other is refused (0.0.0.0), whatever the IPv4 a /48, /56 or /64 layout would find.
        if (value >> 32) & ((1 << 48) - 1):
            return [ipaddress.IPv4Address(0)]
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    return []


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether the server may fetch from `address`: a global unicast address; one that carries an IPv4 address
    (embedded_ipv4) is public when every IPv4 inside is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False  # fe80::1%eth0: a link-local zone
        inside = embedded_ipv4(address)
        if inside:
            return all(is_public(v4) for v4 in inside)
        if address.is_site_local:
            return False
    return address.is_global and not address.is_multicast


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (the system resolver, as the fetch itself will use)."""
    return [sockaddr[0] for *_, sockaddr in await trio.socket.getaddrinfo(host, port)]


#: What httpx raises for a request that fails, a URL it cannot parse included (InvalidURL is no HTTPError).
_HTTP_ERRORS = (httpx.HTTPError, httpx.InvalidURL)


async def check_url(url: str, *, allow_private: bool = False, resolver=resolve) -> None:
    """Refuse what is not http(s), and (unless allow_private) hosts that resolve to non-public addresses
    (UrlNotAllowed). `resolver(host, port)` gives a host's addresses (tests stub it)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # a port out of range raises here
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise FetchError(f"the stream URL {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"the stream URL must be http or https with a host, not {url!r}")
    if allow_private:
        return
    try:
        addresses = [ipaddress.ip_address(parts.hostname)]  # a literal address: no lookup
    except ValueError:
        try:
            found = await resolver(parts.hostname, port or (443 if parts.scheme == "https" else 80))
        except OSError:
            raise FetchError(f"cannot resolve the stream URL's host {parts.hostname}") from None
        addresses = [ipaddress.ip_address(a) for a in found]
    for address in addresses:
        if not is_public(address):
            raise UrlNotAllowed(f"{parts.hostname} is {address}" if str(address) == parts.hostname else
                                f"{parts.hostname} resolves to {address}")


def _is_playlist(url: str, content_type: str, head: bytes) -> bool:
    return (urlsplit(url).path.lower().endswith((".m3u8", ".m3u")) or "mpegurl" in content_type.lower()
            or head.lstrip().startswith(b"#EXTM3U"))


def parse_playlist(text: str, base: str) -> tuple[list[str], list[str], bool, float]:
    """An M3U8 -> (segment URLs, variant playlist URLs, ended, target duration in seconds)."""
    segments, variants, ended, target = [], [], False, 6.0
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-TARGETDURATION:"):
            try:
                target = float(line.split(":", 1)[1])
            except ValueError:
                pass
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line and not line.startswith("#"):
            previous = lines[i - 1] if i else ""
            (variants if previous.startswith("#EXT-X-STREAM-INF") else segments).append(urljoin(base, line))
    return segments, variants, ended, target


async def stream_url(url: str, *, allow_private: bool = False, timeout: float = 15.0,
                     max_playlist_polls: int | float = math.inf) -> AsyncIterator[bytes]:
    """The audio bytes at `url`, as they arrive: the body of a file, or the segments of an HLS playlist in
    order (a live playlist is polled for new segments until it ends)."""
    async def check_request(request: httpx.Request) -> None:  # every request: redirects and segments too
        await check_url(str(request.url), allow_private=allow_private)

    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True,
                                 event_hooks={"request": [check_request]}) as client:
        try:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise FetchError(f"the stream URL answered HTTP {response.status_code}")
                chunks = response.aiter_bytes(CHUNK_BYTES)
                first = b""
                async for first in chunks:
                    if first:
                        break
                if _is_playlist(str(response.url), response.headers.get("content-type", ""), first[:64]):
                    body = bytearray(first)
                    async for chunk in chunks:
                        body += chunk
                        if len(body) > MAX_PLAYLIST_BYTES:  # checked as it arrives: nothing unbounded is held
                            break
                    if len(body) > MAX_PLAYLIST_BYTES:
                        raise FetchError("the playlist is too large")
                    playlist = body.decode("utf-8", "replace")
                else:
                    if first:
                        yield first
                    async for chunk in chunks:
                        yield chunk
                    return
        except _HTTP_ERRORS as exc:
            raise FetchError(f"cannot read the stream URL: {type(exc).__name__}: {exc}") from None
        async for chunk in _stream_playlist(client, str(response.url), playlist, max_playlist_polls):
            yield chunk


async def _stream_playlist(client: httpx.AsyncClient, url: str, text: str,
                           max_polls: int | float) -> AsyncIterator[bytes]:
    segments, variants, ended, target = parse_playlist(text, url)
    if not segments and variants:  # a master playlist: follow its first variant
        url = variants[0]
        text = await _get_text(client, url)
        segments, _, ended, target = parse_playlist(text, url)
    if not segments and ended:
        raise FetchError("the playlist has no segments")
    seen: set[str] = set()
    polls = 0
    while True:
        for segment in segments:
            if segment in seen:
                continue
            seen.add(segment)
            try:
                async with client.stream("GET", segment) as response:
                    if response.status_code != 200:
                        raise FetchError(f"a playlist segment answered HTTP {response.status_code}")
                    async for chunk in response.aiter_bytes(CHUNK_BYTES):
                        yield chunk
            except _HTTP_ERRORS as exc:
                raise FetchError(f"cannot read a playlist segment: {type(exc).__name__}: {exc}") from None
        polls += 1
        if ended or polls > max_polls:
            return
        await trio.sleep(max(target / 2, 0.5))  # a live playlist: look again for new segments
        segments, _, ended, target = parse_playlist(await _get_text(client, url), url)


async def _get_text(client: httpx.AsyncClient, url: str) -> str:
    body = bytearray()
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise FetchError(f"the playlist answered HTTP {response.status_code}")
            async for chunk in response.aiter_bytes(CHUNK_BYTES):
                body += chunk
                if len(body) > MAX_PLAYLIST_BYTES:
                    raise FetchError("the playlist is too large")
    except _HTTP_ERRORS as exc:
        raise FetchError(f"cannot read the playlist: {type(exc).__name__}: {exc}") from None
    return body.decode("utf-8", "replace")


__all__ = ["NOT_ALLOWED", "NOT_PUBLIC", "WHY_NOT", "FetchError", "UrlNotAllowed", "check_url", "embedded_ipv4", "is_public", "parse_playlist",
           "resolve", "stream_url"]
