"""Docs as tests: every command in a fenced shell block (```sh, ```bash, ```shell, ```console) of README.md and
docs/*.md runs here, as written, and a command that fails fails the suite.

How a block runs: as one bash script (`set -o pipefail`), a command at a time, in a scratch folder that links
to the checkout's files (so `tests/data/…` is there and what a command writes stays out of the checkout), with
this environment's bin/ first on PATH (`stt`, `python3`, the vendor clients of the test extra). A line that
starts a server (`stt serve …`, with or without `&`, not `--help`) is started in the background and waited for
(until its port takes connections), as a reader would start it in another terminal and wait; background jobs are ended with the block. In a
```console block only the lines after `$ ` are commands.

Ports: the docs say 9000 (and other ports the marker names); each is replaced by a free port in the block's
commands, and STT_PORT is set to the port that replaces 9000, so a plain `stt serve` listens where the block's
clients connect.

A marker, an HTML comment on the line before the fence (invisible on GitHub), gives a block what it needs:

    <!-- doc-test: server=whisper -->              a `stt serve --engine whisper` runs on "9000" during the block
                                                    (one per engine and options, shared by the blocks of the run)
    <!-- doc-test: server=scripted options="--admin-port 9100" ports="9000 9100" -->
    <!-- doc-test: expect -->                      ```console: each command's output must be the lines under it
                                                    (spaces normalised)
    <!-- doc-test: needs=ffmpeg,arecord -->        skipped, saying so, unless these commands are installed
    <!-- doc-test: skip="needs root and nginx" --> never run; the reason is required and shown by pytest -ra
    <!-- doc-test: timeout=300 -->                 seconds for the whole block (default 180)

A block without a marker runs as it is. Keys not listed here are an error (test_every_marker_is_well_formed).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import attrs
import pytest

from tests.serve_process import stt_env, stt_serve

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
MARKER = re.compile(r"^\s*<!--\s*doc-test:(?P<body>.*?)-->\s*$")
MARKER_KEYS = {"server", "options", "ports", "expect", "needs", "skip", "timeout"}
HOW_TO_FIX = ("Fix the command in the doc, or say what the block needs in a marker on the line before its fence, "
              "e.g. <!-- doc-test: server=scripted --> or <!-- doc-test: skip=\"why\" --> (tests/test_docs.py "
              "lists the keys).")
SERVE_LINE = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:stt|python3? -m stt) serve\b(?!.*--help)")


@attrs.frozen
class Command:
    line: int  # in the doc
    text: str
    expected: tuple[str, ...] = ()  # ```console: the output shown under it


@attrs.frozen
class Block:
    doc: Path
    line: int  # of the opening fence
    language: str
    commands: tuple[Command, ...]
    marker: dict[str, str]
    marker_error: str | None = None

    @property
    def id(self) -> str:
        return f"{where(self.doc)}:{self.line}"


def where(doc: Path) -> str:
    """A doc's path as the failure messages name it: from the checkout's root."""
    try:
        return str(doc.relative_to(ROOT))
    except ValueError:
        return str(doc)


def parse_marker(text: str) -> tuple[dict[str, str], str | None]:
    try:
        items = shlex.split(text)
    except ValueError as exc:
        return {}, f"cannot parse the marker: {exc}"
    marker = {}
    for item in items:
        key, _, value = item.partition("=")
        marker[key] = value
    unknown = set(marker) - MARKER_KEYS
    if unknown:
        return marker, f"unknown marker keys {sorted(unknown)} (known: {sorted(MARKER_KEYS)})"
    if "skip" in marker and not marker["skip"].strip():
        return marker, 'skip needs a reason: skip="why"'
    return marker, None


def blocks_of(doc: Path) -> list[Block]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^(\s*)(```+|~~~+)\s*(\S*)", lines[i])
        if not fence:
            i += 1
            continue
        indent, ticks, language = fence.groups()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(ticks):
            end += 1
        if language.lower() in SHELL_LANGUAGES:
            previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            match = MARKER.match(previous)
            marker, error = parse_marker(match["body"]) if match else ({}, None)
            body = [(i + 2 + k, line[len(indent):] if line.startswith(indent) else line)
                    for k, line in enumerate(lines[i + 1:end])]
            blocks.append(Block(doc, i + 1, language.lower(), tuple(commands_of(body, language.lower())), marker,
                                error))
        i = end + 1
    return blocks


def commands_of(body: list[tuple[int, str]], language: str) -> list[Command]:
    """The commands of a block: lines joined at a trailing backslash; comments and blank lines dropped; in a
    console block, the lines after '$ ', each with the output lines under it."""
    commands: list[Command] = []
    pending: tuple[int, str] | None = None
    for number, line in body:
        if language == "console" and pending is None and not line.startswith("$ "):
            if commands and line.strip():
                last = commands[-1]
                commands[-1] = attrs.evolve(last, expected=(*last.expected, line))
            continue
        text = line[2:] if language == "console" and pending is None else line
        if pending is not None:
            pending = (pending[0], pending[1] + "\n" + text)
        elif text.strip() and not text.lstrip().startswith("#"):
            pending = (number, text)
        if pending is not None and not pending[1].endswith("\\"):
            commands.append(Command(*pending))
            pending = None
    if pending is not None:
        commands.append(Command(*pending))
    return commands


ALL_BLOCKS = [block for doc in DOC_FILES for block in blocks_of(doc)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def servers():
    """One `stt serve` per (engine, options), started when a block first asks, stopped after the module."""
    running: dict[tuple[str, str], dict] = {}
    with ExitStack() as stack:
        def get(engine: str, options: str, ports: dict[str, int]) -> dict:
            key = (engine, options)
            if key not in running:
                rewritten = rewrite_ports(options, ports)
                running[key] = stack.enter_context(stt_serve("--engine", engine, *shlex.split(rewritten),
                                                             timeout=180))
            return running[key]

        yield get


def rewrite_ports(text: str, ports: dict[str, int]) -> str:
    for written, actual in ports.items():
        text = re.sub(rf"(?<!\d){re.escape(written)}(?!\d)", str(actual), text)
    return text


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A scratch folder that links to every top-level entry of the checkout (no virtual environments, no .git)."""
    work = tmp_path_factory.mktemp("docs")
    for entry in ROOT.iterdir():
        if entry.name.startswith(".venv") or entry.name in (".git", "__pycache__", ".pytest_cache"):
            continue
        (work / entry.name).symlink_to(entry)
    return work


def script_of(block: Block, ports: dict[str, int], logs: Path) -> str:
    """The block as a bash script: each command's output to logs/<line>.out and .err (and shown), a failing one
    reported with its line; foreground servers started in the background and waited for."""
    lines = [
        "set -o pipefail",
        "trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT",
        "__wait_port() {  # port pid: until the server listens, or it has exited",
        "  for _ in $(seq 1800); do",
        "    (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0",
        "    kill -0 $2 2>/dev/null || return 1",
        "    sleep 0.1",
        "  done; return 1; }",
    ]
    for command in block.commands:
        text = rewrite_ports(command.text, ports)
        out, err = logs / f"{command.line}.out", logs / f"{command.line}.err"
        if SERVE_LINE.match(text):
            text = re.sub(r"&\s*(#.*)?$", "", text)  # started in the background here, whether the doc says & or not
            port = re.search(r"--port[ =](\d+)", text)
            port = port.group(1) if port else str(ports.get("9000", 9000))
            lines.append(f"{{ {text}\n}} > {out} 2> {err} &")
            lines.append(f"__wait_port {port} $! || {{ echo '@@failed {command.line} server did not listen' >&2; "
                         f"exit 1; }}")
        else:
            lines.append(f"{{ {text}\n}} > {out} 2> {err}")
            lines.append(f"__rc=$?; [ $__rc = 0 ] || {{ echo \"@@failed {command.line} $__rc\" >&2; exit 1; }}")
    return "\n".join(lines) + "\n"


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").rstrip()
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def normalised(lines) -> list[str]:
    return [" ".join(line.split()) for line in lines if line.strip()]


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.id for b in ALL_BLOCKS])
def test_the_docs_commands_work_as_written(block: Block, servers, workspace, tmp_path):
    assert block.marker_error is None, f"{block.id}: {block.marker_error}"
    if "skip" in block.marker:
        pytest.skip(f"{block.id}: {block.marker['skip']}")
    missing = [tool for tool in block.marker.get("needs", "").split(",") if tool and shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{block.id}: needs {', '.join(missing)}, not installed")
    failure = run_block(block, servers, workspace, tmp_path)
    if failure:
        pytest.fail(failure, pytrace=False)


def run_in_own_group(argv: list[str], *, timeout: float, **options) -> subprocess.CompletedProcess:
    """Run argv in a process group of its own, then end whatever of the group is left: a server a block started
    in the background runs in a subshell of the script, which the script's own `kill $(jobs -p)` reaches, but
    not the server under it (it was left running, its parent gone)."""
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True, **options)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        end_group(process.pid)
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def end_group(group: int, grace: float = 10.0) -> None:
    """SIGTERM to every process of the group, SIGKILL to what is left after `grace` seconds."""
    deadline = time.monotonic() + grace
    try:
        os.killpg(group, signal.SIGTERM)
        while time.monotonic() < deadline:
            time.sleep(0.05)
            os.killpg(group, 0)  # ProcessLookupError once the group is empty
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_block(block: Block, servers, workspace: Path, scratch: Path) -> str | None:
    """Run a block's commands; None, or why it failed (the doc's file and line, the command, its output)."""
    if not block.commands:
        return f"{block.id}: a shell block without a command. {HOW_TO_FIX}"
    ports = {written: free_port() for written in (block.marker.get("ports") or "9000").split()}
    if "server" in block.marker:
        server = servers(block.marker["server"] or "scripted", block.marker.get("options", ""), ports)
        ports[next(iter(ports))] = server["port"]  # the first port is the server's
    logs = scratch / f"logs-{block.line}"
    logs.mkdir()
    env = stt_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                  STT_PORT=str(ports.get("9000", free_port())))
    env.pop("VIRTUAL_ENV", None)
    done = run_in_own_group(["bash", "-c", script_of(block, ports, logs)], cwd=workspace, env=env,
                            timeout=float(block.marker.get("timeout", 180)))
    failed = re.search(r"@@failed (\d+) (.*)", done.stderr)
    if failed or done.returncode != 0:
        line = int(failed.group(1)) if failed else block.line
        command = next((c.text for c in block.commands if c.line == line), "?")
        why = f"exit status {failed.group(2)}" if failed else f"exit status {done.returncode}"
        return (f"{where(block.doc)}:{line}: `{command}` failed ({why})\n"
                f"--- its stderr ---\n{tail(logs / f'{line}.err')}\n--- its stdout ---\n"
                f"{tail(logs / f'{line}.out')}\n{HOW_TO_FIX}")
    if "expect" in block.marker:
        for command in block.commands:
            shown = (logs / f"{command.line}.out").read_text(errors="replace").splitlines()
            if normalised(shown) != normalised(command.expected):
                return (f"{where(block.doc)}:{command.line}: `{command.text}` printed {shown!r}; the doc shows "
                        f"{list(command.expected)!r}. {HOW_TO_FIX}")
    return None


def test_a_failing_doc_command_is_reported_with_its_file_line_and_output(tmp_path, servers, workspace):
    doc = tmp_path / "guide.md"
    doc.write_text("Step one:\n\n```sh\necho fine\nls /no/such/folder\necho never\n```\n\n"
                   "<!-- doc-test: expect -->\n```console\n$ echo two words\ntwo  words\n$ echo three\nfour\n```\n")
    failing, mismatch = blocks_of(doc)
    message = run_block(failing, servers, workspace, tmp_path)
    assert message.startswith(f"{doc}:5: `ls /no/such/folder` failed (exit status 2)")
    assert "No such file" in message and HOW_TO_FIX in message
    message = run_block(mismatch, servers, workspace, tmp_path)
    assert message.startswith(f"{doc}:13: `echo three` printed ['three']")


def test_every_marker_is_well_formed_and_every_skip_says_why():
    problems = [f"{b.id}: {b.marker_error}" for b in ALL_BLOCKS if b.marker_error]
    assert not problems, "\n".join(problems)
    for doc in DOC_FILES:  # a marker that no shell block follows is a mistake too (a typo in the fence, say)
        lines = doc.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if MARKER.match(line):
                following = next((l for l in lines[number:] if l.strip()), "")
                language = following.strip().lstrip("`~").strip().lower()
                assert following.strip().startswith(("```", "~~~")) and language in SHELL_LANGUAGES, (
                    f"{where(doc)}:{number}: a doc-test marker must stand right before a ```sh, "
                    f"```bash, ```shell or ```console fence")


def test_the_harness_reads_blocks_markers_continuations_and_console_output(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text('text\n\n<!-- doc-test: server=scripted ports="9000 9100" -->\n```sh\n# a comment\n'
                   'stt a \\\n  --b 9000\nstt c   # trailing\n```\n\n```console\n$ echo hi\nhi\n```\n'
                   '```python\nprint()\n```\n<!-- doc-test: nonsense=1 -->\n```sh\ntrue\n```\n')
    first, console, bad = blocks_of(doc)
    assert first.marker == {"server": "scripted", "ports": "9000 9100"} and first.line == 4
    assert [c.text for c in first.commands] == ["stt a \\\n  --b 9000", "stt c   # trailing"]
    assert [(c.text, c.expected) for c in console.commands] == [("echo hi", ("hi",))]
    assert bad.marker_error and "nonsense" in bad.marker_error
    assert rewrite_ports("ws://127.0.0.1:9000/v2 --port 90001", {"9000": 4242}) == "ws://127.0.0.1:4242/v2 --port 90001"
    assert SERVE_LINE.match("stt serve --engine sphinx") and SERVE_LINE.match("STT_X=1 stt serve")
    assert SERVE_LINE.match("stt serve --admin-port 9 &") and not SERVE_LINE.match("stt serve --help")


# --- every documented option of every subcommand ------------------------------------------------------------


def _subcommands() -> dict[str, "argparse.ArgumentParser"]:
    import argparse

    from stt.cli import _parser

    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("stt has no subcommands")


#: Placeholders for the positional (and required) arguments of each subcommand (parsing only: nothing is read or connected).
POSITIONALS = {"conform": ["ws://127.0.0.1:9", "--dialect", "speechmatics"], "report": ["x.jsonl"], "replay": ["x.jsonl", "ws://127.0.0.1:9"],
               "transcribe": ["tests/data/ps_goforward.wav"]}


@pytest.fixture(scope="module")
def option_files(tmp_path_factory) -> dict[str, str]:
    """Real files for the options that name one: a TOML config, a keys file, a certificate and key (when the
    openssl command is there), a whisper model directory, output folders."""
    folder = tmp_path_factory.mktemp("options")
    (folder / "stt.toml").write_text("idle_timeout = 60\n")
    (folder / "keys").write_text("a-key\n")
    files = {"config": str(folder / "stt.toml"), "api_keys_file": str(folder / "keys"),
             "conformance": str(folder / "conformance"), "out": str(folder / "out")}
    if shutil.which("openssl"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"), "-days", "1",
                        "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
        files.update(certfile=str(folder / "cert.pem"), keyfile=str(folder / "key.pem"))
    from stt.engines.whisper import default_model

    files["whisper_model"] = str(default_model())
    return files


def option_value(action, files: dict[str, str]) -> list[str]:
    """The arguments that give `action` a value a user would give it."""
    import argparse

    flag = max(action.option_strings, key=len)
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)):
        return [flag]
    if action.dest in files:
        return [flag, files[action.dest]]
    if action.choices:
        choices = list(action.choices)
        return [flag, "scripted" if "scripted" in choices else choices[0]]
    special = {"port": "0", "admin_port": "0", "host": "127.0.0.1", "admin_host": "127.0.0.1", "fault": "delay=100ms",
               "header": "X-Trace: 1", "url": "ws://127.0.0.1:9", "workers": "1", "sample_rate": "16000",
               "max_sessions": "auto"}
    if action.dest in special:
        return [flag, special[action.dest]]
    if action.type in (int, float):
        return [flag, "2"]
    if action.type is Path or (action.metavar or "").upper() in ("PATH", "DIR"):
        return [flag, str(Path(files["out"]) / f"{action.dest}.out")]
    return [flag, "value"]


def test_every_documented_option_of_every_subcommand_is_accepted(option_files, monkeypatch):
    """Each option that `stt SUBCOMMAND --help` documents, given once with a sensible value, parses; for
    `stt serve` it also goes through the settings (stt.config) and the start-up checks, as at a real start."""
    import argparse

    from stt.cli import _engine_options, _parser
    from stt.config import resolve, server_config
    from stt.startup import check_startup

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "1000")  # --help on one line per option: no flag cut at a hyphen
    for env in [k for k in os.environ if k.startswith("STT_")]:
        monkeypatch.delenv(env)
    tried = 0
    for name, parser in _subcommands().items():
        shown = parser.format_help()
        actions = {max(a.option_strings, key=len): a for a in parser._actions
                   if a.option_strings and a.help != argparse.SUPPRESS and a.dest not in ("help", "version")}
        assert actions, name
        for flag, action in sorted(actions.items()):
            assert flag in shown and action.help, f"stt {name} --help does not document {flag}"
            given = option_value(action, option_files)
            if action.dest in ("certfile", "keyfile"):
                if "certfile" not in option_files:
                    continue  # no openssl to make a certificate with
                given = ["--certfile", option_files["certfile"], "--keyfile", option_files["keyfile"]]
            argv = [name, *POSITIONALS.get(name, []), *given]
            if name == "serve" and action.dest != "engine":
                argv += ["--engine", "scripted"]
            try:
                settings = _parser().parse_args(argv)
            except SystemExit as exc:
                raise AssertionError(f"stt {' '.join(argv)}: refused (exit {exc.code})") from None
            if name == "serve":
                settings = resolve(_parser, argv, env={})
                check_startup(server_config(settings, engine_options=_engine_options(settings)))
            tried += 1
    assert tried > 40


def test_the_readmes_first_two_lines_install_and_serve_then_install_and_test():
    """Line 1 makes the venv, installs and starts the server with the default engine; line 2 (which .ci/run evals
    in a fresh venv of its own) installs the test extra and runs the tests. Both are shell that parses."""
    first, second = (line.strip() for line in (ROOT / "README.md").read_text().splitlines()[:2])
    assert first.startswith("python3 -m venv .venv && . .venv/bin/activate && ") and "pip install -e ." in first
    assert first.endswith("stt serve")
    assert "pip install -e '.[test]'" in second and second.endswith("python3 -m pytest")
    assert ". .venv/bin/activate" in second  # a second terminal has no venv active yet
    for line in (first, second):
        done = subprocess.run(["bash", "-n", "-c", line], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
