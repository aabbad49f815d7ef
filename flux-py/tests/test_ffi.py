"""The ctypes layer: handles freed once, codes turned into exceptions."""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import weakref

import pytest

import flux._ffi as ffi
from flux.exceptions import ConfigError, ConnectionError, FluxError, LimitError


def test_every_code_maps_to_its_exception():
    assert isinstance(ffi.error_for(ffi.CONFIG, "m"), ConfigError)
    assert isinstance(ffi.error_for(ffi.UNKNOWN_LIMIT, "m"), ConfigError)
    for code in (ffi.INVALID_LIMIT, ffi.INVALID_COST, ffi.INVALID_ARGUMENT):
        assert isinstance(ffi.error_for(code, "m"), LimitError)
        assert isinstance(ffi.error_for(code, "m"), ValueError)
    for code in (ffi.STORAGE, ffi.TIMEOUT, ffi.POOL):
        assert isinstance(ffi.error_for(code, "m"), ConnectionError)
    for code in (ffi.PANIC, ffi.NULL_ARGUMENT, ffi.INVALID_UTF8, ffi.BUFFER_TOO_SMALL):
        exc = ffi.error_for(code, "m")
        assert type(exc) is FluxError and exc.code == code


def test_the_library_message_reaches_the_exception():
    with pytest.raises(ConfigError) as caught:
        ffi.Config.from_toml("[rate_limit]\nrequests = 0\n", "inline.toml")
    assert str(caught.value).startswith("inline.toml:2: rate_limit.requests")
    assert ffi.last_error() == str(caught.value)


@pytest.fixture
def freed(monkeypatch):
    """The address of every config handle freed from now on, in order."""
    addresses = []
    real_free = ffi.flux_config_free

    def spy(handle):
        addresses.append(ctypes.cast(handle, ctypes.c_void_p).value)
        real_free(handle)

    monkeypatch.setattr(ffi, "flux_config_free", spy)
    return addresses


def test_a_handle_is_freed_once_when_its_last_reference_goes(freed):
    config = ffi.Config.default()
    address = ctypes.cast(config, ctypes.c_void_p).value
    also = config
    del config
    gc.collect()
    assert freed == [], "a reference is left"
    assert '"storage":"memory"' in also.to_json()
    del also
    gc.collect()
    assert freed == [address]
    with pytest.raises(ConfigError):
        ffi.Config.from_toml("[rate_limit]\nrequests = 0\n")
    gc.collect()
    assert freed == [address], "a handle that was never made is not freed"


def test_a_handle_only_the_garbage_collector_reaches_is_freed_by_it(freed):
    gc.disable()
    try:
        config = ffi.Config.default()
        at = ctypes.cast(config, ctypes.c_void_p).value
        cycle = [config]
        cycle.append(cycle)  # unreachable once dropped, but not by reference counts
        collected = weakref.ref(config)
        del config, cycle
        assert collected() is not None and freed == []
        gc.collect()
        assert collected() is None
        assert freed == [at]
    finally:
        gc.enable()


def test_json_larger_than_the_first_buffer():
    names = "".join(f"[rate_limits.limit_number_{i}]\nrequests = {i + 1}\n" for i in range(200))
    text = ffi.Config.from_toml(names).to_json()
    assert len(text) > 4096 and "limit_number_199" in text


def test_version():
    assert ffi.version() == ffi.LIB_VERSION == ffi.EXPECTED_VERSION


def _fake_library(tmp_path, version: str | None) -> str:
    """A shared library that is not Flux: ``flux_version`` (when given) and nothing else."""
    source = tmp_path / "fake.c"
    body = f'const char *flux_version(void) {{ return "{version}"; }}\n' if version else "int nothing;\n"
    source.write_text(body)
    library = tmp_path / f"libfake-{version}.so"
    subprocess.run(["cc", "-shared", "-fPIC", str(source), "-o", str(library)], check=True)
    return str(library)


def _import_flux_with(library: str) -> subprocess.CompletedProcess:
    script = "import flux"
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "FLUX_LIB": library},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _major_minor(version: str) -> tuple[int, int]:
    major, minor, _ = version.split(".")
    return int(major), int(minor)


def _refused_versions() -> list[str]:
    major, minor = _major_minor(ffi.EXPECTED_VERSION)
    versions = [f"{major + 1}.0.0", f"{major}.{minor - 1}.9"]  # another major; older
    if major == 0:
        versions.append(f"0.{minor + 1}.0")  # a 0.x minor may break the ABI
    return versions


@pytest.mark.parametrize("version", _refused_versions())
def test_a_library_of_another_version_is_refused_at_import(tmp_path, version):
    library = _fake_library(tmp_path, version)
    done = _import_flux_with(library)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("flux.exceptions.FluxError: the Flux library "), done.stderr
    assert library in last and f"version {version}" in last and ffi.EXPECTED_VERSION in last, last


def test_a_library_of_the_same_series_missing_a_function_names_it(tmp_path):
    major, minor = _major_minor(ffi.EXPECTED_VERSION)
    library = _fake_library(tmp_path, f"{major}.{minor}.999")
    done = _import_flux_with(library)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"flux.exceptions.FluxError: the Flux library {library} (version {major}.{minor}.999) "
        "has no function flux_last_error"
    ), done.stderr


def test_a_library_that_is_not_flux_is_refused(tmp_path):
    library = _fake_library(tmp_path, None)
    done = _import_flux_with(library)
    assert done.stderr.strip().splitlines()[-1] == (
        f"flux.exceptions.FluxError: {library} is not a Flux library: it has no flux_version"
    ), done.stderr
