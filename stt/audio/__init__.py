"""Turn what clients send into what engines want: int16 samples at the engine's rate, mono or per channel.

    with open_decoder(AudioFormat("mulaw", 8000), target_rate=16000) as decoder:
        samples = decoder.decode(frame_bytes)   # any split, even mid-sample
        tail = decoder.finish()

    open_decoder(AudioFormat("file"), 16000)    # WAV, MP3, AAC, FLAC, Ogg, AMR, WebM, AIFF, MP4: from the bytes
    open_decoder(AudioFormat("pcm_s16le", 16000, sniff=True), 16000)   # raw, unless a container header leads

What decoding may cost (channels, samples per message and per second, whole-file bytes): stt.audio.limits.
Raw codecs: stt.audio.pcm. WAV: stt.audio.wav. Compressed containers: stt.audio.container (PyAV/FFmpeg).
"""

from stt.audio.decoder import ENCODINGS, AudioDecoder, RawReader, open_decoder
from stt.audio.errors import AudioLimitExceeded, BadAudio, FileBuffersFull, UnsupportedAudio
from stt.audio.limits import DecodeRate, FileBuffers
from stt.audio.pcm import RAW_ENCODINGS, raw_encoding

__all__ = ["ENCODINGS", "RAW_ENCODINGS", "AudioDecoder", "AudioLimitExceeded", "BadAudio", "DecodeRate",
           "FileBuffers", "FileBuffersFull", "RawReader", "UnsupportedAudio",
           "open_decoder", "raw_encoding"]
