"""`stt serve` settings from the command line, STT_* variables, a TOML file and the defaults (stt.config), and
the API keys they bring, checked through real connections of two dialects."""

import json
import pickle
from urllib.parse import urlencode

import pytest
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from stt.cli import _parser
from stt.config import ConfigError, options_of, resolve, server_config
from stt.server import open_server
from stt.settings import KeyRing, ServerConfig
from tests.helpers import kinds, receive_all, start_message


def settings(*args: str, env: dict | None = None):
    return resolve(_parser, ["serve", *args], env=env or {})


def write(tmp_path, text: str, name: str = "stt.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- where a setting comes from -----------------------------------------------------------------------------


def test_without_file_env_or_flags_the_defaults_make_the_default_server_config():
    config = server_config(settings())
    assert config == ServerConfig(engine="whisper", decode_workers=None)
    assert (config.host, config.port, config.shutdown_grace, len(config.api_keys)) == ("127.0.0.1", 9000, 30.0, 0)


def test_command_line_beats_environment_beats_file_beats_default(tmp_path):
    path = write(tmp_path, 'host = "0.0.0.0"\nport = 1111\nidle_timeout = 12\nlog_format = "text"\n')
    got = settings("--config", str(path), "--port", "3333",
                   env={"STT_HOST": "10.0.0.2", "STT_PORT": "2222", "STT_LOG_FORMAT": "json"})
    assert got.port == 3333  # command line
    assert got.host == "10.0.0.2" and got.log_format == "json"  # environment over file
    assert got.idle_timeout == 12.0  # file over default
    assert got.max_message_bytes == 1 << 20 and got.workers == 1  # defaults
    config = server_config(got)
    assert (config.host, config.port, config.limits.idle_timeout) == ("10.0.0.2", 3333, 12.0)


def test_a_flag_given_with_its_default_value_still_beats_the_environment():
    assert settings("--port", "9000", env={"STT_PORT": "2222"}).port == 9000
    assert settings(env={"STT_PORT": "2222"}).port == 2222


def test_the_file_may_be_named_by_STT_CONFIG_and_the_flag_wins_over_it(tmp_path):
    first, second = write(tmp_path, "port = 1\n", "a.toml"), write(tmp_path, "port = 2\n", "b.toml")
    assert settings(env={"STT_CONFIG": str(first)}).port == 1
    assert settings("--config", str(second), env={"STT_CONFIG": str(first)}).port == 2


def test_switches_lists_and_paths_from_environment_and_file(tmp_path):
    (tmp_path / "keys").write_text("from-file\n")
    path = write(tmp_path, 'allow_private_urls = true\napi_keys = ["a", "b"]\napi_keys_file = "keys"\n'
                           'shutdown_grace = 5\n')
    got = settings("--config", str(path))
    assert got.allow_private_urls is True and got.api_keys == ["a", "b"] and got.shutdown_grace == 5.0
    assert got.api_keys_file == tmp_path / "keys"  # relative to the file's folder, not the working directory
    got = settings("--config", str(path), env={"STT_ALLOW_PRIVATE_URLS": "off", "STT_API_KEYS": " x, y,,z "})
    assert got.allow_private_urls is False and got.api_keys == ["x", "y", "z"]
    assert settings(env={"STT_ALLOW_PRIVATE_URLS": "YES"}).allow_private_urls is True


def test_an_empty_variable_counts_as_unset():
    assert settings(env={"STT_PORT": "", "STT_API_KEYS": ""}).port == 9000


def test_every_serve_option_has_an_environment_variable_and_a_file_key():
    serve = next(a for a in _parser()._actions if a.dest == "command").choices["serve"]
    flags = {a.dest for a in serve._actions if a.option_strings and a.dest not in ("help", "config")}
    options = options_of(serve)
    assert set(options) == flags
    assert options["api_keys"].env == "STT_API_KEYS" and options["idle_timeout"].env == "STT_IDLE_TIMEOUT"
    assert options["shutdown_grace"].flag == "--shutdown-grace"


# --- bad settings name what is wrong ------------------------------------------------------------------------


def test_an_unknown_key_in_the_file_is_an_error_naming_it(tmp_path):
    path = write(tmp_path, 'prot = 9000\n')
    with pytest.raises(ConfigError, match=r"stt\.toml: unknown key 'prot'"):
        settings("--config", str(path))
    with pytest.raises(ConfigError, match=r"unknown key 'idle-timeout'; did you mean 'idle_timeout'\?"):
        settings("--config", str(write(tmp_path, "idle-timeout = 5\n")))
    with pytest.raises(ConfigError, match=r"unknown key 'config'"):  # a file does not name another
        settings("--config", str(write(tmp_path, 'config = "other.toml"\n')))


@pytest.mark.parametrize("line, key, says", [
    ('port = "9000"', "port", "must be an integer"),
    ("port = 9000.5", "port", "must be an integer"),
    ("idle_timeout = true", "idle_timeout", "must be a number"),
    ('allow_private_urls = "yes"', "allow_private_urls", "must be true or false"),
    ('api_keys = "k1"', "api_keys", "must be an array"),
    ("api_keys = [1]", r"api_keys\[0\]", "must be a string"),
    ('engine = "nope"', "engine", "is not one of"),
    ("log_format = 1", "log_format", "must be a string"),
    ("[server]\nport = 1", "server", "unknown key"),
])
def test_a_value_of_the_wrong_type_in_the_file_is_an_error_naming_the_key(tmp_path, line, key, says):
    with pytest.raises(ConfigError, match=rf"(: {key}: .*{says})|({says} '{key}')"):
        settings("--config", str(write(tmp_path, line + "\n")))


def test_a_file_that_is_not_toml_or_not_there_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="stt.toml: not valid TOML"):
        settings("--config", str(write(tmp_path, "port = \n")))
    with pytest.raises(ConfigError, match="missing.toml: No such file"):
        settings("--config", str(tmp_path / "missing.toml"))


@pytest.mark.parametrize("env, says", [
    ({"STT_PORT": "abc"}, "STT_PORT: 'abc' is not an integer"),
    ({"STT_SHUTDOWN_GRACE": "soon"}, "STT_SHUTDOWN_GRACE: 'soon' is not a number"),
    ({"STT_ALLOW_PRIVATE_URLS": "maybe"}, "STT_ALLOW_PRIVATE_URLS: 'maybe' is not true or false"),
    ({"STT_LOG_FORMAT": "xml"}, "STT_LOG_FORMAT: 'xml' is not one of auto, json, text"),
])
def test_a_bad_environment_variable_is_an_error_naming_it(env, says):
    with pytest.raises(ConfigError, match=says):
        settings(env=env)


@pytest.mark.parametrize("env, says", [
    ({"STT_PORT": "70000"}, "--port must be between 0 and 65535"),
    ({"STT_WORKERS": "0"}, "--workers must be at least 1"),
    ({"STT_DECODE_WORKERS": "0"}, "--decode-workers must be at least 1"),
    ({"STT_SHUTDOWN_GRACE": "-1"}, "--shutdown-grace must be 0 or more"),
])
def test_values_out_of_range_are_refused_wherever_they_come_from(env, says):
    with pytest.raises(ConfigError, match=says):
        server_config(settings(env=env))


def test_a_key_file_without_certificate_or_a_missing_certificate_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="--keyfile needs --certfile"):
        server_config(settings("--keyfile", str(tmp_path / "key.pem")))
    with pytest.raises(ConfigError, match="cert.pem: No such file"):
        server_config(settings("--certfile", str(tmp_path / "cert.pem")))


# --- API keys ---------------------------------------------------------------------------------------------


def test_the_key_file_skips_blank_lines_and_comments_and_adds_to_the_other_keys(tmp_path):
    keys = write(tmp_path, "# production\n\n  alpha  \n#beta\nbeta # not a comment\n", "keys")
    config = server_config(settings("--api-keys-file", str(keys), "--api-key", "gamma"))
    assert len(config.api_keys) == 3
    assert all(config.api_keys.allows(k) for k in ("alpha", "beta # not a comment", "gamma"))
    assert not any(config.api_keys.allows(k) for k in ("beta", "# production", "#beta", "", None))


def test_a_key_file_without_keys_or_missing_is_refused_rather_than_letting_everyone_in(tmp_path):
    with pytest.raises(ConfigError, match="no key in it"):
        server_config(settings("--api-keys-file", str(write(tmp_path, "# none yet\n\n", "keys"))))
    with pytest.raises(ConfigError, match="--api-keys-file .*absent: No such file"):
        server_config(settings("--api-keys-file", str(tmp_path / "absent")))


def test_the_server_config_keeps_digests_of_the_keys_not_the_keys(tmp_path):
    keys = write(tmp_path, "key-from-the-file-0001\n", "keys")
    config = server_config(settings("--api-keys-file", str(keys), env={"STT_API_KEYS": "key-from-the-env-0002"}))
    assert isinstance(config.api_keys, KeyRing) and len(config.api_keys) == 2
    shipped = pickle.dumps(config)  # what a worker process receives
    assert b"key-from-the-file-0001" not in shipped and b"key-from-the-env-0002" not in shipped
    assert "key-from" not in repr(config)
    assert pickle.loads(shipped).api_keys.allows("key-from-the-env-0002")


@pytest.fixture
async def keyed_server(tmp_path):
    keys = write(tmp_path, "# one key a line\nfile-key\n", "keys")
    config = server_config(settings("--engine", "scripted", "--port", "0", "--api-keys-file", str(keys),
                                    env={"STT_API_KEYS": "env-key-1,env-key-2"}))
    async with open_server(config) as server:
        yield server


@pytest.mark.parametrize("key, allowed", [("file-key", True), ("env-key-2", True), ("wrong", False), (None, False)])
async def test_speechmatics_clients_are_let_in_by_keys_from_the_file_and_the_environment(keyed_server, key,
                                                                                           allowed):
    headers = [("Authorization", f"Bearer {key}")] if key else []
    async with open_websocket_url(f"ws://127.0.0.1:{keyed_server.port}/v2", extra_headers=headers) as ws:
        await ws.send_message(start_message())
        messages, code = await receive_all(ws, until="RecognitionStarted")
    if allowed:
        assert kinds(messages) == ["RecognitionStarted"]
    else:
        assert kinds(messages) == ["Error"] and messages[0]["type"] == "not_authorised" and code == 4001


@pytest.mark.parametrize("key, allowed", [("file-key", True), ("env-key-1", True), ("wrong", False), (None, False)])
async def test_yourvoic_clients_are_let_in_by_keys_from_the_file_and_the_environment(keyed_server, key, allowed):
    query = urlencode({"api_key": key} if key else {})
    url = f"ws://127.0.0.1:{keyed_server.port}/api/v1/stt/realtime/stream?{query}"
    if not allowed:
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(url):
                pass
        assert refused.value.status_code == 401
        return
    async with open_websocket_url(url) as ws:
        await ws.send_message(json.dumps({"type": "close"}))
        _, code = await receive_all_raw(ws)
    assert code == 1000


async def receive_all_raw(ws) -> tuple[list, int]:
    frames = []
    try:
        while True:
            frames.append(await ws.get_message())
    except ConnectionClosed as exc:
        return frames, exc.reason.code


def test_max_sessions_is_auto_or_a_number_from_flag_environment_and_file(tmp_path):
    assert settings().max_sessions == "auto"
    assert settings("--max-sessions", "3").max_sessions == 3
    assert settings(env={"STT_MAX_SESSIONS": "auto"}).max_sessions == "auto"
    assert settings(env={"STT_MAX_SESSIONS": "0"}).max_sessions == 0
    assert settings("--config", str(write(tmp_path, "max_sessions = 12\n"))).max_sessions == 12
    assert settings("--config", str(write(tmp_path, 'max_sessions = "auto"\n'))).max_sessions == "auto"
    with pytest.raises(ConfigError, match="STT_MAX_SESSIONS: 'lots' is not a valid --max-sessions value"):
        settings(env={"STT_MAX_SESSIONS": "lots"})
    with pytest.raises(ConfigError, match="max_sessions: must be a string, not a boolean"):
        settings("--config", str(write(tmp_path, "max_sessions = true\n")))
    with pytest.raises(ConfigError, match="--max-sessions must be 0 \\(no limit\\) or more, or auto"):
        server_config(settings("--max-sessions", "-2"))
