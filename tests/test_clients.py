"""stt.clients, sans-IO, against the server's own dialects (stt.dialects): every frame a client sends is accepted,
it sees the server's ready message, and it reads a rendered final back as the same words and times."""

import pytest

from stt.clients import CLIENTS
from stt.dialects import dialect_named
from stt.dialects.base import Handshake
from stt.events import Configure, Final, SessionStarted, SpeechStopped, Violation, Word

FINAL = Final((Word("go", 0.5, 0.8, 0.9), Word("forward", 0.9, 1.4, 0.8)), 0.5, 1.4)


def opened(name: str):
    """A client and its dialect, the client's handshake and opening frames received: (client, dialect, config)."""
    client = CLIENTS[name](partials=True)
    dialect = dialect_named(name)(Handshake(client.path, client.query(None), dict(client.headers(None))))
    events = [e for frame in client.opening() for e in dialect.receive(frame)]
    assert not [e for e in events if isinstance(e, Violation)], events
    configs = [e for e in events if isinstance(e, Configure)]
    config = configs[0] if configs else getattr(dialect, "configure", lambda: None)()
    if client.waits_for_ready:  # the server's answer to the opening, as the session renders it
        frames = dialect.render(SessionStarted("0" * 32, config))
        assert any(client.read(frame).ready for frame in frames), frames
    return client, dialect


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_a_client_reads_the_final_its_dialect_renders(name):
    client, dialect = opened(name)
    # An utterance's final, then the end of speech after it, as engines send them (AssemblyAI ends its turn there).
    frames = dialect.render(FINAL) + dialect.render(SpeechStopped(FINAL.end))
    segments = [s for frame in frames for s in client.read(frame).segments]
    assert len(segments) == 1 and segments[0].final
    assert segments[0].text.lower().rstrip(".") == "go forward"
    if client.has_times:
        assert [(w.text.lower().rstrip("."), w.start, w.end) for w in segments[0].words] == [("go", 0.5, 0.8), ("forward", 0.9, 1.4)]


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_every_client_frame_is_accepted_by_its_dialect(name):
    client, dialect = opened(name)
    frames = [*client.audio(b"\0\0" * 1600), *client.closing()]
    violations = [e for frame in frames for e in dialect.receive(frame) if isinstance(e, Violation)]
    assert not violations, violations
