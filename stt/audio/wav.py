"""WAV (RIFF/WAVE, RIFX, RF64) parsed incrementally: the header may arrive split anywhere, the audio after it
streams through the raw codecs.

Streamed WAVs often lie about their length: a pipe (`ffmpeg -f wav -`) writes 0 or 0xFFFFFFFF, and some
clients write a header once and keep sending. So the data chunk's size is trusted only when another chunk
header follows exactly where it says the data ends; anything else after `data` is audio. Nothing is lost.
"""

from __future__ import annotations

import struct

import numpy as np

from stt.audio.errors import BadAudio
from stt.audio.pcm import SAMPLE_RATE_RANGE, RawEncoding, raw_encoding

_PCM, _FLOAT, _ALAW, _MULAW, _EXTENSIBLE = 0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE
_MAX_HEADER = 1 << 20  # bytes of chunks before `data` we are willing to hold (cover art, long LIST chunks)


def _is_chunk_id(b: bytes) -> bool:
    return len(b) == 4 and all(0x20 <= c < 0x7F for c in b)


class WavReader:
    """feed(bytes) -> float32 frames (n, channels); sample_rate and channels are known once the header is."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._big = False  # RIFX: big-endian sizes and samples
        self._riff_checked = False
        self.encoding: RawEncoding | None = None
        self.sample_rate: int | None = None
        self.channels: int | None = None
        self._in_data = False
        self._data_left: int | None = None  # bytes of the data chunk still to come, when its size is credible
        self._frame_bytes = 0
        self._pad = 0
        self._trailer = False  # past the data chunk: the rest is other chunks
        self._ds64_data_size = 0

    # The header: RIFF/RIFX/RF64 then chunks, up to `data`.
    def _parse_header(self) -> None:
        buf = self._buf
        if not self._riff_checked:
            if len(buf) < 12:
                return
            if buf[:4] not in (b"RIFF", b"RIFX", b"RF64") or buf[8:12] != b"WAVE":
                raise BadAudio("not a WAV file: it does not start with RIFF....WAVE")
            self._big = buf[:4] == b"RIFX"
            del buf[:12]
            self._riff_checked = True
        order = ">" if self._big else "<"
        while not self._in_data and len(buf) >= 8:
            chunk_id, size = bytes(buf[:4]), struct.unpack(order + "I", buf[4:8])[0]
            if chunk_id == b"data":
                if self.encoding is None:
                    raise BadAudio("WAV data chunk comes before its fmt chunk")
                del buf[:8]
                self._in_data = True
                if size == 0xFFFFFFFF and self._ds64_data_size:  # RF64: the real size is in ds64
                    size = self._ds64_data_size
                self._data_left = size if 0 < size < 0xFFFFFFFF else None
                self._pad = size & 1
                return
            padded = size + (size & 1)
            if padded > _MAX_HEADER:
                raise BadAudio(f"WAV {chunk_id!r} chunk of {size} bytes before the audio is too large")
            if len(buf) < 8 + padded:
                if len(buf) > _MAX_HEADER:
                    raise BadAudio("WAV header is too large")
                return
            body = bytes(buf[8 : 8 + size])
            del buf[: 8 + padded]
            if chunk_id == b"fmt ":
                self._parse_fmt(body, order)
            elif chunk_id == b"ds64" and len(body) >= 16:  # RF64: 64-bit RIFF size, then data size
                self._ds64_data_size = struct.unpack(order + "Q", body[8:16])[0]

    def _parse_fmt(self, body: bytes, order: str) -> None:
        if len(body) < 16:
            raise BadAudio("WAV fmt chunk is too short")
        tag, channels, rate, _, block_align, bits = struct.unpack(order + "HHIIHH", body[:16])
        if tag == _EXTENSIBLE and len(body) >= 26:
            tag = struct.unpack(order + "H", body[24:26])[0]  # the first two bytes of the sub-format GUID
        width = (bits + 7) // 8
        kind = {_PCM: "unsigned" if bits <= 8 else "signed", _FLOAT: "float", _ALAW: "alaw", _MULAW: "mulaw"}.get(tag)
        if kind is None:
            raise BadAudio(f"WAV format tag 0x{tag:04x} is not supported (PCM, IEEE float, A-law or µ-law)")
        encoding = raw_encoding(kind, width, self._big)
        if encoding is None:
            raise BadAudio(f"WAV with {bits}-bit {kind} samples is not supported")
        if channels < 1 or not SAMPLE_RATE_RANGE[0] <= rate <= SAMPLE_RATE_RANGE[1]:
            raise BadAudio(f"WAV header says {channels} channels at {rate} Hz (rates from {SAMPLE_RATE_RANGE[0]} to "
                           f"{SAMPLE_RATE_RANGE[1]} Hz are supported)")
        if block_align not in (0, width * channels):
            raise BadAudio(f"WAV block alignment {block_align} does not match {channels} x {bits}-bit samples")
        self.encoding, self.channels, self.sample_rate = encoding, channels, rate
        self._frame_bytes = width * channels

    def feed(self, data: bytes) -> np.ndarray:
        self._buf += data
        if not self._in_data:
            self._parse_header()
            if not self._in_data:
                return np.zeros((0, self.channels or 1), np.float32)
        return self._samples()

    def _samples(self) -> np.ndarray:
        buf, fb = self._buf, self._frame_bytes
        if self._trailer:
            buf.clear()
            return np.zeros((0, self.channels), np.float32)
        if self._data_left is None:
            return self._decode(len(buf) - len(buf) % fb)
        take = min(len(buf), self._data_left)
        out = self._decode(take - take % fb)
        self._data_left -= take - take % fb
        if self._data_left >= fb:
            return out
        # The stated end of the data: what follows decides whether the stated size was true.
        following = self._data_left + self._pad
        if len(buf) < following + 4:
            return out  # not known yet
        if _is_chunk_id(bytes(buf[following : following + 4])):
            self._trailer = True  # LIST, id3 and the like: not audio
            buf.clear()
            return out
        self._data_left = None  # the size was wrong, and all of it is audio
        return np.concatenate([out, self._samples()])

    def _decode(self, nbytes: int) -> np.ndarray:
        with memoryview(self._buf) as view:
            samples = self.encoding.decode(view[:nbytes])  # a copy: the view is released before the buffer shrinks
        del self._buf[:nbytes]
        return samples.reshape(-1, self.channels)

    def finish(self) -> np.ndarray:
        if not self._in_data:
            raise BadAudio("the audio ended inside its WAV header" if self._riff_checked else "no audio was received")
        if self._data_left is not None and len(self._buf) > self._data_left + self._pad:
            # Bytes after the stated end, too few to be a chunk header: the stated size was wrong.
            self._data_left = None
        out = self._samples()
        self._buf.clear()  # a trailing partial frame
        return out

    def close(self) -> None:
        self._buf.clear()


__all__ = ["WavReader"]
