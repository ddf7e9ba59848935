"""Turn what clients send into what engines want: mono int16 samples at the engine's rate.

    decoder = open_decoder(AudioFormat("mulaw", 8000), target_rate=16000)
    samples = decoder.decode(frame_bytes)   # any split, even mid-sample
    tail = decoder.finish()
"""

from stt.audio.pcm import AudioDecoder, UnsupportedAudio, open_decoder

__all__ = ["AudioDecoder", "UnsupportedAudio", "open_decoder"]
