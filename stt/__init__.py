"""stt: a real-time speech-to-text server that speaks the vendors' WebSocket dialects, offline."""

__version__ = "0.1.0"
