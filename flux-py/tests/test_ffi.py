"""The ctypes layer: handles freed once, codes turned into exceptions."""

from __future__ import annotations

import ctypes
import gc

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


def test_a_handle_is_freed_once_when_its_last_reference_goes(monkeypatch):
    freed = []
    real_free = ffi.flux_config_free

    def spy(handle):
        freed.append(ctypes.cast(handle, ctypes.c_void_p).value)
        real_free(handle)

    monkeypatch.setattr(ffi, "flux_config_free", spy)
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


def test_json_larger_than_the_first_buffer():
    names = "".join(f"[rate_limits.limit_number_{i}]\nrequests = {i + 1}\n" for i in range(200))
    text = ffi.Config.from_toml(names).to_json()
    assert len(text) > 4096 and "limit_number_199" in text


def test_version():
    assert ffi.version().count(".") == 2
