"""The ctypes layer: handles freed once, codes turned into exceptions."""

from __future__ import annotations

import ctypes
import gc
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
    """The addresses ``flux_config_free`` is called with, in order."""
    calls = []
    free = ffi.Config._free

    def recording(ptr):
        calls.append(ctypes.cast(ptr, ctypes.c_void_p).value)
        free(ptr)

    monkeypatch.setattr(ffi.Config, "_free", staticmethod(recording))
    return calls


def address(handle) -> int:
    return ctypes.cast(handle.ptr, ctypes.c_void_p).value


def test_handles_are_freed_once(freed):
    config = ffi.Config.default()
    first = address(config)
    config.close()
    config.close()  # a second close does nothing
    assert config.closed and freed == [first]
    with pytest.raises(FluxError) as raised:
        config.to_json()
    assert str(raised.value) == "this Config was closed"
    with ffi.Config.default() as config:
        assert '"storage":"memory"' in config.to_json()
        second = address(config)
    assert config.closed and freed == [first, second]


def test_a_handle_only_the_garbage_collector_reaches_is_freed_by_it(freed):
    gc.disable()
    try:
        config = ffi.Config.default()
        at = address(config)
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
    with ffi.Config.from_toml(names) as config:
        text = config.to_json()
    assert len(text) > 4096 and "limit_number_199" in text


def test_version():
    assert ffi.version().count(".") == 2
