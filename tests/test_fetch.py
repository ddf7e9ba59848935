"""Pulling audio from a URL (Scriptix stream mode) against a local HTTP server: a direct MP3, an HLS playlist
of AAC segments made from real speech, a master playlist, a live playlist, failures, and the refusal of
private addresses unless allowed."""

import ipaddress
import wave
from contextlib import aclosing

import numpy as np
import pytest

from stt.fetch import FetchError, UrlNotAllowed, check_url, embedded_ipv4, is_public, parse_playlist, stream_url
from tests.helpers import DATA, encode_audio, serve_directory



@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A directory of audio served over HTTP on 127.0.0.1; yields (base URL, directory)."""
    root = tmp_path_factory.mktemp("www")
    with wave.open(str(DATA / "ps_goforward.wav")) as f:
        samples = np.frombuffer(f.readframes(f.getnframes()), "<i2")
    (root / "speech.mp3").write_bytes(encode_audio(samples, 16000, "mp3", "libmp3lame"))
    thirds = np.array_split(samples, 3)
    for i, part in enumerate(thirds):  # ADTS AAC: segments that join into one stream
        (root / f"seg{i}.aac").write_bytes(encode_audio(part, 16000, "adts", "aac"))
    segments = "".join(f"#EXTINF:1.0,\nseg{i}.aac\n" for i in range(3))
    (root / "speech.m3u8").write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n{segments}#EXT-X-ENDLIST\n")
    (root / "live.m3u8").write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n{segments}")
    (root / "master.m3u8").write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=64000\nspeech.m3u8\n")
    (root / "empty.m3u8").write_text("#EXTM3U\n#EXT-X-ENDLIST\n")
    with serve_directory(root) as base:
        yield base, root


async def read_all(url, **options) -> bytes:
    return b"".join([chunk async for chunk in stream_url(url, allow_private=True, **options)])


async def test_a_direct_file_streams_as_it_is(served):
    base, root = served
    assert await read_all(f"{base}/speech.mp3") == (root / "speech.mp3").read_bytes()


@pytest.mark.parametrize("playlist", ["speech.m3u8", "master.m3u8"])
async def test_a_playlist_streams_its_segments_in_order(served, playlist):
    base, root = served
    expected = b"".join((root / f"seg{i}.aac").read_bytes() for i in range(3))
    assert await read_all(f"{base}/{playlist}") == expected


async def test_a_live_playlist_is_polled_and_each_segment_read_once(served):
    base, root = served
    expected = b"".join((root / f"seg{i}.aac").read_bytes() for i in range(3))
    assert await read_all(f"{base}/live.m3u8", max_playlist_polls=1) == expected  # one look again, 0.5 s


@pytest.mark.parametrize("path, why", [("missing.mp3", "HTTP 404"), ("empty.m3u8", "no segments")])
async def test_what_cannot_be_read_is_a_fetch_error(served, path, why):
    base, _ = served
    with pytest.raises(FetchError, match=why):
        await read_all(f"{base}/{path}")


async def test_an_unreachable_host_is_a_fetch_error():
    with pytest.raises(FetchError, match="cannot read"):
        await read_all("http://127.0.0.1:9/nothing.mp3", timeout=2)


@pytest.mark.parametrize("url", ["http://127.0.0.1/a.mp3", "http://10.1.2.3/a.mp3", "http://169.254.169.254/latest",
                                 "http://[::1]/a.mp3", "http://192.168.0.1/a.m3u8", "http://localhost/a.mp3"])
async def test_private_addresses_are_refused_unless_allowed(url):
    with pytest.raises(FetchError, match="not a public address"):
        await check_url(url)
    await check_url(url, allow_private=True)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.mp3", "http:///a.mp3"])
async def test_only_http_urls_with_a_host(url):
    with pytest.raises(FetchError, match="must be http or https"):
        await check_url(url, allow_private=True)


@pytest.mark.parametrize("url", ["\x1f", "http://127.0.0.1:65536/a.wav", "http://[::1/a.wav"])
async def test_a_url_that_does_not_parse_is_a_fetch_error_not_a_crash(url):
    with pytest.raises(FetchError, match="not a valid URL"):
        await check_url(url, allow_private=True)
    with pytest.raises(FetchError):
        async with aclosing(stream_url(url, allow_private=True)) as chunks:
            async for _ in chunks:
                pass


async def test_a_refused_redirect_target_is_refused(served):
    base, _ = served
    with pytest.raises(FetchError, match="not a public address"):
        await read_all_public(f"{base}/speech.mp3")


async def read_all_public(url):
    return b"".join([chunk async for chunk in stream_url(url)])


def test_parse_playlist_resolves_relative_urls_and_reads_its_tags():
    text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\na/1.aac\n#EXTINF:4,\nhttp://cdn/2.aac\n#EXT-X-ENDLIST\n"
    assert parse_playlist(text, "http://host/live/index.m3u8") == (
        ["http://host/live/a/1.aac", "http://cdn/2.aac"], [], True, 4.0)


async def test_a_playlist_over_the_size_limit_is_refused_as_it_arrives(served, monkeypatch):
    base, _ = served
    monkeypatch.setattr("stt.fetch.MAX_PLAYLIST_BYTES", 100)
    with pytest.raises(FetchError, match="too large"):
        await read_all(f"{base}/speech.m3u8")


# --- the guard: IPv4 inside IPv6, and what the client is told ------------------------------------------------


def stub_resolver(*addresses: str):
    """A resolver that answers every name with these addresses (no DNS is asked)."""
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)
    return resolve


#: Internal IPv4 addresses carried inside IPv6 ones, each form the guard must see through.
EMBEDDED_INTERNAL = {
    "ipv4-compatible": "::127.0.0.1",
    "ipv4-compatible-private": "::10.0.0.1",
    "ipv4-mapped": "::ffff:127.0.0.1",
    "ipv4-mapped-metadata": "::ffff:169.254.169.254",
    "nat64": "64:ff9b::7f00:1",
    "nat64-private": "64:ff9b::c0a8:1",
    "nat64-local-use": "64:ff9b:1::a00:1",
    "nat64-local-use-other-layout": "64:ff9b:1:c000:2:100::",
    "6to4": "2002:7f00:1::1",
    "6to4-private": "2002:a00:1::",
    "teredo-server-internal": "2001:0:a00:1::1",
    "teredo-client-internal": "2001:0:c000:201:0:0:80ff:fffe",  # client 127.0.0.1 (stored inverted)
}
#: The same forms around public addresses (documentation ranges are not public, so these are well-known public
#: resolvers' addresses, only ever classified here, never connected to).
EMBEDDED_PUBLIC = {
    "ipv4-mapped": "::ffff:8.8.8.8",
    "nat64": "64:ff9b::808:808",
    "nat64-local-use": "64:ff9b:1::808:808",
    "6to4": "2002:808:808::1",
    "teredo": "2001:0:808:808:0:0:f7f7:f7f7",
}


@pytest.mark.parametrize("address", EMBEDDED_INTERNAL.values(), ids=EMBEDDED_INTERNAL.keys())
def test_an_ipv6_address_that_carries_an_internal_ipv4_is_not_public(address):
    parsed = ipaddress.ip_address(address)
    assert embedded_ipv4(parsed) and not is_public(parsed)


@pytest.mark.parametrize("address", EMBEDDED_PUBLIC.values(), ids=EMBEDDED_PUBLIC.keys())
def test_an_ipv6_address_that_carries_a_public_ipv4_is_judged_by_it(address):
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [*EMBEDDED_INTERNAL.values(), "10.0.0.7", "fd00::1", "fe80::1", "::1",
                                     "192.0.2.10", "2001:db8::1"])
async def test_a_name_that_resolves_to_an_internal_address_is_refused_without_naming_it(address):
    with pytest.raises(UrlNotAllowed) as info:
        await check_url("http://media.internal.test/a.mp3", resolver=stub_resolver("8.8.8.8", address))
    assert str(info.value) == "the stream URL is not allowed: its host is not a public address"
    assert address not in str(info.value) and ipaddress.ip_address(address).compressed not in str(info.value)
    assert address in info.value.reason or ipaddress.ip_address(address).compressed in info.value.reason  # the log's
    await check_url("http://media.internal.test/a.mp3", allow_private=True,
                    resolver=stub_resolver(address))  # the operator may lift it


@pytest.mark.parametrize("address", EMBEDDED_INTERNAL.values(), ids=EMBEDDED_INTERNAL.keys())
async def test_a_literal_embedded_address_is_refused_without_asking_the_resolver(address):
    async def no_dns(host, port):
        raise AssertionError("a literal address needs no lookup")
    with pytest.raises(UrlNotAllowed, match="its host is not a public address"):
        await check_url(f"http://[{address}]:8080/a.wav", resolver=no_dns)


async def test_a_name_that_resolves_only_to_public_addresses_passes():
    await check_url("https://media.example.test/a.mp3", resolver=stub_resolver("8.8.8.8", "64:ff9b::808:808"))
