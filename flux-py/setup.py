"""The build step pyproject.toml cannot express: compile the Rust library.

``pip install ./flux-py`` runs ``cargo build --release -p flux-ffi`` in the
workspace above this folder and puts libflux_ffi beside the Python modules,
so the installed package finds it wherever it is imported from. The wheel is
then platform-specific, which is declared here too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
WORKSPACE = HERE.parent
LIB_NAME = {"darwin": "libflux_ffi.dylib", "win32": "flux_ffi.dll"}.get(sys.platform, "libflux_ffi.so")


def _built_library() -> Path:
    prebuilt = os.environ.get("FLUX_PREBUILT_LIB")
    if prebuilt:
        return Path(prebuilt)
    manifest = WORKSPACE / "Cargo.toml"
    if not manifest.is_file():
        raise SystemExit(
            f"flux-limiter: {manifest} not found. Build from the Flux repository "
            "(pip install ./flux-py) or set FLUX_PREBUILT_LIB to a built library."
        )
    cargo = os.environ.get("CARGO", "cargo")
    command = [cargo, "build", "--release", "-p", "flux-ffi", "--manifest-path", str(manifest)]
    print("flux-limiter: " + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=WORKSPACE)
    target = Path(os.environ.get("CARGO_TARGET_DIR", WORKSPACE / "target"))
    if not target.is_absolute():
        target = WORKSPACE / target
    return target / "release" / LIB_NAME


class BuildWithCargo(build_py):
    def run(self) -> None:
        super().run()
        library = _built_library()
        destination = Path(self.build_lib) / "flux" / LIB_NAME
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library, destination)


class BinaryDistribution(Distribution):
    """The wheel holds a native library: tag it for this platform."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildWithCargo}, distclass=BinaryDistribution)
