"""Which container a stream is, from its first bytes (its magic numbers).

A raw PCM stream can start with any bytes, so `sniff(head, raw_fallback=True)` names only containers whose
magic is long and unmistakable; a bare MPEG or ADTS frame sync (11 or 12 set bits) would match silence at
-1, so it counts only where the client promised a file.
"""

from __future__ import annotations

#: Bytes `sniff` needs to decide (fewer only when the stream is shorter).
SNIFF_BYTES = 12

#: Containers `sniff` names, as the names FFmpeg's demuxers use (wav is ours: stt.audio.wav).
#: "id3" is an ID3v2 tag, which MP3 files and some AAC streams start with: FFmpeg probes what follows it.
CONTAINERS = ("wav", "flac", "ogg", "mp3", "aac", "id3", "mp4", "amr", "matroska", "aiff")


def _mpeg_audio(head: bytes) -> str | None:
    """'mp3' or 'aac' for a bare MPEG audio or ADTS frame header at the start of `head`."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    version, layer = (head[1] >> 3) & 0x3, (head[1] >> 1) & 0x3
    if head[1] & 0xF6 == 0xF0:  # 12-bit sync, MPEG-4/2 ADTS: layer bits are 00
        return "aac"
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 0x3
    if version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3:
        return "mp3"  # MPEG 1, 2 or 2.5, layer I, II or III: FFmpeg's mp3 demuxer reads all of them
    return None


def sniff(head: bytes, *, raw_fallback: bool = False) -> str | None:
    """The container `head` starts with, or None. With raw_fallback, only unmistakable magic numbers count."""
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"ID3"):
        return "id3"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"#!AMR"):
        return "amr"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    return None if raw_fallback else _mpeg_audio(head)


__all__ = ["CONTAINERS", "SNIFF_BYTES", "sniff"]
