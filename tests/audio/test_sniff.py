"""Container magic numbers: every name sniff gives, the MPEG/ADTS syncs it gives only for declared files, and
heads too short to tell."""

import pytest

from stt.audio.container import _DEMUXER
from stt.audio.sniff import CONTAINERS, SNIFF_BYTES, sniff

#: Heads with a long magic number: named with or without raw_fallback.
MAGIC = [
    (b"RIFF\x24\x08\x00\x00WAVEfmt ", "wav"),
    (b"RIFX\x00\x00\x08\x24WAVEfmt ", "wav"),
    (b"RF64\xff\xff\xff\xffWAVEds64", "wav"),
    (b"fLaC\x00\x00\x00\x22\x10\x00\x10\x00", "flac"),
    (b"OggS\x00\x02\x00\x00\x00\x00\x00\x00", "ogg"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x23TSSE", "id3"),
    (b"\x00\x00\x00\x1cftypisom\x00\x00", "mp4"),
    (b"\x00\x00\x00\x20ftypM4A \x00\x00", "mp4"),
    (b"#!AMR\n\x3c\x91\x17\x16\xbe\x66", "amr"),
    (b"#!AMR-WB\n\x24\x00\x00", "amr"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81", "matroska"),
    (b"FORM\x00\x01\x5c\x76AIFFCOMM", "aiff"),
    (b"FORM\x00\x01\x5c\x76AIFCFVER", "aiff"),
]

#: Bare frame syncs: a file only where the client said it sends one.
SYNC = [
    (b"\xff\xfb\x90\x00", "mp3"),  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz
    (b"\xff\xfb\x90\x64\x00\x00", "mp3"),
    (b"\xff\xf3\x58\xc0", "mp3"),  # MPEG-2 layer III, 16 kHz (what libmp3lame writes for the test clip)
    (b"\xff\xe3\x18\xc4", "mp3"),  # MPEG-2.5 layer III
    (b"\xff\xfd\x90\x00", "mp3"),  # MPEG-1 layer II
    (b"\xff\xff\x90\x00", "mp3"),  # MPEG-1 layer I
    (b"\xff\xf1\x50\x80\x02\x1f\xfc", "aac"),  # ADTS, MPEG-4 AAC LC, no CRC
    (b"\xff\xf9\x50\x80", "aac"),  # ADTS, MPEG-2
    (b"\xff\xf0\x50\x80", "aac"),  # ADTS with CRC
]

#: Almost a sync, but a field holds a reserved or unusable value.
NOT_SYNC = [
    b"\xff\xfb\xf0\x00",  # bitrate index 15 (bad)
    b"\xff\xfb\x00\x00",  # free-format bitrate
    b"\xff\xfb\x9c\x00",  # sample rate index 3 (reserved)
    b"\xff\xeb\x90\x00",  # MPEG version 01 (reserved)
    b"\xff\xe1\x90\x00",  # MPEG-2.5 with layer 00 (reserved): 11 sync bits, not ADTS's 12
    b"\xff\x1b\x90\x00",  # only 8 sync bits
    b"\xfe\xfb\x90\x00",
]


@pytest.mark.parametrize("head, name", MAGIC, ids=[f"{n}-{h[:4]!r}" for h, n in MAGIC])
@pytest.mark.parametrize("raw_fallback", [False, True])
def test_magic_numbers(head, name, raw_fallback):
    assert len(head) >= SNIFF_BYTES
    assert sniff(head, raw_fallback=raw_fallback) == name
    assert sniff(head + b"\x00" * 100, raw_fallback=raw_fallback) == name


@pytest.mark.parametrize("head, name", SYNC, ids=[h.hex() for h, _ in SYNC])
def test_bare_syncs_are_files_only_without_raw_fallback(head, name):
    assert sniff(head) == name
    assert sniff(head + bytes(8)) == name
    assert sniff(head, raw_fallback=True) is None
    assert sniff(head + bytes(8), raw_fallback=True) is None


def test_an_mpeg1_layer3_frame_header_is_mp3_only_in_a_file():
    assert sniff(b"\xff\xfb\x90\x00") == "mp3"
    assert sniff(b"\xff\xfb\x90\x00", raw_fallback=True) is None


@pytest.mark.parametrize("head", NOT_SYNC, ids=[h.hex() for h in NOT_SYNC])
def test_invalid_frame_headers_are_not_mpeg(head):
    assert sniff(head) is None
    assert sniff(head, raw_fallback=True) is None


@pytest.mark.parametrize("raw_fallback", [False, True])
def test_pcm_silence_at_minus_one_is_nothing(raw_fallback):
    # s16le -1 is ff ff: 16 set bits, more than either sync; with raw_fallback it must stay raw PCM
    assert sniff(b"\xff\xff" * 6, raw_fallback=raw_fallback) is None
    assert sniff(b"\xff\xff" * 6, raw_fallback=True) is None
    assert sniff(bytes(12), raw_fallback=raw_fallback) is None  # digital silence


@pytest.mark.parametrize("raw_fallback", [False, True])
def test_pcm_that_looks_like_syncs_stays_raw_with_fallback(raw_fallback):
    head = b"\xff\xfb\x90\x00" * 3  # an MPEG-1 layer III header, and s16le samples -1025, 144: ordinary PCM too
    assert sniff(head, raw_fallback=True) is None
    # a sync counts only at byte 0
    assert sniff(b"\x00" + head[:11], raw_fallback=raw_fallback) is None


@pytest.mark.parametrize("head", [b"", b"f", b"fL", b"fLa", b"Og", b"ID", b"#!AM", b"\x1a\x45\xdf", b"RIFF",
                                  b"RIFF\x00\x00\x00\x00WAV", b"FORM\x00\x00\x00\x00AIF", b"\x00\x00\x00\x20fty",
                                  b"\xff", b"\xff\xfb", b"\xff\xfb\x90", b"\xff\xf1\x50"])
@pytest.mark.parametrize("raw_fallback", [False, True])
def test_short_heads_are_nothing(head, raw_fallback):
    assert sniff(head, raw_fallback=raw_fallback) is None


@pytest.mark.parametrize("head, name", [(b"fLaC", "flac"), (b"OggS", "ogg"), (b"ID3", "id3"), (b"#!AMR", "amr"),
                                        (b"\x1a\x45\xdf\xa3", "matroska"), (b"\x00\x00\x00\x20ftyp", "mp4")])
def test_short_heads_with_the_whole_magic(head, name):
    assert sniff(head) == name
    assert sniff(head, raw_fallback=True) == name


@pytest.mark.parametrize("head", [b"RIFF\x24\x08\x00\x00AVI LIST", b"FORM\x00\x00\x00\x008SVXVHDR",
                                  b"RIFX\x00\x00\x00\x00RMIDdata", b"\x00\x00\x00\x1cmoovmvhd",
                                  b"OgS\x00" * 3, b"fLaX" * 3])
@pytest.mark.parametrize("raw_fallback", [False, True])
def test_near_misses_are_nothing(head, raw_fallback):
    assert sniff(head, raw_fallback=raw_fallback) is None


def test_every_name_sniff_gives_is_a_known_container():
    names = {sniff(h) for h, _ in MAGIC} | {sniff(h) for h, _ in SYNC}
    assert names == set(CONTAINERS)
    assert set(CONTAINERS) <= set(_DEMUXER)
