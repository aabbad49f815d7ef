"""The CLI, run the way a user runs it: as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import free_port

from flux import RateLimiter
from flux.config import FluxConfig, load_config


def run(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_init_writes_a_file_that_loads_as_it_is(tmp_path):
    done = run("-m", "flux.cli", "init", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "flux.toml"
    text = path.read_text()
    for key in ("host", "port", "pool_size", "timeout_ms", "storage", "key_prefix", "log_file",
                "fail_silently", "console_logging", "jitter_enabled", "jitter_max_ms", "ipv6_prefix",
                "local_cache_size", "enabled",
                "stream", "retention", "sample_rate", "policy", "requests", "period", "burst",
                "max_wait", "url", "username", "password", "db", "cluster", "sentinel", "master_name",
                "sentinel_password", "sentinel_username"):
        assert any(line.lstrip("# ").startswith(key + " ") for line in text.splitlines()), key
    cfg = load_config(path)
    assert cfg.storage == "memory"
    assert set(cfg.rate_limits) == {"api", "login"}


def test_init_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "custom.toml"
    path.write_text("# mine\n")
    refused = run("-m", "flux.cli", "init", str(path), cwd=tmp_path)
    assert refused.returncode != 0
    assert "--force" in refused.stderr
    assert path.read_text() == "# mine\n"
    forced = run("-m", "flux.cli", "init", str(path), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "[rate_limit]" in path.read_text()


def test_clear_deletes_the_keys_under_the_prefix(tmp_path, redis_server, prefix):
    cfg = FluxConfig(redis_url=redis_server.url, key_prefix=prefix)
    limiter = RateLimiter(5, 60, config=cfg)
    for who in ("a", "b", "c"):
        limiter.hit(who)
    redis_server.command("SET", "unrelated-key", "1")
    (tmp_path / "flux.toml").write_text(f'[redis]\nurl = "{redis_server.url}"\n[flux]\nkey_prefix = "{prefix}"\n')
    done = run("-m", "flux.cli", "clear", cwd=tmp_path, env={"FLUX_CONFIG": "", "FLUX_REDIS_URL": ""})
    assert done.returncode == 0, done.stderr
    assert "deleted 3 keys" in done.stdout
    assert redis_server.keys(prefix + "*") == []
    assert redis_server.keys("unrelated-key") == ["unrelated-key"]
    assert limiter.hit("a").remaining == 4  # starts again from full


def test_clear_on_the_memory_store_says_there_is_nothing_shared(tmp_path):
    done = run("-m", "flux.cli", "clear", cwd=tmp_path, env={"FLUX_CONFIG": "", "FLUX_REDIS_URL": ""})
    assert done.returncode == 0, done.stderr
    assert "memory store" in done.stdout


def test_bad_config_is_reported_by_the_cli(tmp_path):
    (tmp_path / "flux.toml").write_text("[rate_limit]\nrequests = 0\n")
    done = run("-m", "flux.cli", "clear", cwd=tmp_path, env={"FLUX_CONFIG": ""})
    assert done.returncode == 2
    assert "flux.toml:2: rate_limit.requests" in done.stderr


def test_python_m_flux_prints_usage(tmp_path):
    done = run("-m", "flux", cwd=tmp_path)
    assert done.returncode == 0
    for command in ("init [-h] [--force] [PATH]", "clear [-h] [--config FILE]", "monitor [-h] [--host HOST]"):
        assert f"python -m flux {command}" in done.stdout, done.stdout


# --- the `flux` command that `pip install ./flux-py` installs -----------------


def flux_command() -> str:
    path = Path(sysconfig.get_path("scripts")) / "flux"
    assert path.is_file(), f"{path} is missing: `pip install ./flux-py` installs the flux command"
    return str(path)


def run_flux(*args, cwd, env=None):
    return subprocess.run(
        [flux_command(), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def words(text: str) -> list[str]:
    return text.split()


@pytest.mark.parametrize("command", [[], ["init"], ["clear"], ["monitor"]])
def test_the_flux_command_offers_what_python_m_flux_does(tmp_path, command):
    # Same commands, same options, same words: one parser behind both.
    installed = run_flux(*command, "--help", cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    for module in ("flux", "flux.cli"):
        done = run("-m", module, *command, "--help", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        # Alike but for the name (argparse wraps lines by its length).
        assert words(installed.stdout) == words(done.stdout.replace(f"python -m {module}", "flux"))
    if not command:
        for name in ("init", "clear", "monitor"):
            assert f"flux {name} [-h]" in installed.stdout


def test_flux_init_writes_a_file_that_loads(tmp_path):
    done = run_flux("init", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "wrote flux.toml\n"), done.stderr
    cfg = load_config(tmp_path / "flux.toml")
    assert cfg.storage == "memory"
    assert set(cfg.rate_limits) == {"api", "login"}
    again = run_flux("init", cwd=tmp_path)
    assert again.returncode == 1 and "--force" in again.stderr


def test_flux_clear_and_monitor_run_from_the_installed_command(tmp_path):
    cleared = run_flux("clear", cwd=tmp_path, env={"FLUX_CONFIG": "", "FLUX_REDIS_URL": ""})
    assert cleared.returncode == 0, cleared.stderr
    assert "memory store" in cleared.stdout
    port = free_port()
    nobody = run_flux("monitor", "--once", "--port", str(port), cwd=tmp_path, env={"FLUX_CONFIG": ""})
    assert nobody.returncode == 1
    assert f"nothing answered at http://127.0.0.1:{port}/metrics.json" in nobody.stderr


def test_clear_one_caller_or_one_limit(tmp_path, redis_server, prefix):
    from flux._app_limits import AppLimits

    toml = tmp_path / "flux.toml"
    toml.write_text(
        f'[redis]\nurl = "{redis_server.url}"\n[flux]\nkey_prefix = "{prefix}"\n'
        '[rate_limits.api]\nrate = "5/minute"\n[rate_limits.login]\nrate = "3/minute"\n'
        '[http.rules]\n"/x" = "2/minute"\n'
    )
    cfg = load_config(toml)
    api, login = RateLimiter.from_config("api", cfg), RateLimiter.from_config("login", cfg)
    (route,) = AppLimits({"config": cfg}, "test").guards()
    for who in ("a", "b"):
        for limiter in (api, login, route.limiter):
            limiter.hit(who)
    env = {"FLUX_CONFIG": str(toml), "FLUX_REDIS_URL": ""}

    done = run("-m", "flux.cli", "clear", "--key", "a", "--limit", "api", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "reset the key under 1 limit (api): removed 1 key" in done.stdout
    assert api.peek("a").remaining == 4 and api.peek("b").remaining == 3
    assert login.peek("a").remaining == 1

    done = run("-m", "flux.cli", "clear", "--key", "b", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "under 3 limits" in done.stdout and "removed 3 keys" in done.stdout
    assert [lim.peek("b").remaining for lim in (api, login, route.limiter)] == [4, 2, 1]
    assert login.peek("a").remaining == 1

    done = run("-m", "flux.cli", "clear", "--limit", "login", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "deleted 1 key of the limit 'login'" in done.stdout  # only "a" had state left
    assert login.peek("a").remaining == 2
    assert api.peek("b").remaining == 4 and api.hit("a").remaining == 4

    done = run("-m", "flux.cli", "clear", "--key", "a", "--limit", "nope", cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert "--key with --limit needs a limit flux.toml defines" in done.stderr
