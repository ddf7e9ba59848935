"""docs/deploy.md made true: docs/deploy/nginx.conf in front of two real `stt serve` processes (skipped without an
nginx binary), and docs/deploy/kubernetes.yaml checked against stt's own option parsing and admin routes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionRejected, open_websocket_url

from stt.admin import Admin
from stt.cli import _parser, _server_config
from stt.config import ConfigError
from tests.helpers import frames_of, receive_all, silence, start_message
from tests.test_admin import get

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "docs" / "deploy" / "nginx.conf"
KUBERNETES = ROOT / "docs" / "deploy" / "kubernetes.yaml"
KEY = "deploy-test-key"

# --- Kubernetes ---------------------------------------------------------------------------------------------

KUBERNETES_DEFAULT_GRACE = 30  # terminationGracePeriodSeconds when the pod spec leaves it out


def manifest() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(KUBERNETES.read_text()) if doc]


def _one(docs: list[dict], kind: str) -> dict:
    found = [doc for doc in docs if doc.get("kind") == kind]
    assert len(found) == 1, f"one {kind} in {KUBERNETES.name}, not {len(found)}"
    return found[0]


def _container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per pod: stt"
    return containers[0]


def _port_number(container: dict, port) -> int | None:
    """A probe's or a Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    return next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == port), None)


def _cores(quantity) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def resolved(container: dict):
    """(ServerConfig, settings) of the container's `stt serve` command line, as `stt serve` resolves them
    (stt.cli._server_config: stt.config.resolve and server_config, which checks every value), with the
    container's environment (a placeholder for a Secret's value) and none of this machine's STT_* variables."""
    argv = [str(arg) for arg in [*container.get("command", []), *container.get("args", [])][1:]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STT_")}
    for variable in container.get("env", []):
        env[variable["name"]] = str(variable["value"]) if "value" in variable else "from-the-secret"
    with mock.patch.dict(os.environ, env, clear=True), mock.patch("sys.stderr"):  # argparse's complaints
        return _server_config(argv)


def problems(docs: list[dict]) -> list[str]:
    """What is wrong with a manifest, as docs/deploy.md describes it; [] when nothing is."""
    found = []
    deployment, service = _one(docs, "Deployment"), _one(docs, "Service")
    pod = deployment["spec"]["template"]
    container = _container(deployment)

    argv = [*container.get("command", []), *container.get("args", [])]
    if argv[:2] != ["stt", "serve"]:
        return [f"the container runs {argv[:2]}, not stt serve"]
    try:
        config, settings = resolved(container)
    except ConfigError as exc:
        return [f"stt serve refuses the command line: {exc}"]
    except SystemExit:
        return [f"stt serve cannot parse the command line: {argv}"]

    if config.host != "0.0.0.0":
        found.append(f"stt listens on {config.host}: the Service cannot reach it")
    if config.admin_port is None:
        return found + ["no --admin-port: nothing answers the probes"]
    if config.admin_host != "0.0.0.0":
        found.append(f"the admin port listens on {config.admin_host}: the kubelet probes the pod's IP")
    if settings.workers != 1:
        found.append("more than one process in a pod")

    # The probes: the admin port, a route that answers 200 while the process runs (liveness), and /readyz.
    admin = Admin()  # no server yet: as while the engine loads
    for name, path in (("livenessProbe", None), ("readinessProbe", "/readyz")):
        probe = container.get(name, {}).get("httpGet")
        if probe is None:
            found.append(f"no {name} httpGet")
            continue
        port = _port_number(container, probe.get("port"))
        if port != config.admin_port:
            found.append(f"the {name} asks port {probe.get('port')}, not the admin port {config.admin_port}")
        if path is not None and probe.get("path") != path:
            found.append(f"the {name} asks {probe.get('path')}, not {path}")
        status = admin.respond("GET", probe.get("path", "/"))[0]
        if name == "livenessProbe" and status != 200:
            found.append(f"the livenessProbe path {probe.get('path')} answers {status}, not 200")
        if name == "livenessProbe" and probe.get("path", "").split("?")[0] == "/readyz":
            found.append("the livenessProbe asks /readyz: a full pod (503) would be restarted")

    # Shutting down: the kubelet runs the preStop pause, sends SIGTERM, and SIGKILLs at the end of the pod's
    # grace. stt takes up to --shutdown-grace, then up to two send timeouts + 1 s to close the sessions still
    # open (stt.server.shut_down), then its engine stops.
    grace = pod["spec"].get("terminationGracePeriodSeconds", KUBERNETES_DEFAULT_GRACE)
    pause = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    closing = 2 * config.limits.send_timeout + 1
    if not grace > pause + config.shutdown_grace + closing:
        found.append(f"terminationGracePeriodSeconds {grace} is not more than the preStop pause {pause} s "
                     f"+ --shutdown-grace {config.shutdown_grace:g} s + {closing:g} s to close the sessions")

    # The ports: the container's ws port is stt's, the Service sends there and not to the admin port.
    if _port_number(container, "ws") != config.port:
        found.append(f"the container port ws is not stt's --port {config.port}")
    targets = [_port_number(container, p.get("targetPort", p.get("port"))) for p in service["spec"]["ports"]]
    if targets != [config.port]:
        found.append(f"the Service sends to ports {targets}, not only to {config.port}")
    scrape_port = pod["metadata"].get("annotations", {}).get("prometheus.io/port")
    if scrape_port is not None and int(scrape_port) != config.admin_port:
        found.append(f"prometheus.io/port {scrape_port} is not the admin port {config.admin_port}")

    # The labels: the Deployment's selector and the Service's select the pods.
    labels = pod["metadata"].get("labels", {})
    for what, selector in (("Deployment", deployment["spec"]["selector"].get("matchLabels", {})),
                           ("Service", service["spec"].get("selector", {}))):
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            found.append(f"the {what}'s selector {selector} does not select the pods {labels}")

    # The keys come from a Secret, not from the manifest.
    keys = [v for v in container.get("env", []) if v["name"] == "STT_API_KEYS"]
    if not keys or "secretKeyRef" not in keys[0].get("valueFrom", {}):
        found.append("STT_API_KEYS does not come from a Secret")
    elif len(config.api_keys) != 1:
        found.append("the Secret's keys do not reach stt")

    # Sizing (docs/engines.md): decoders for the cores the pod gets, not the node's; whisper and sphinx each held
    # 2 real-time streams per core (4 on 2 cores) and no more.
    cpu = container.get("resources", {}).get("requests", {}).get("cpu")
    if cpu is None:
        found.append("no CPU request")
    else:
        cores = _cores(cpu)
        if config.decode_workers != max(1, int(cores)):
            found.append(f"--decode-workers {config.decode_workers} for a CPU request of {cpu}")
        if config.engine in ("whisper", "sphinx") and config.max_sessions != "auto" \
                and not 0 < config.max_sessions <= 2 * cores:  # auto: the engine's capacity, from its decoders
            found.append(f"--max-sessions {config.max_sessions} for {config.engine} on {cpu} cores (at most 2 a core)")
    return found


def test_the_kubernetes_manifest_is_what_docs_deploy_md_says():
    docs = manifest()
    assert problems(docs) == []
    config, settings = resolved(_container(_one(docs, "Deployment")))
    assert (config.port, config.admin_port, config.shutdown_grace, settings.workers) == (9000, 9100, 30, 1)


def _args(docs) -> list:
    return _container(_one(docs, "Deployment"))["command"]


def _set_flag(docs, flag: str, value: str | None) -> None:
    """Change (or with None remove) a flag of the container's command line; add it when missing."""
    command = _args(docs)
    if flag in command:
        at = command.index(flag)
        if value is None:
            del command[at:at + 2]
        else:
            command[at + 1] = value
    elif value is not None:
        command += [flag, value]


def _pod(docs) -> dict:
    return _one(docs, "Deployment")["spec"]["template"]["spec"]


def _probe(docs, name) -> dict:
    return _container(_one(docs, "Deployment"))[name]["httpGet"]


MISTAKES = {
    "the default termination grace": lambda d: _pod(d).pop("terminationGracePeriodSeconds"),
    "a grace no longer than stt's": lambda d: _pod(d).update(terminationGracePeriodSeconds=35),
    "a grace without time to close the sessions": lambda d: _pod(d).update(terminationGracePeriodSeconds=45),
    "a longer --shutdown-grace alone": lambda d: _set_flag(d, "--shutdown-grace", "60"),
    "a longer grace from the environment": lambda d: (_set_flag(d, "--shutdown-grace", None), _container(
        _one(d, "Deployment"))["env"].append({"name": "STT_SHUTDOWN_GRACE", "value": "60"})),
    "the default --shutdown-grace with a short termination grace": lambda d: (
        _set_flag(d, "--shutdown-grace", None), _pod(d).update(terminationGracePeriodSeconds=30)),
    "readiness on /healthz": lambda d: _probe(d, "readinessProbe").update(path="/healthz"),
    "liveness on /readyz": lambda d: _probe(d, "livenessProbe").update(path="/readyz"),
    "liveness on a path stt does not serve": lambda d: _probe(d, "livenessProbe").update(path="/livez"),
    "a probe on the WebSocket port": lambda d: _probe(d, "readinessProbe").update(port=9000),
    "a probe on a named port that is not the admin one": lambda d: _probe(d, "livenessProbe").update(port="ws"),
    "another admin port": lambda d: _set_flag(d, "--admin-port", "9200"),
    "the admin port on 127.0.0.1": lambda d: _set_flag(d, "--admin-host", None),
    "stt on 127.0.0.1": lambda d: _set_flag(d, "--host", None),
    "two workers with the admin port": lambda d: _set_flag(d, "--workers", "2"),
    "a misspelt flag": lambda d: _args(d).append("--shutdown-grase"),
    "the Service to the admin port": lambda d: _one(d, "Service")["spec"]["ports"][0].update(targetPort=9100),
    "a Service that selects nothing": lambda d: _one(d, "Service")["spec"].update(selector={"app": "other"}),
    "the keys in the manifest": lambda d: _container(_one(d, "Deployment")).update(
        env=[{"name": "STT_API_KEYS", "value": "k1,k2"}]),
    "the node's cores as decoders": lambda d: _set_flag(d, "--decode-workers", None),
    "more sessions than the cores take": lambda d: _set_flag(d, "--max-sessions", "100"),
    "no session limit": lambda d: _set_flag(d, "--max-sessions", "0"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_wrong_change_to_the_manifest_is_caught(mistake):
    docs = manifest()
    MISTAKES[mistake](docs)
    assert problems(docs)


# --- nginx --------------------------------------------------------------------------------------------------

# The addresses in docs/deploy/nginx.conf that the test replaces ("test:" in the file), each exactly once.
UPSTREAMS = ("server 127.0.0.1:9001;", "server 127.0.0.1:9002;")
LISTEN = "listen 8080;"
STARTUP_TIMEOUT = 10.0


def _directives(text: str) -> dict[str, list[str]]:
    """The directives of an nginx config (comments dropped), by name: the argument text of each use."""
    found: dict[str, list[str]] = {}
    for statement in re.sub(r"#[^\n]*", "", text).replace("{", ";").replace("}", ";").split(";"):
        words = statement.split()
        if words:
            found.setdefault(words[0], []).append(" ".join(words[1:]))
    return found


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value).groups()
    return int(number) * units[unit or "s"]


def test_the_nginx_config_proxies_websockets_for_long_sessions():
    """What the live test cannot see: the server accepts the upgrade over HTTP/1.0 too, and the timeouts only
    show after minutes."""
    directives = _directives(NGINX_CONF.read_text())
    assert directives["proxy_http_version"] == ["1.1"]
    assert directives["proxy_set_header"][:2] == ["Upgrade $http_upgrade", "Connection $connection_upgrade"]
    assert directives["least_conn"] == [""]
    assert directives["proxy_buffering"] == ["off"]
    assert directives["proxy_pass"] == ["http://stt"]  # no URI: the path and query go through unchanged
    idle_timeout = _parser().parse_args(["serve"]).idle_timeout
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        assert _seconds(directives[name][0]) > idle_timeout, f"{name} <= stt's --idle-timeout ({idle_timeout:g} s)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_line(log: Path, pattern: str, process: subprocess.Popen) -> re.Match:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors="replace"))
        if match:
            return match
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in {log}:\n{log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, then after 5 s SIGKILL to its process group (nginx's workers, stt's children)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its own group (start_new_session): only what it started
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(5)


def render_nginx_conf(tmp: Path, upstream_ports: list[int], listen_port: int) -> Path:
    """A whole nginx.conf for a test run: the shipped file with the marked addresses changed, inside the few
    top-level directives a run in a temporary folder needs."""
    snippet = NGINX_CONF.read_text()
    new = [f"server 127.0.0.1:{port};" for port in upstream_ports] + [f"listen 127.0.0.1:{listen_port};"]
    for old, replacement in zip([*UPSTREAMS, LISTEN], new):
        assert snippet.count(old) == 1, f"{NGINX_CONF} should have {old!r} once (the test replaces it)"
        snippet = snippet.replace(old, replacement)
    (tmp / "stt.conf").write_text(snippet)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers would run as nobody, who cannot read tmp
    conf = tmp / "nginx.conf"
    conf.write_text(f"""{user}daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/stt.conf;
}}
""")
    return conf


@contextmanager
def nginx_in_front(tmp: Path, shutdown_grace: float = 1.0) -> Iterator[SimpleNamespace]:
    """Two `stt serve --engine scripted` processes (each with an admin port) behind nginx running
    docs/deploy/nginx.conf. Yields port (nginx's), stt (the two Popens), logs (theirs), admin_ports, access_log and
    error_log (nginx's). Every process is stopped on the way out."""
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("no nginx binary on PATH (apt-get install nginx-light): docs/deploy/nginx.conf is not tested")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STT_")}
    processes, logs = [], []
    try:
        for index in (1, 2):
            logs.append(tmp / f"stt{index}.log")
            with open(logs[-1], "wb") as out:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "stt", "serve", "--engine", "scripted", "--port", "0", "--admin-port", "0",
                     "--api-key", KEY, "--log-format", "json", "--shutdown-grace", str(shutdown_grace)],
                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True))
        ports, admin_ports = [], []
        for process, log in zip(processes, logs):
            admin_ports.append(int(_wait_for_line(log, r"admin port on http://127\.0\.0\.1:(\d+)", process)[1]))
            ports.append(int(_wait_for_line(log, r"listening on ws://127\.0\.0\.1:(\d+)", process)[1]))
        listen = _free_port()
        conf = render_nginx_conf(tmp, ports, listen)
        command = [nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=10)
        assert check.returncode == 0, check.stderr
        with open(tmp / "nginx.out", "wb") as out:
            processes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=1).close()
                break
            except OSError:
                assert processes[-1].poll() is None and time.monotonic() < deadline, \
                    (tmp / "nginx.out").read_text() + (tmp / "error.log").read_text()
                time.sleep(0.05)
        yield SimpleNamespace(port=listen, stt=processes[:2], logs=logs, admin_ports=admin_ports,
                              access_log=tmp / "access.log", error_log=tmp / "error.log")
    finally:
        for process in reversed(processes):
            _stop(process)


@pytest.fixture(scope="module")
def behind_nginx(tmp_path_factory):
    with nginx_in_front(tmp_path_factory.mktemp("nginx")) as setup:
        yield setup


async def _metric(admin_port: int, family_name: str, sample_name: str | None = None) -> float:
    """The sum of a metric's samples, from stt's /metrics."""
    status, _, body = await get(admin_port, "/metrics")
    assert status == 200
    return sum(sample.value for family in text_string_to_metric_families(body.decode()) if family.name == family_name
               for sample in family.samples if sample_name is None or sample.name == sample_name)


async def _active_sessions(admin_port: int) -> float:
    return await _metric(admin_port, "stt_sessions_active")


async def _sessions_ended(admin_port: int) -> float:
    return await _metric(admin_port, "stt_sessions", "stt_sessions_total")


BEARER = [("Authorization", f"Bearer {KEY}")]


async def _transcribe(ws) -> tuple[list[str], int]:
    """The rest of a Speechmatics session whose StartRecognition is sent: 2 s of audio, EndOfStream; (its finals,
    the close code)."""
    for frame in frames_of(silence(2.0), 3200):
        await ws.send_message(frame)
    await ws.send_message(json.dumps({"message": "EndOfStream", "last_seq_no": 20}))
    messages, _ = await receive_all(ws, until="EndOfTranscript")
    assert [m["seq_no"] for m in messages if m["message"] == "AudioAdded"][-1] == 20
    await ws.aclose()
    return [m["metadata"]["transcript"] for m in messages if m["message"] == "AddTranscript"], ws.closed.code


async def test_a_speechmatics_session_completes_through_nginx(behind_nginx):
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{behind_nginx.port}/v2", extra_headers=BEARER) as ws:
            await ws.send_message(start_message())
            assert await _transcribe(ws) == (["one two three four"], 1000)


@pytest.mark.parametrize("target, headers, send, expect", [
    ("/v2/en", BEARER, start_message(), '"RecognitionStarted"'),
    ("/ws", BEARER, None, '"session.created"'),
    (f"/v2/realtime?type=fast&token={KEY}", [], '{"action":"start"}', '"listening"'),
    (f"/api/v1/stt/realtime/stream?api_key={KEY}", [], None, None),  # the key in the query: let in (else 401)
    (f"/transcribe?token={KEY}", [], None, None),
    ("/v3/ws?sample_rate=16000&format_turns=True", [("Authorization", KEY)], None, '"Begin"'),  # the raw key
], ids=["speechmatics", "voicerun", "scriptix", "yourvoic", "vblaze", "assemblyai"])
async def test_each_dialect_path_reaches_its_dialect_with_its_query(behind_nginx, target, headers, send, expect):
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{behind_nginx.port}{target}", extra_headers=headers) as ws:
            if send is not None:
                await ws.send_message(send)
            if expect is not None:
                assert expect in await ws.get_message()


@pytest.mark.parametrize("target, status, body", [
    ("/nope", 404, b"no dialect serves the path /nope\n"),
    ("/transcribe", 401, b"missing or invalid API key\n"),  # V-Blaze: no token tag
    ("/api/v1/stt/realtime/stream?api_key=wrong", 401, b"missing or invalid API key\n"),  # YourVoic
    (f"/transcribe?token={KEY}&emotion=true", 400, b"tag emotion is not supported: emotion detection\n"),
], ids=["404 unknown path", "401 vblaze", "401 yourvoic", "400 vblaze"])
async def test_a_refusal_at_the_upgrade_reaches_the_client_as_stt_sent_it(behind_nginx, target, status, body):
    with trio.fail_after(10):
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(f"ws://127.0.0.1:{behind_nginx.port}{target}", extra_headers=BEARER):
                pass
    assert rejected.value.status_code == status
    assert rejected.value.body == body  # stt's own body, not an nginx error page


def _requests_logged(access_log: Path) -> int:
    """Requests nginx has finished (it logs a WebSocket connection when it ends)."""
    return len(access_log.read_text().splitlines())


async def _opened(ws, admin_ports: list[int]) -> list[float]:
    """Each process's open sessions, once `ws` (VoiceRun) has its session."""
    assert '"session.created"' in await ws.get_message()
    return [await _active_sessions(p) for p in admin_ports]


async def test_least_conn_sends_each_new_session_to_the_process_with_fewer(behind_nginx):
    url, admin_ports = f"ws://127.0.0.1:{behind_nginx.port}/ws", behind_nginx.admin_ports
    with trio.fail_after(10):
        while [await _active_sessions(p) for p in admin_ports] != [0, 0]:  # sessions of earlier tests closing
            await trio.sleep(0.05)
        ended_before = [await _sessions_ended(p) for p in admin_ports]
        async with open_websocket_url(url, extra_headers=BEARER) as first:
            after_first = await _opened(first, admin_ports)
            assert sorted(after_first) == [0, 1]
            logged = _requests_logged(behind_nginx.access_log)
            async with open_websocket_url(url, extra_headers=BEARER) as second:
                assert await _opened(second, admin_ports) == [1, 1]  # the second went to the process without one
            while _requests_logged(behind_nginx.access_log) == logged:  # nginx has let go of the second one
                await trio.sleep(0.05)
            # Round robin would send the third to the first one's process; least_conn, to the one without.
            async with open_websocket_url(url, extra_headers=BEARER) as third:
                assert await _opened(third, admin_ports) == [1, 1]
        while [await _sessions_ended(p) for p in admin_ports] != [n + 2 - a for n, a in zip(ended_before, after_first)]:
            await trio.sleep(0.05)  # each process counted its sessions' ends: 1 and 2


@pytest.fixture
def draining_behind_nginx(tmp_path):
    with nginx_in_front(tmp_path, shutdown_grace=10) as setup:
        yield setup


async def test_a_process_that_drains_finishes_its_session_and_nginx_sends_new_ones_to_the_other(
        draining_behind_nginx):
    setup = draining_behind_nginx
    with trio.fail_after(15):
        url, admin_ports = f"ws://127.0.0.1:{setup.port}/v2", setup.admin_ports
        async with open_websocket_url(url, extra_headers=BEARER) as draining:
            await draining.send_message(start_message())
            await receive_all(draining, until="Info")
            stopped = (await _active_sessions(admin_ports[0]), await _active_sessions(admin_ports[1])).index(1)
            setup.stt[stopped].send_signal(signal.SIGTERM)
            while "no longer accepting" not in setup.logs[stopped].read_text():
                await trio.sleep(0.05)
            async with open_websocket_url(url, extra_headers=BEARER) as meanwhile:  # served by the other one
                await meanwhile.send_message(start_message())
                assert await _transcribe(meanwhile) == (["one two three four"], 1000)
            assert await _transcribe(draining) == (["one two three four"], 1000)  # within the grace
        while setup.stt[stopped].poll() is None:  # it exits once its last session has ended
            await trio.sleep(0.05)
        assert setup.stt[stopped].returncode == 0
        # Its port now refuses connections: nginx tries it (round robin among equals), then the other one.
        for _ in range(3):
            async with open_websocket_url(url, extra_headers=BEARER) as ws:
                await ws.send_message(start_message())
                assert await _transcribe(ws) == (["one two three four"], 1000)
        assert "connect() failed (111: Connection refused) while connecting to upstream" in setup.error_log.read_text()
        while await _sessions_ended(admin_ports[1 - stopped]) != 4:  # the other one served all four
            await trio.sleep(0.05)
