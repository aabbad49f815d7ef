"""What crosses the boundary, checked against include/flux.h.

flux/_ffi.py copies from the header what Python cannot ask the library for:
result codes, flags, struct layouts and function signatures. Each copy is
compared here with the header as the C compiler reads it: the names come
from the preprocessed header, and every value, size and offset from a small
C program built against it. Lists the library can give (policy and source
names) are read from it at load time and compared too, so a policy added to
Rust and the header reaches Python by itself, and a code or field added on
one side only fails here, naming it.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import flux
import flux._ffi as ffi
import flux._log as log
from flux._template import TEMPLATE
from flux.config import RateLimitPolicy

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "include" / "flux.h"

# Python names of header constants: FLUX_RESULT_OK is ffi.OK (the codes are
# what callers compare with most); any other FLUX_X is ffi.X.
RESULT_PREFIX = "FLUX_RESULT_"
# Enums whose names _ffi reads from the library instead of copying them.
NAMED_BY_THE_LIBRARY = {"flux_policy": "POLICIES", "flux_source": "SOURCES"}
# Struct fields _ffi names otherwise, because RateLimitResult (a subclass of
# flux_decision) uses `source` for the source's name and `quota` for the Quota.
RENAMED_FIELDS = {("flux_decision", "source"): "source_code", ("flux_decision", "quota"): "quota_index"}

SCALARS = {
    "bool": ctypes.c_bool,
    "uint8_t": ctypes.c_uint8,
    "uint32_t": ctypes.c_uint32,
    "int64_t": ctypes.c_int64,
    "uint64_t": ctypes.c_uint64,
    "size_t": ctypes.c_size_t,
    "double": ctypes.c_double,
    "int": ctypes.c_int,
}


@dataclass
class Header:
    """include/flux.h as the compiler sees it."""

    constants: dict[str, int] = field(default_factory=dict)  # every FLUX_* value, by the compiler
    groups: dict[str, list[str]] = field(default_factory=dict)  # enum (or FLUX_PARAM) -> its constants
    aliases: dict[str, str] = field(default_factory=dict)  # typedef'd enums: flux_result -> uint32_t
    structs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # name -> [(C type, field)]
    layouts: dict[str, int] = field(default_factory=dict)  # "flux_x" sizeof, "flux_x.f" offsetof
    callbacks: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # name -> (return, params)
    functions: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    version: str = ""


def _compiler() -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler (make deps installs gcc)")
    return cc


def _split_declaration(text: str) -> tuple[str, str]:
    """``const struct flux_limiter *limiter`` -> (the type, the name)."""
    match = re.fullmatch(r"(.*?)(\w+)", " ".join(text.split()))
    assert match, text
    return match[1].strip(), match[2]


def _params(text: str) -> list[str]:
    text = " ".join(text.split())
    if text in ("", "void"):
        return []
    return [_split_declaration(param)[0] for param in text.split(",")]


@pytest.fixture(scope="module")
def header(tmp_path_factory) -> Header:
    cc = _compiler()
    # Without the system headers, only Flux's declarations are left.
    source = "".join(line for line in HEADER.read_text().splitlines(True) if not line.startswith("#include"))
    expanded = subprocess.run(
        [cc, "-E", "-P", "-std=c11", "-x", "c", "-"], input=source, capture_output=True, text=True, check=True
    ).stdout
    macros = subprocess.run(
        [cc, "-E", "-dM", "-std=c11", "-x", "c", "-"], input=source, capture_output=True, text=True, check=True
    ).stdout

    h = Header()
    for enum, body in re.findall(r"enum (flux_\w+)\s*\{(.*?)\};", expanded, re.S):
        h.groups[enum] = re.findall(r"(FLUX_\w+)\s*=", body)
    h.aliases = dict((alias, base) for base, alias in re.findall(r"typedef (\w+) (flux_\w+);", expanded))
    defines = re.findall(r"#define (FLUX_\w+) ", macros)
    h.groups["FLUX_PARAM"] = [name for name in defines if name.startswith("FLUX_PARAM_")]
    for name, body in re.findall(r"typedef struct (flux_\w+)\s*\{(.*?)\}\s*\1;", expanded, re.S):
        h.structs[name] = [_split_declaration(member) for member in body.split(";") if member.strip()]
    for ret, name, params in re.findall(r"typedef ([^;()]*?)\s*\(\*(flux_\w+)\)\(([^;]*?)\);", expanded):
        h.callbacks[name] = (ret.strip(), _params(params))
    for ret, name, params in re.findall(r"^(?!typedef)([^;{}()\n]*?)\s*\b(flux_\w+)\(([^;{}]*?)\);", expanded, re.M):
        h.functions[name] = (ret.strip(), _params(params))

    # Values, sizes and offsets as the compiler lays them out.
    constants = [c for group in h.groups.values() for c in group]
    lines = [f'printf("%s %lld\\n", "{c}", (long long){c});' for c in constants]
    for struct, members in h.structs.items():
        lines.append(f'printf("%s %zu\\n", "{struct}", sizeof({struct}));')
        lines += [
            f'printf("%s %zu\\n", "{struct}.{name}", offsetof({struct}, {name}));' for _, name in members
        ]
    work = tmp_path_factory.mktemp("header")
    (work / "probe.c").write_text(
        '#include <stddef.h>\n#include <stdio.h>\n#include "flux.h"\n'
        "int main(void) {\n" + "\n".join(lines) + '\nprintf("version %s\\n", FLUX_VERSION_STRING);\nreturn 0;\n}\n'
    )
    subprocess.run(
        [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{HEADER.parent}", "probe.c", "-o", "probe"],
        cwd=work, check=True,
    )
    for line in subprocess.run([work / "probe"], capture_output=True, text=True, check=True).stdout.splitlines():
        name, value = line.split(" ", 1)
        if name == "version":
            h.version = value
        elif name.startswith("FLUX_"):
            h.constants[name] = int(value)
        else:
            h.layouts[name] = int(value)
    return h


def _python_name(constant: str) -> str:
    if constant.startswith(RESULT_PREFIX):
        return constant.removeprefix(RESULT_PREFIX)
    return constant.removeprefix("FLUX_")


def _ffi_constants() -> dict[str, int]:
    return {
        name: value
        for name, value in vars(ffi).items()
        if name.isupper() and type(value) is int
    }


# --- enums and flags ----------------------------------------------------------


def test_every_result_code_is_in_ffi_with_its_value(header):
    codes = {_python_name(c): header.constants[c] for c in header.groups["flux_result"]}
    mirrored = {name: getattr(ffi, name, None) for name in codes}
    assert mirrored == codes, "flux_result in include/flux.h and the codes in flux/_ffi.py differ"
    assert set(ffi._EXCEPTION_FOR_CODE) <= set(codes.values())


def test_each_group_of_constants_ffi_uses_is_there_whole(header):
    # A group (an enum, or the FLUX_PARAM_ flags) that _ffi copies at all, it
    # copies whole: a value added to the header fails here until it is added.
    for group, members in header.groups.items():
        if group in NAMED_BY_THE_LIBRARY:
            continue
        wanted = {_python_name(c): header.constants[c] for c in members}
        present = {name: getattr(ffi, name) for name in wanted if hasattr(ffi, name)}
        if present:
            assert present == wanted, f"{group}: flux/_ffi.py has {present}, include/flux.h {wanted}"


def test_every_constant_of_ffi_is_one_of_the_header(header):
    known = {_python_name(c): value for c, value in header.constants.items()}
    for group in NAMED_BY_THE_LIBRARY:
        for c in header.groups[group]:
            known.pop(_python_name(c))
    strays = {name: value for name, value in _ffi_constants().items() if known.get(name) != value}
    assert strays == {}, "constants of flux/_ffi.py that include/flux.h does not define"


def test_policy_and_source_names_come_from_the_library_in_the_header_order(header):
    for enum, attribute in NAMED_BY_THE_LIBRARY.items():
        prefix = enum.upper() + "_"
        by_value = sorted((header.constants[c], c.removeprefix(prefix).lower()) for c in header.groups[enum])
        assert [value for value, _ in by_value] == list(range(len(by_value))), f"{enum} has gaps"
        assert getattr(ffi, attribute) == tuple(name for _, name in by_value), enum


def test_the_python_names_of_policies_are_the_librarys():
    # Copies a user reads: the public enum, and the file `flux init` writes.
    assert [p.value for p in RateLimitPolicy] == list(ffi.POLICIES)
    for name in ffi.POLICIES:
        assert f'"{name}"' in TEMPLATE, f"flux init's flux.toml does not name {name}"


def test_every_log_level_has_a_python_level(header):
    levels = {header.constants[c] for c in header.groups["flux_log_level"]}
    assert set(log._LEVELS) == levels


def test_the_package_and_the_header_have_one_version(header):
    pyproject = tomllib.loads((ROOT / "flux-py" / "pyproject.toml").read_text())
    assert header.version == ffi.EXPECTED_VERSION == flux.__version__ == pyproject["project"]["version"]
    assert ffi.LIB_VERSION == header.version, "the library loaded is not built from these sources"


# --- structs, callbacks and functions -----------------------------------------


def _matches(c_type: str, ctype, header: Header) -> bool:
    """Whether the ctypes type ``ctype`` passes what C declares as ``c_type``."""
    words = [w for w in c_type.replace("*", " * ").split() if w not in ("const", "struct")]
    stars = words.count("*")
    base = header.aliases.get(words[0], words[0])
    if stars == 0:
        if base == "void":
            return ctype is None
        if base in header.callbacks:
            return ctype is getattr(ffi, base, object())
        if base in SCALARS:
            return ctype is SCALARS[base]
        return isinstance(ctype, type) and issubclass(ctype, ctypes.Structure) and ctype.__name__ == base
    if stars == 1 and base in ("char", "uint8_t"):
        return ctype is ctypes.c_char_p  # bytes, or a buffer ctypes made
    if stars == 1 and base == "void":
        return ctype is ctypes.c_void_p
    pointee = base + " *" * (stars - 1)
    return isinstance(ctype, type) and issubclass(ctype, ctypes._Pointer) and _matches(pointee, ctype._type_, header)


def test_every_struct_ffi_mirrors_has_the_header_layout(header):
    mirrored = {
        name: value
        for name, value in vars(ffi).items()
        if isinstance(value, type) and issubclass(value, ctypes.Structure) and hasattr(value, "_fields_")
    }
    assert set(mirrored) <= set(header.structs), "structs of flux/_ffi.py that include/flux.h does not have"
    assert mirrored, "flux/_ffi.py mirrors no struct?"
    for name, cls in mirrored.items():
        members = header.structs[name]
        names = [RENAMED_FIELDS.get((name, member), member) for _, member in members]
        assert [f[0] for f in cls._fields_] == names, f"{name}: fields or their order differ"
        for (c_type, member), (py_name, ctype) in zip(members, cls._fields_, strict=True):
            assert _matches(c_type, ctype, header), f"{name}.{member} is {c_type} in C, {ctype} in _ffi"
            assert getattr(cls, py_name).offset == header.layouts[f"{name}.{member}"], f"{name}.{member}"
        assert ctypes.sizeof(cls) == header.layouts[name], f"sizeof({name})"


def test_every_callback_type_of_ffi_has_the_header_signature(header):
    checked = 0
    for name, (ret, params) in header.callbacks.items():
        cls = getattr(ffi, name, None)
        if cls is None:
            continue
        checked += 1
        assert _matches(ret, cls._restype_, header), name
        assert len(cls._argtypes_) == len(params), name
        for i, (c_type, ctype) in enumerate(zip(params, cls._argtypes_, strict=True)):
            assert _matches(c_type, ctype, header), f"{name} parameter {i}: {c_type} in C, {ctype} in _ffi"
    assert checked == 1  # the log callback: batches are answered through completion queues


def test_every_function_ffi_declares_has_the_header_signature(header):
    declared = {
        id(value): value
        for value in vars(ffi).values()
        if isinstance(value, ctypes._CFuncPtr) and value.argtypes is not None
    }
    assert len(declared) > 20
    for func in declared.values():
        name = func.__name__
        assert name in header.functions, f"flux/_ffi.py calls {name}, which include/flux.h does not declare"
        ret, params = header.functions[name]
        assert _matches(ret, func.restype, header), f"{name} returns {ret}, _ffi says {func.restype}"
        assert len(func.argtypes) == len(params), f"{name} takes {len(params)} arguments"
        for i, (c_type, ctype) in enumerate(zip(params, func.argtypes, strict=True)):
            assert _matches(c_type, ctype, header), f"{name} argument {i}: {c_type} in C, {ctype} in _ffi"
