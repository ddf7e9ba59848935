"""Raw sample codecs: bytes of whole samples -> float32 in [-1, 1), vectorised with numpy.

Names follow FFmpeg's: pcm_s16le, pcm_u8, pcm_f32be, ... and the G.711 companders mulaw and alaw.
`raw_encoding` builds a name from the parts a header or a tag set gives (kind, width, byte order).
"""

from __future__ import annotations

import attrs
import numpy as np

#: The sample rates stt decodes (Hz): a header or a container that says otherwise is bad audio. Far below, a
#: little audio would resample into a great deal (16 000 bytes of 8-bit WAV at 1 Hz are 4.4 hours at 16 kHz).
SAMPLE_RATE_RANGE = (4000, 192000)


def _mulaw_table() -> np.ndarray:
    """G.711 µ-law byte -> linear int16 (ITU-T G.711, as in Sun's g711.c ulaw2linear)."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _alaw_table() -> np.ndarray:
    """G.711 A-law byte -> linear int16 (ITU-T G.711, as in Sun's g711.c alaw2linear)."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    return np.where(a & 0x80, t, -t).astype(np.int16)


MULAW_TO_LINEAR = _mulaw_table()
ALAW_TO_LINEAR = _alaw_table()


@attrs.frozen
class RawEncoding:
    name: str
    width: int  # bytes per sample
    kind: str  # "signed", "unsigned", "float", "mulaw", "alaw"
    big_endian: bool = False

    def decode(self, data: bytes | bytearray | memoryview) -> np.ndarray:
        """Whole samples -> float32 in [-1, 1) (float input is passed through, NaN and inf made finite)."""
        order = ">" if self.big_endian else "<"
        if self.kind == "mulaw":
            return MULAW_TO_LINEAR[np.frombuffer(data, np.uint8)].astype(np.float32) / 32768.0
        if self.kind == "alaw":
            return ALAW_TO_LINEAR[np.frombuffer(data, np.uint8)].astype(np.float32) / 32768.0
        if self.kind == "float":
            samples = np.frombuffer(data, f"{order}f{self.width}").astype(np.float32)
            return np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
        if self.kind == "unsigned":  # only 8-bit is unsigned in practice (WAV's 8-bit PCM)
            return (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0
        if self.width == 3:  # 24-bit: widen to 32 by putting each sample in the top three bytes
            raw = np.frombuffer(data, np.uint8).reshape(-1, 3)
            wide = np.zeros((len(raw), 4), np.uint8)
            if self.big_endian:
                wide[:, :3] = raw
                samples = wide.view(">i4")[:, 0]
            else:
                wide[:, 1:] = raw
                samples = wide.view("<i4")[:, 0]
            return samples.astype(np.float32) / 2.0**31
        samples = np.frombuffer(data, f"{order}i{self.width}")
        return samples.astype(np.float32) / np.float32(2.0 ** (8 * self.width - 1))


def _encodings() -> dict[str, RawEncoding]:
    table = {
        "pcm_s8": RawEncoding("pcm_s8", 1, "signed"),
        "pcm_u8": RawEncoding("pcm_u8", 1, "unsigned"),
        "mulaw": RawEncoding("mulaw", 1, "mulaw"),
        "alaw": RawEncoding("alaw", 1, "alaw"),
    }
    for width in (2, 3, 4):
        for suffix, big in (("le", False), ("be", True)):
            name = f"pcm_s{8 * width}{suffix}"
            table[name] = RawEncoding(name, width, "signed", big)
    for width in (4, 8):
        for suffix, big in (("le", False), ("be", True)):
            name = f"pcm_f{8 * width}{suffix}"
            table[name] = RawEncoding(name, width, "float", big)
    return table


#: Every raw encoding by name.
RAW_ENCODINGS: dict[str, RawEncoding] = _encodings()


def raw_encoding(kind: str, width: int, big_endian: bool = False) -> RawEncoding | None:
    """The encoding a header or tag set describes, or None if there is no such encoding."""
    for enc in RAW_ENCODINGS.values():
        if enc.kind == kind and enc.width == width and (width == 1 or enc.big_endian == big_endian):
            return enc
    return None


__all__ = ["ALAW_TO_LINEAR", "MULAW_TO_LINEAR", "RAW_ENCODINGS", "SAMPLE_RATE_RANGE", "RawEncoding", "raw_encoding"]
