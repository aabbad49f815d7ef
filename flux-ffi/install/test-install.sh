#!/usr/bin/env bash
# Flux installed as a system library, as a C or C++ user meets it:
#
# 1. `make install` into a staging DESTDIR, beside a header of another package that must
#    survive, then again over an older release's files, which go; the tree holds exactly
#    the header, libflux.so.<version> with its soname link and libflux.so, libflux.a,
#    flux.pc and the manifest.
# 2. The library exports exactly the functions include/flux.h declares (nm -D against
#    the header as the compiler reads it), and flux_version() is FLUX_VERSION_STRING,
#    which is FLUX_VERSION_MAJOR.MINOR.PATCH.
# 3. examples/c and examples/cpp build with nothing but pkg-config's flags, linked to
#    libflux.so and to libflux.a, with -Wall -Wextra -Werror, and run; the C++ one runs
#    again under valgrind.
# 4. `make uninstall` leaves only the other package's header.
#
# `make test-install` runs it after `make lib`; CC, CXX and MAKE come from make.
set -euo pipefail
cd "$(dirname -- "$0")/../.."
CC=${CC:-cc}
CXX=${CXX:-c++}
MAKE=${MAKE:-make}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/stage
prefix=/usr/local
libdir=$stage$prefix/lib
bin=$work/bin
mkdir -p "$bin" "$stage$prefix/include"
echo '/* another package */' > "$stage$prefix/include/other.h"

fail() {
    echo "test-install: $*" >&2
    exit 1
}

# The names every check below expects, from the header and the library themselves.
version=$(sed -n 's/^#define FLUX_VERSION_STRING "\(.*\)"$/\1/p' include/flux.h)
soname=$(readelf -d "${BUILD_DIR:-target/release}/libflux_ffi.so" |
    sed -n 's/.*Library soname: \[\(.*\)\]$/\1/p')
[[ $soname =~ ^libflux\.so\.[0-9]+$ ]] || fail "soname '$soname' is not libflux.so.<ABI major>"

echo "== install into DESTDIR=$stage PREFIX=$prefix"
"$MAKE" -s install DESTDIR="$stage" PREFIX="$prefix"
# As if the first install had been of release 0.0.1: its library is in its manifest.
echo old > "$libdir/libflux.so.0.0.1"
echo "file $prefix/lib/libflux.so.0.0.1" >> "$stage$prefix/share/flux/install-manifest"
"$MAKE" -s install DESTDIR="$stage" PREFIX="$prefix"
expected=$(LC_ALL=C sort <<< "include/flux.h
include/other.h
lib/$soname -> libflux.so.$version
lib/libflux.a
lib/libflux.so -> $soname
lib/libflux.so.$version
lib/pkgconfig/flux.pc
share/flux/install-manifest")
installed=$(cd "$stage$prefix" &&
    find . \( -type l -printf '%P -> %l\n' \) -o \( -type f -printf '%P\n' \) | LC_ALL=C sort)
[[ $installed == "$expected" ]] ||
    fail "installed tree differs from what is expected:$(diff <(echo "$expected") <(echo "$installed"))"

echo "== exports of $soname against the functions flux.h declares"
declared=$("$CC" -E -P -x c "$stage$prefix/include/flux.h" |
    grep -oE '\bflux_[A-Za-z0-9_]+[[:space:]]*\(' | tr -d '( \t' | sort -u)
exported=$(nm -D --defined-only "$libdir/$soname" | awk '{print $NF}' | sort -u)
[[ -n $declared ]] || fail "found no function declared in flux.h"
if [[ $declared != "$exported" ]]; then
    diff <(echo "$declared") <(echo "$exported") | sed -n 's/^< /declared, not exported: /p; s/^> /exported, not declared: /p' >&2
    fail "the library's exports and flux.h's declarations differ"
fi
echo "$(wc -l <<< "$exported") functions, each declared and exported"

export PKG_CONFIG_PATH=$libdir/pkgconfig PKG_CONFIG_SYSROOT_DIR=$stage
[[ $(pkg-config --modversion flux) == "$version" ]] || fail "flux.pc has version $(pkg-config --modversion flux)"

# The two ways a user links, with pkg-config's flags only:
# link_shared NAME COMPILER ARGS... links $bin/NAME to libflux.so;
link_shared() {
    local name=$1
    shift
    # shellcheck disable=SC2046 # pkg-config's output is a list of flags
    "$@" -o "$bin/$name" $(pkg-config --cflags --libs flux)
    readelf -d "$bin/$name" | grep -qF "[$soname]" || fail "$name does not ask for $soname"
}
# link_static NAME COMPILER ARGS... links $bin/NAME to libflux.a: the first -lflux, between
# -Bstatic and -Bdynamic, takes the archive (the linker takes a library named twice once);
# --static then adds the system libraries it needs, from Libs.private.
link_static() {
    local name=$1
    shift
    # shellcheck disable=SC2046
    "$@" -o "$bin/$name" $(pkg-config --cflags flux) \
        -Wl,-Bstatic $(pkg-config --libs flux) -Wl,-Bdynamic $(pkg-config --static --libs flux)
    if readelf -d "$bin/$name" | grep -q 'NEEDED.*libflux'; then
        fail "$name, linked to libflux.a, still needs libflux.so"
    fi
}

echo "== version: flux_version() against the FLUX_VERSION_* macros"
cat > "$work/version.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <flux.h>
#define TEXT(x) #x
#define VERSION(major, minor, patch) TEXT(major) "." TEXT(minor) "." TEXT(patch)
int main(void) {
    const char *numbers = VERSION(FLUX_VERSION_MAJOR, FLUX_VERSION_MINOR, FLUX_VERSION_PATCH);
    size_t n = strlen(numbers);
    /* The numbers, then the end or a pre-release or build suffix. */
    int ok = strcmp(flux_version(), FLUX_VERSION_STRING) == 0 &&
             strncmp(FLUX_VERSION_STRING, numbers, n) == 0 &&
             strchr("-+", FLUX_VERSION_STRING[n]) != NULL; /* strchr finds the NUL too */
    printf("flux_version() %s, FLUX_VERSION_STRING %s, MAJOR.MINOR.PATCH %s\n", flux_version(),
           FLUX_VERSION_STRING, numbers);
    return ok ? 0 : 1;
}
C
link_shared version "$CC" -std=c11 -Wall -Wextra -Werror -Wpedantic "$work/version.c"
LD_LIBRARY_PATH=$libdir "$bin/version" || fail "flux_version() and the FLUX_VERSION_* macros disagree"

echo "== Libs.private: libflux.a links with what flux.pc lists, without the compiler's defaults"
link_static version-static "$CC" -std=c11 -nodefaultlibs "$work/version.c"
"$bin/version-static" > /dev/null

echo "== examples/c/decide.c and examples/cpp/threads.cpp, with pkg-config's flags only"
c=("$CC" -std=c11 -Wall -Wextra -Werror -Wpedantic -g examples/c/decide.c)
cxx=("$CXX" -std=c++17 -Wall -Wextra -Werror -Wpedantic -g -pthread examples/cpp/threads.cpp)
link_shared decide "${c[@]}"
link_static decide-static "${c[@]}"
link_shared threads "${cxx[@]}"
link_static threads-static "${cxx[@]}"
LD_LIBRARY_PATH=$libdir "$bin/decide" > /dev/null
"$bin/decide-static" > /dev/null
LD_LIBRARY_PATH=$libdir "$bin/threads"
"$bin/threads-static" > /dev/null
LD_LIBRARY_PATH=$libdir valgrind --quiet --leak-check=full \
    --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=1 "$bin/threads" > /dev/null

echo "== uninstall"
"$MAKE" -s uninstall DESTDIR="$stage" PREFIX="$prefix"
left=$(cd "$stage" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort)
[[ $left == "usr
usr/local
usr/local/include
usr/local/include/other.h" ]] || fail "uninstall left: $left"
echo "test-install: passed"
