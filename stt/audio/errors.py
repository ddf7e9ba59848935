"""The ways audio can fail: a format we do not decode (known before any audio arrives), audio that does not
decode as what it claims to be (found in the stream), audio past a limit of what decoding may cost, and a
server with no room left for a file decoded whole."""


class UnsupportedAudio(ValueError):
    """The declared audio format cannot be decoded."""


class BadAudio(ValueError):
    """The audio bytes do not decode: a corrupt or unrecognised stream. The message says why, for the client."""


class AudioLimitExceeded(BadAudio):
    """The audio decodes into more than a limit allows (channels, samples per message or per second): bad audio,
    with the limit named in the message."""


class FileBuffersFull(Exception):
    """A file decoded whole does not fit in what the server holds for all sessions' files: the server is busy,
    the audio is not at fault."""


__all__ = ["AudioLimitExceeded", "BadAudio", "FileBuffersFull", "UnsupportedAudio"]
