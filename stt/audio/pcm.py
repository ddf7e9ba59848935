"""Raw PCM codecs (signed 16-bit LE, 32-bit float LE, G.711 µ-law), mixing to mono, and resampling."""

from __future__ import annotations

import numpy as np
import soxr

from stt.events import AudioFormat


class UnsupportedAudio(ValueError):
    """The audio format cannot be decoded."""


def _mulaw_table() -> np.ndarray:
    """G.711 µ-law byte -> linear int16 (ITU-T G.711, as in Sun's g711.c)."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


MULAW_TO_LINEAR = _mulaw_table()

_SAMPLE_WIDTH = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1}


def _to_float(encoding: str, data: bytes) -> np.ndarray:
    """Whole samples in `data` -> float32 in [-1, 1)."""
    if encoding == "pcm_s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if encoding == "pcm_f32le":
        return np.nan_to_num(np.frombuffer(data, dtype="<f4").astype(np.float32))
    return MULAW_TO_LINEAR[np.frombuffer(data, dtype=np.uint8)].astype(np.float32) / 32768.0


def _to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(np.int16)


class AudioDecoder:
    """Streams bytes of one format into mono int16 at `target_rate`; bytes may split anywhere."""

    def __init__(self, fmt: AudioFormat, target_rate: int):
        if fmt.encoding not in _SAMPLE_WIDTH:
            raise UnsupportedAudio(f"unsupported encoding {fmt.encoding!r}")
        if fmt.channels < 1 or fmt.sample_rate <= 0:
            raise UnsupportedAudio(f"bad format {fmt}")
        self.format = fmt
        self.target_rate = target_rate
        self._frame_bytes = _SAMPLE_WIDTH[fmt.encoding] * fmt.channels
        self._carry = b""
        self._resampler = (
            soxr.ResampleStream(fmt.sample_rate, target_rate, 1, dtype="float32", quality="HQ")
            if fmt.sample_rate != target_rate
            else None
        )
        self.samples_in = 0  # input frames (per channel) decoded so far
        self._passthrough = fmt.encoding == "pcm_s16le" and fmt.channels == 1 and self._resampler is None

    def decode(self, data: bytes) -> np.ndarray:
        if self._passthrough and not self._carry and len(data) % 2 == 0:  # the common case: nothing to do
            self.samples_in += len(data) // 2
            return np.frombuffer(data, dtype="<i2").astype(np.int16)
        data = self._carry + data
        whole = len(data) - len(data) % self._frame_bytes
        self._carry = data[whole:]
        samples = _to_float(self.format.encoding, data[:whole])
        if self.format.channels > 1:
            samples = samples.reshape(-1, self.format.channels).mean(axis=1)
        self.samples_in += len(samples)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return _to_int16(samples)

    def finish(self) -> np.ndarray:
        """The resampler's delayed tail; a trailing partial sample is dropped."""
        self._carry = b""
        if self._resampler is None:
            return np.zeros(0, dtype=np.int16)
        return _to_int16(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))


def open_decoder(fmt: AudioFormat, target_rate: int) -> AudioDecoder:
    return AudioDecoder(fmt, target_rate)
