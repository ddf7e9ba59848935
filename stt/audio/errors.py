"""The two ways audio can fail: a format we do not decode (known before any audio arrives), and audio that
does not decode as what it claims to be (found in the stream)."""


class UnsupportedAudio(ValueError):
    """The declared audio format cannot be decoded."""


class BadAudio(ValueError):
    """The audio bytes do not decode: a corrupt or unrecognised stream. The message says why, for the client."""


__all__ = ["BadAudio", "UnsupportedAudio"]
