"""Configuration: flag > environment > user TOML > system TOML > default; bad values stop start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import ConfigError, load


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_bind_loopback_and_generate_a_strong_key(tmp_path: Path) -> None:
    config = load({}, {"XDG_CONFIG_HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "st")},
                  system_file=tmp_path / "none.toml")
    assert (config.host, config.port) == ("127.0.0.1", 8000) and config.binds_loopback
    assert config.api_key_generated and len(config.api_key) >= 64  # 48 random bytes: 384 bits
    assert config.max_log_size == 1024**3 and config.log_retention == 7 * 24 * 3600
    assert config.process_log_dir == tmp_path / "st" / "opentermd" / "logs" / "processes"


def test_each_source_overrides_the_one_below(tmp_path: Path) -> None:
    system = write(tmp_path / "system.toml", 'port = 1001\nhost = "10.0.0.1"\ninfo = "sys"\nexecute_timeout = 5\n')
    write(tmp_path / "xdg" / "opentermd" / "config.toml", 'port = 1002\nhost = "127.0.0.2"\n')
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "OPEN_TERMINAL_PORT": "1003",
               "OPEN_TERMINAL_CORS_ALLOWED_ORIGINS": "https://a, https://b", "OPEN_TERMINAL_API_KEY": " k "}
    config = load({"port": "1004"}, environ, system_file=system)
    assert config.port == 1004
    assert config.host == "127.0.0.2" and config.info == "sys" and config.execute_timeout == 5.0
    assert config.cors_allowed_origins == ("https://a", "https://b")
    assert config.api_key == "k" and not config.api_key_generated
    assert load({}, environ, system_file=system).port == 1003


def test_an_explicit_config_file_replaces_the_user_file(tmp_path: Path) -> None:
    chosen = write(tmp_path / "chosen.toml", 'api_key = "from-file"\nenable_system_prompt = false\n')
    config = load({}, {}, config_file=chosen, system_file=tmp_path / "none.toml")
    assert config.api_key == "from-file" and config.enable_system_prompt is False
    with pytest.raises(ConfigError, match="not found"):
        load({}, {}, config_file=tmp_path / "missing.toml", system_file=tmp_path / "none.toml")


def test_key_file_is_read_and_trimmed(tmp_path: Path) -> None:
    key_file = write(tmp_path / "key", "secret\n")
    config = load({}, {"OPEN_TERMINAL_API_KEY_FILE": str(key_file)}, system_file=tmp_path / "none.toml")
    assert config.api_key == "secret"


@pytest.mark.parametrize(("flags", "environ", "message"), [
    ({"port": "eighty"}, {}, "invalid value for --port"),
    ({"port": "70000"}, {}, "port must be between"),
    ({}, {"OPEN_TERMINAL_API_KEY_FILE": "/nonexistent/key"}, "cannot read OPEN_TERMINAL_API_KEY_FILE"),
    ({}, {"OPEN_TERMINAL_API_KEY_FILE": "/x", "OPEN_TERMINAL_API_KEY": "y"}, "mutually exclusive"),
    ({}, {"OPEN_TERMINAL_MAX_LOG_SIZE": "-1"}, "must not be negative"),
    ({}, {"OPEN_TERMINAL_ENABLE_SYSTEM_PROMPT": "maybe"}, "expected true or false"),
    ({"cwd": "/nonexistent/dir"}, {}, "not a directory"),
])
def test_bad_values_raise_one_clear_error(tmp_path: Path, flags: dict[str, str], environ: dict[str, str],
                                          message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(flags, {"XDG_CONFIG_HOME": str(tmp_path), **environ}, system_file=tmp_path / "none.toml")


def test_a_broken_toml_file_is_a_config_error(tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.toml", "port = = 3")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load({}, {}, config_file=broken, system_file=tmp_path / "none.toml")
