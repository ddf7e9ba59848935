"""Fault injection (stt.faults, carried out for the session by its FaultRunner): the plan's grammar, the runner's
one call per item the writer sends, and each fault over real sockets against the scripted engine, as a client
asking for it by header or query parameter would see it."""

import json

import attrs
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from stt.config import ConfigError, resolve, server_config
from stt.cli import _parser
from stt.dialects import DIALECTS
from stt.events import AudioAccepted, Final, Partial, Reply, ShuttingDown
from stt.faults import DROP, FaultError, FaultRunner, parse_faults, within_limits
from stt.session import SessionLimits
from tests.helpers import frames_of, running_server, silence, start_message

CHARTS = {d.name: d.chart for d in DIALECTS}
END_OF_STREAM = json.dumps({"message": "EndOfStream", "last_seq_no": 0})


# --- the grammar ------------------------------------------------------------------------------------------


def test_a_plan_parses_into_triggers_at_audio_times_and_whole_session_faults():
    plan = parse_faults("drop@2s, close=4005@1500ms, error=quota_exceeded, delay=500ms, ack-delay=20ms, "
                        "stall=2s@3s, duplicate-partials, reorder-partials, idle=5s", CHARTS["speechmatics"])
    assert [(t.rule.id, t.rule.close, t.at) for t in plan.triggers] == [
        ("FAULT-DROP", 1006, 2.0), ("FAULT-CLOSE", 4005, 1.5), ("SM-LIMIT-001", 4005, None)]
    assert (plan.delay, plan.ack_delay, plan.stall_at, plan.stall_for, plan.idle_timeout) == (0.5, 0.02, 3.0, 2.0, 5.0)
    assert plan.duplicate_partials and plan.reorder_partials and plan
    assert not parse_faults("  ", CHARTS["speechmatics"])


@pytest.mark.parametrize("text, says", [
    ("explode", "unknown fault 'explode'"),
    ("drop=1", "drop takes no value"),
    ("close", "close needs a value"),
    ("close=1006", "not a close code a server may send"),
    ("close=999@1s", "not a close code"),
    ("delay=fast", "not a duration"),
    ("delay=1s@2s", "applies to the whole session"),
    ("drop@soon", "not a duration"),
    ("error=INSUFFICIENT_CREDITS", "the speechmatics dialect has no error 'INSUFFICIENT_CREDITS' (its errors: "),
    ("idle=0s", "more than 0"),
])
def test_a_bad_item_is_refused_naming_it(text, says):
    with pytest.raises(FaultError, match=None) as info:
        parse_faults(text, CHARTS["speechmatics"])
    assert says in str(info.value)


def test_error_names_the_dialects_own_errors():
    assert parse_faults("error=INSUFFICIENT_CREDITS", CHARTS["yourvoic"]).triggers[0].rule.id == "YV-CREDIT-001"
    assert parse_faults("error=add_audio_after_eos", CHARTS["speechmatics"]).triggers[0].rule.warning
    assert parse_faults("error=VB-BUSY-001", CHARTS["vblaze"]).triggers[0].rule.close == 1013  # by rule id


def test_stt_serve_fault_is_checked_at_start_up():
    config = server_config(resolve(_parser, ["serve", "--fault", "error=quota_exceeded"]))
    assert config.faults == "error=quota_exceeded"
    with pytest.raises(ConfigError, match="--fault: 'bogus': unknown fault"):
        server_config(resolve(_parser, ["serve", "--fault", "bogus"]))


# --- over the wire ----------------------------------------------------------------------------------------


def quick_server(**config):
    """The scripted engine, and a Speechmatics client that does not close after EndOfTranscript is closed soon;
    clients may bring their own fault plans (--allow-client-faults)."""
    return running_server(limits=SessionLimits(close_grace=0.2), **{"allow_client_faults": True, **config})


async def speechmatics(server, faults: str = "", *, partials: bool = False, query: str = ""):
    headers = [("x-stt-fault", faults)] if faults else []
    return open_websocket_url(f"ws://127.0.0.1:{server.port}/v2{query}", extra_headers=headers)


async def messages_until_closed(ws, timeout: float = 10) -> tuple[list[dict], int]:
    out = []
    with trio.fail_after(timeout):
        try:
            while True:
                message = await ws.get_message()
                out.append(json.loads(message) if isinstance(message, str) else {"binary": len(message)})
        except ConnectionClosed as exc:
            return out, exc.reason.code


async def started(ws, partials: bool = False) -> None:
    """StartRecognition, and the RecognitionStarted and Info that answer it."""
    await ws.send_message(start_message(partials=partials))
    with trio.fail_after(5):
        assert json.loads(await ws.get_message())["message"] == "RecognitionStarted"
        assert json.loads(await ws.get_message())["type"] == "recognition_quality"


async def send_audio(ws, seconds: float, *, then_end: bool = True) -> int:
    frames = frames_of(silence(seconds), 3200)
    for frame in frames:
        await ws.send_message(frame)
    if then_end:
        await ws.send_message(json.dumps({"message": "EndOfStream", "last_seq_no": len(frames)}))
    return len(frames)


async def served_normally(server) -> None:
    """A session without faults still goes its normal way: the server is unharmed."""
    async with await speechmatics(server) as ws:
        await started(ws)
        await send_audio(ws, 0.5)
        with trio.fail_after(10):
            while json.loads(await ws.get_message())["message"] != "EndOfTranscript":
                pass


async def test_drop_closes_the_connection_without_a_close_frame_after_that_much_audio():
    async with quick_server() as server:
        async with await speechmatics(server, "drop@0.5s") as ws:
            await started(ws)
            try:
                await send_audio(ws, 2.0, then_end=False)
            except ConnectionClosed:  # the server may be gone before every frame is sent
                pass
            messages, code = await messages_until_closed(ws)
        assert code == 1006  # no close frame came: an abnormal closure
        assert {m["message"] for m in messages} <= {"Info", "AudioAdded"}  # no Error: a drop says nothing
        assert max([m["seq_no"] for m in messages if "seq_no" in m], default=0) <= 6  # 0.1 s frames, 0.5 s
        assert server.endings[("speechmatics", "fault", DROP.id)] == 1
        await served_normally(server)


async def test_close_sends_that_code_and_no_error():
    async with quick_server() as server:
        async with await speechmatics(server, "close=4005@0.3s") as ws:
            await started(ws)
            await send_audio(ws, 1.0, then_end=False)
            messages, code = await messages_until_closed(ws)
        assert code == 4005
        assert {m["message"] for m in messages} <= {"AudioAdded", "AddTranscript", "AddPartialTranscript"}
        await served_normally(server)


async def test_error_without_a_time_is_the_vendors_error_and_close_at_once():
    async with quick_server() as server:
        async with await speechmatics(server, "error=quota_exceeded") as ws:
            messages, code = await messages_until_closed(ws)
        assert [(m["message"], m["type"]) for m in messages] == [("Error", "quota_exceeded")]
        assert code == 4005


async def test_a_warning_is_sent_and_the_session_goes_on():
    async with quick_server() as server:
        async with await speechmatics(server, "error=add_audio_after_eos@0.2s") as ws:
            await started(ws)
            await send_audio(ws, 0.5)
            messages, code = await messages_until_closed(ws)
        warnings = [m for m in messages if m["message"] == "Warning"]
        assert [w["type"] for w in warnings] == ["add_audio_after_eos"]
        assert messages[-1]["message"] == "EndOfTranscript"
        assert messages.index(warnings[0]) < messages.index(messages[-1])


async def test_yourvoic_insufficient_credits_by_query_parameter_which_the_dialect_never_sees():
    async with quick_server() as server:
        url = f"ws://127.0.0.1:{server.port}/api/v1/stt/realtime/stream?stt_fault=error%3DINSUFFICIENT_CREDITS"
        async with open_websocket_url(url) as ws:
            messages, code = await messages_until_closed(ws)
    assert [(m["type"], m["code"]) for m in messages] == [("error", "INSUFFICIENT_CREDITS")]
    assert messages[0]["message"].startswith("Insufficient credits")
    assert code == 1008


async def test_scriptix_shutdown_is_announced_then_closed_as_going_away():
    async with quick_server() as server:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/v2/realtime?stt_fault=shutdown") as ws:
            messages, code = await messages_until_closed(ws)
    assert [m["state"] for m in messages] == ["shutting_down"] and isinstance(messages[0]["at"], int)
    assert code == 1001


async def test_delay_holds_each_result_and_ack_delay_each_acknowledgement():
    async with quick_server() as server:
        async with await speechmatics(server, "delay=400ms") as ws:
            await started(ws)
            await send_audio(ws, 0.5, then_end=False)
            await ws.send_message(json.dumps({"message": "EndOfStream", "last_seq_no": 5}))
            sent = trio.current_time()
            while json.loads(await ws.get_message())["message"] != "AddTranscript":
                pass
            assert trio.current_time() - sent >= 0.4
        async with await speechmatics(server, "ack-delay=300ms") as ws:
            await started(ws)
            await ws.send_message(silence(0.1))
            sent = trio.current_time()
            assert json.loads(await ws.get_message()) == {"message": "AudioAdded", "seq_no": 1}
            assert trio.current_time() - sent >= 0.3


async def test_stall_sends_nothing_for_a_while_after_that_much_audio_then_goes_on():
    async with quick_server() as server:
        async with await speechmatics(server, "stall=1s@0.3s") as ws:
            await started(ws)
            await send_audio(ws, 1.0)
            arrivals = []
            with trio.fail_after(10):
                while True:
                    message = json.loads(await ws.get_message())
                    arrivals.append((trio.current_time(), message["message"]))
                    if message["message"] == "EndOfTranscript":
                        break
        gaps = [later[0] - earlier[0] for earlier, later in zip(arrivals, arrivals[1:])]
        assert max(gaps) >= 0.9  # the stall (less the time the first frames took to come)
        assert [m for _, m in arrivals].count("AudioAdded") == 10  # nothing lost, only late
        async with await speechmatics(server, "stall@0.1s") as ws:  # no end to it
            await started(ws)  # RecognitionStarted and Info went out before any audio
            await send_audio(ws, 0.5)
            acks = 0
            with trio.move_on_after(1):
                while True:
                    assert json.loads(await ws.get_message())["message"] == "AudioAdded"
                    acks += 1
            assert acks <= 2  # what went out before the decoder passed 0.1 s of audio
        async with await speechmatics(server, "stall") as ws:
            await ws.send_message(start_message())
            with trio.move_on_after(1):
                await ws.get_message()
                pytest.fail("a session stalled from the start sent something")


async def partials_of(server, faults: str) -> list[str]:
    async with await speechmatics(server, faults) as ws:
        await started(ws, partials=True)
        await send_audio(ws, 2.5)
        messages, _ = await messages_until_closed(ws)
    return [m["metadata"]["transcript"] for m in messages if m.get("message") == "AddPartialTranscript"]


async def test_duplicate_and_reorder_partials():
    async with quick_server() as server:
        plain = await partials_of(server, "")
        assert len(plain) >= 4 and len(set(plain)) == len(plain)  # the scripted engine's growing partials
        assert await partials_of(server, "duplicate-partials") == [p for p in plain for _ in (0, 1)]
        swapped = await partials_of(server, "reorder-partials")
        assert sorted(swapped) == sorted(plain) and swapped != plain
        assert swapped[:2] == [plain[1], plain[0]]


async def test_idle_sets_this_sessions_idle_timeout():
    async with quick_server() as server:
        async with await speechmatics(server, "idle=300ms") as ws:
            await started(ws)
            start = trio.current_time()
            messages, code = await messages_until_closed(ws, timeout=5)
        assert [m["type"] for m in messages] == ["idle_timeout"] and code == 1008
        assert trio.current_time() - start < 3  # not the server's 180 s


async def test_a_bad_plan_refuses_the_upgrade_with_400_saying_why():
    async with quick_server() as server:
        with pytest.raises(ConnectionRejected) as info:
            async with await speechmatics(server, "drop@never"):
                pass
        assert info.value.status_code == 400
        assert b"'drop@never': 'never' is not a duration" in info.value.body


async def test_the_servers_plan_applies_unless_a_connection_brings_its_own():
    async with quick_server(faults="error=quota_exceeded") as server:
        async with await speechmatics(server) as ws:
            messages, code = await messages_until_closed(ws)
        assert code == 4005
        async with await speechmatics(server, "idle=5s") as ws:  # its own plan: no quota error
            await started(ws)
            await send_audio(ws, 0.2)
            messages, code = await messages_until_closed(ws)
        assert messages[-1]["message"] == "EndOfTranscript"


@pytest.mark.parametrize("path", ["/ws", "/v2/client/tok?url=http%3A%2F%2F127.0.0.1%3A9%2Fa.wav"],
                         ids=["voicerun", "scriptix-stream"])
async def test_a_client_that_leaves_while_its_greeting_is_stalled_ends_its_session(path):
    """The greeting (session.created, {"state":"loading"}) held back by a stall: the client gives up and closes.
    The stall ends with the connection, and the session with it, instead of waiting for a reader that has
    not started (found by the fuzzing suite: a client gone during the greeting left its session running)."""
    async with quick_server() as server:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}{path}",
                                      extra_headers=[("x-stt-fault", "stall")]) as ws:
            with trio.move_on_after(0.3):
                await ws.get_message()
                pytest.fail("the greeting came through the stall")
        with trio.fail_after(3):
            while server.sessions or server.connections.open:
                await trio.sleep(0.02)


# --- who may ask (stt serve --allow-client-faults), and how far ---------------------------------------------


def test_a_clients_plan_is_cut_to_the_servers_limits_and_the_operators_is_not():
    plan = parse_faults("idle=3600s, stall=900s@1s, delay=10s, ack-delay=2s", CHARTS["speechmatics"])
    cut = within_limits(plan, idle_timeout=5.0)
    assert (cut.idle_timeout, cut.stall_for, cut.delay, cut.ack_delay, cut.stall_at) == (5.0, 5.0, 5.0, 2.0, 1.0)
    assert within_limits(parse_faults("stall", CHARTS["speechmatics"]), 60.0, max_session_seconds=20.0).stall_for == 20
    assert within_limits(parse_faults("idle=1s", CHARTS["speechmatics"]), 5.0).idle_timeout == 1.0  # only cut


async def test_stt_serve_refuses_a_clients_plan_with_403_naming_the_flag_and_serves_it_with_the_flag():
    from tests.test_shutdown import listening_port, serve_process

    async with serve_process() as (_, log):
        with trio.fail_after(15):
            port = await listening_port(log)
            for ask in ({"extra_headers": [("x-stt-fault", "error=quota_exceeded")]}, {"query": "?stt_fault=drop"}):
                with pytest.raises(ConnectionRejected) as info:
                    async with open_websocket_url(f"ws://127.0.0.1:{port}/v2{ask.get('query', '')}",
                                                  extra_headers=ask.get("extra_headers", [])):
                        pass
                assert info.value.status_code == 403
                assert "--allow-client-faults" in info.value.body.decode() and info.value.body.count(b"\n") == 1
            async with open_websocket_url(f"ws://127.0.0.1:{port}/v2") as ws:  # no plan: served as ever
                await started(ws)
            await log.wait_for(r"a client fault plan refused \(403\): --allow-client-faults lifts this")
    async with serve_process("--allow-client-faults") as (_, log):
        with trio.fail_after(15):
            port = await listening_port(log)
            async with open_websocket_url(f"ws://127.0.0.1:{port}/v2",
                                          extra_headers=[("x-stt-fault", "error=quota_exceeded")]) as ws:
                messages, code = await messages_until_closed(ws)
            assert messages[-1]["type"] == "quota_exceeded" and code == 4005


async def test_a_clients_idle_fault_cannot_hold_the_servers_slots_past_its_idle_timeout():
    """The issue's case: `x-stt-fault: idle=3600s` against --idle-timeout 1 and --max-sessions 2. Both silent
    clients are ended by the server's own idle timeout, and a third client is served."""
    from tests.test_shutdown import listening_port, serve_process

    plan = [("x-stt-fault", "idle=3600s")]
    async with serve_process("--allow-client-faults", "--idle-timeout", "1", "--max-sessions", "2") as (_, log):
        with trio.fail_after(20):
            port = await listening_port(log)
            url = f"ws://127.0.0.1:{port}/v2"
            async with open_websocket_url(url, extra_headers=plan) as one, \
                    open_websocket_url(url, extra_headers=plan) as two:
                await started(one)
                await started(two)
                began = trio.current_time()
                for ws in (one, two):
                    messages, code = await messages_until_closed(ws, timeout=6)
                    assert [m["type"] for m in messages] == ["idle_timeout"] and code == 1008
                assert trio.current_time() - began < 4
            async with open_websocket_url(url) as third:
                await started(third)  # a free slot: not quota_exceeded


async def test_without_the_permission_an_empty_client_plan_does_not_set_the_operators_plan_aside():
    async with running_server(faults="error=quota_exceeded") as server:
        async with await speechmatics(server, query="?stt_fault=") as ws:
            messages, code = await messages_until_closed(ws)
        assert messages[-1]["type"] == "quota_exceeded" and code == 4005


# --- the runner: one session's plan, carried out (FaultRunner) -------------------------------------------------


@attrs.define
class Announcing:
    """A dialect's rendering of what faults send: a warning, and a shutdown notice."""

    announces_shutdown: bool = True

    def render(self, event):
        assert isinstance(event, ShuttingDown)
        return ["shutting down"]

    def render_violation(self, violation):
        return [f"warning {violation.rule.id}: {violation.detail}"]


@attrs.define
class SessionSide:
    """What a FaultRunner asks of its session: its waits (noted, not waited), whether it has ended, its audio."""

    waits: list = attrs.field(factory=list)
    ended: bool = False
    audio: float = 0.0
    end_while_waiting: bool = False

    async def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.ended = self.ended or self.end_while_waiting

    def runner(self, text: str) -> FaultRunner:
        return FaultRunner(parse_faults(text, CHARTS["speechmatics"]), Announcing(), wait=self.wait,
                           ended=lambda: self.ended, audio_seconds=lambda: self.audio)


PARTIAL, FINAL, ACK = Partial((), 0.0, 1.0), Final((), 0.0, 1.0), AudioAccepted(1)


async def test_an_empty_plan_sends_each_frame_as_it_is_and_never_waits():
    side = SessionSide(ended=True)  # even a session that has ended gets its frames back: only a plan holds them
    runner = side.runner("")
    assert not runner and runner.at_open() == [] and runner.due(1e9) == []
    for item in (PARTIAL, FINAL, ACK, Reply(("r",))):
        assert await runner.on_send(item, ["frame"]) == ["frame"]
    assert side.waits == [] and runner.limits(SessionLimits()) == SessionLimits()


def test_timed_triggers_fall_due_once_each_in_the_order_of_their_audio_time():
    runner = SessionSide().runner("close=4005@2s, drop@1s, error=quota_exceeded")
    assert [t.rule.id for t in runner.at_open()] == ["SM-LIMIT-001"]
    assert runner.due(0.5) == []
    assert [t.rule.id for t in runner.due(1.0)] == ["FAULT-DROP"]
    assert [t.rule.id for t in runner.due(10.0)] == ["FAULT-CLOSE"]
    assert runner.due(20.0) == [] and runner.due(1.0) == []


async def test_a_trigger_sends_the_dialects_warning_or_shutdown_notice_and_a_fatal_error_nothing_of_its_own():
    runner = SessionSide().runner("error=add_audio_after_eos, shutdown, error=quota_exceeded")
    warning, shutdown, fatal = runner.at_open()
    assert await runner.on_send(warning, []) == [f"warning {warning.rule.id}: injected fault"]
    assert await runner.on_send(shutdown, []) == ["shutting down"]
    assert fatal.rule.fatal and await runner.on_send(fatal, []) == []  # the session's close sends its error


async def test_partials_are_doubled_or_swapped_pairwise_and_acks_may_overtake_a_held_one():
    doubled = SessionSide().runner("duplicate-partials")
    assert await doubled.on_send(PARTIAL, ["p"]) == ["p", "p"]
    assert await doubled.on_send(FINAL, ["f"]) == ["f"]

    swapped = SessionSide().runner("reorder-partials")
    assert await swapped.on_send(PARTIAL, ["p1"]) == []  # held
    assert await swapped.on_send(ACK, ["ack"]) == ["ack"]  # goes past it
    assert await swapped.on_send(PARTIAL, ["p2"]) == ["p2", "p1"]
    assert await swapped.on_send(PARTIAL, ["p3"]) == []
    assert await swapped.on_send(FINAL, ["f"]) == ["p3", "f"]  # a held partial never outlives the next result
    assert await swapped.on_send(PARTIAL, []) == []  # a partial the dialect does not send is not held


async def test_results_and_acks_wait_as_the_plan_says_and_the_stall_comes_once_past_its_audio_time():
    side = SessionSide()
    runner = side.runner("delay=500ms, ack-delay=20ms, stall=2s@3s")
    assert await runner.on_send(PARTIAL, ["p"]) == ["p"] and await runner.on_send(FINAL, ["f"]) == ["f"]
    assert await runner.on_send(ACK, ["a"]) == ["a"] and await runner.on_send(Reply(("r",)), ["r"]) == ["r"]
    assert side.waits == [0.5, 0.5, 0.02]
    side.waits.clear()
    side.audio = 3.5
    await runner.on_send(Reply(("r",)), ["r"])
    await runner.on_send(Reply(("r",)), ["r"])
    assert side.waits == [2.0]  # once


async def test_frames_a_fault_held_up_are_not_sent_once_the_session_has_ended_meanwhile():
    side = SessionSide(end_while_waiting=True)
    runner = side.runner("delay=1s")
    assert await runner.on_send(PARTIAL, ["p"]) is None


def test_an_idle_fault_sets_the_sessions_idle_timeout():
    assert SessionSide().runner("idle=5s").limits(SessionLimits(idle_timeout=180)).idle_timeout == 5
