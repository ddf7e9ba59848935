"""stt: a real-time speech-to-text server that speaks the vendors' WebSocket dialects, offline."""

import os

# One OpenBLAS thread, set before numpy loads: its worker threads spin after each small matmul (the whisper
# engine's log-mel), which doubles the CPU of a decode and cuts two decoders' throughput by a third
# (engines-research.md Q3). Set it yourself to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
