"""What decoding may cost (stt.audio.limits): channels, samples per message (checked inside FFmpeg's thread, so
a compressed bomb stops at the cap), the decode rate, the process's budget for files decoded whole, and an
MP4 decoded whole handed out in pieces of at most the per-message cap."""

import struct

import numpy as np
import pytest

from stt.audio import AudioLimitExceeded, BadAudio, DecodeRate, FileBuffers, FileBuffersFull, open_decoder
from stt.events import AudioFormat
from tests.helpers import encode_audio, flac_of_silence


def wav_header(channels: int, rate: int = 16000) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + \
        struct.pack("<I", 0xFFFFFFFF)


def test_a_wav_claiming_more_channels_than_the_limit_is_bad_audio_before_any_sample():
    with open_decoder(AudioFormat("file"), 16000, split_channels=True, max_channels=8) as decoder:
        with pytest.raises(AudioLimitExceeded, match="64 channels; at most 8"):
            decoder.decode(wav_header(64))


def test_a_wav_at_the_channel_limit_decodes_a_row_per_channel():
    with open_decoder(AudioFormat("file"), 16000, split_channels=True, max_channels=8) as decoder:
        out = decoder.decode(wav_header(8) + bytes(2 * 8 * 160))
    assert out.shape == (8, 160)


def test_a_raw_format_declaring_too_many_channels_is_refused_at_once():
    with pytest.raises(AudioLimitExceeded):
        open_decoder(AudioFormat("pcm_s16le", 16000, channels=9), 16000, max_channels=8)


def test_a_flac_bomb_stops_at_the_per_message_cap_without_decoding_the_rest():
    data = flac_of_silence(600)  # 10 minutes, 9.6 million samples, in 115 KB
    assert len(data) < 120_000
    with open_decoder(AudioFormat("file"), 16000, max_message_samples=1_000_000) as decoder:
        with pytest.raises(AudioLimitExceeded, match="more than 1000000 samples"):
            decoder.decode(data)
        assert decoder._reader.samples_out == 0  # nothing of it was handed out
    with open_decoder(AudioFormat("file"), 16000, max_message_samples=10_000_000) as decoder:
        out = np.concatenate([decoder.decode(data), decoder.finish()])
    assert len(out) == 600 * 16000  # under the cap, all of it


def test_the_cap_counts_each_call_so_a_file_in_small_messages_decodes_whole():
    data = flac_of_silence(60)
    cap = 16000 * 30  # 30 s a message: the file is 60 s, each 4 KB message far less
    with open_decoder(AudioFormat("file"), 16000, max_message_samples=cap) as decoder:
        parts = [decoder.decode(data[i:i + 4096]) for i in range(0, len(data), 4096)]
        parts.append(decoder.finish())
    assert sum(len(p) for p in parts) == 60 * 16000


def test_an_mp4_decoded_whole_comes_out_in_pieces_of_at_most_the_cap_and_all_of_it():
    rate = 16000
    tone = (np.sin(np.arange(20 * rate) * 0.05) * 8000).astype(np.int16)
    data = encode_audio(tone, rate, "mp4", "aac")
    with open_decoder(AudioFormat("file"), rate) as decoder:
        decoder.decode(data)
        whole = decoder.finish()
        assert not decoder.more
    with open_decoder(AudioFormat("file"), rate, max_message_samples=3 * rate) as decoder:
        assert len(decoder.decode(data)) == 0
        pieces = [decoder.finish()]
        while decoder.more:
            pieces.append(decoder.finish())
    assert len(pieces) >= 7 and all(len(p) <= 3 * rate + 1024 for p in pieces)
    joined = np.concatenate(pieces)
    assert len(joined) == len(whole) and np.abs(joined.astype(int) - whole).max() <= 1


def test_the_whole_file_budget_is_shared_taken_as_bytes_arrive_and_given_back_at_the_end():
    rate = 16000
    data = encode_audio(np.zeros(2 * rate, np.int16), rate, "mp4", "aac")
    buffers = FileBuffers(int(len(data) * 1.5))
    first = open_decoder(AudioFormat("file"), rate, file_buffers=buffers)
    second = open_decoder(AudioFormat("file"), rate, file_buffers=buffers)
    with first, second:
        first.decode(data)
        assert buffers.held == len(data)
        with pytest.raises(FileBuffersFull, match="retry later"):
            second.decode(data)
        assert not isinstance(FileBuffersFull("x"), BadAudio)  # the audio is not at fault: the server is busy
        first.finish()
        assert buffers.held == 0
        second.decode(data)  # room again
        assert buffers.held == len(data)
    assert buffers.held == 0  # closed without finishing: given back too


def test_the_decode_rate_allows_a_burst_then_the_rate_and_says_how_long_to_wait_beyond():
    rate = DecodeRate(1000, burst=5000, now=0.0)
    assert rate.spend(5000, now=0.0) == 0  # the burst
    assert rate.spend(1000, now=1.0) == 0  # a second's worth, a second later
    assert rate.spend(1500, now=2.0) == pytest.approx(0.5)  # 500 too many: half a second at 1000 a second
    assert rate.spend(0, now=2.5) == 0  # waited: even again
    assert DecodeRate(0, burst=0, now=0.0).spend(10**12, now=0.0) == 0  # 0: no limit
