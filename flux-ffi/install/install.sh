#!/usr/bin/env bash
# Installs the C library of Flux as a system library, or removes it again.
#
#   install.sh install BUILD_DIR HEADER
#       HEADER as include/flux.h; BUILD_DIR's libflux_ffi.so as lib/libflux.so.<version>,
#       with its soname link (libflux.so.<ABI major>) and the link libflux.so that
#       `-lflux` finds; libflux_ffi.a as lib/libflux.a; lib/pkgconfig/flux.pc; and a
#       manifest of all of it, directories it had to create included.
#   install.sh uninstall
#       removes what the manifest lists, and the manifest.
#
# Where: $DESTDIR$PREFIX (PREFIX defaults to /usr/local), $LIBDIR and $INCLUDEDIR
# (PREFIX/lib and PREFIX/include). DESTDIR only stages: the paths written into flux.pc
# and the manifest leave it out. `make install` and `make uninstall` call this; it needs
# no Rust toolchain, so `sudo make install` works after `make lib`.
set -euo pipefail

prefix=${PREFIX:-/usr/local}
libdir=${LIBDIR:-$prefix/lib}
includedir=${INCLUDEDIR:-$prefix/include}
destdir=${DESTDIR:-}
manifest=$prefix/share/flux/install-manifest

die() {
    echo "install.sh: $*" >&2
    exit 1
}

# Removes what $destdir$manifest lists: files and links first, then the directories the
# install created, deepest first, each only when it is empty.
uninstall() {
    local listed=$destdir$manifest kind path
    [[ -f $listed ]] || { echo "nothing to uninstall: no $listed"; return 0; }
    local -a dirs=()
    while read -r kind path; do
        case $kind in
        file) rm -f -- "$destdir$path" ;;
        dir) dirs=("$destdir$path" "${dirs[@]}") ;;
        *) die "$listed: unknown entry '$kind $path'" ;;
        esac
    done < "$listed"
    rm -f -- "$listed"
    for path in "${dirs[@]}"; do
        rmdir -- "$path" 2>/dev/null || echo "kept $path: not empty"
    done
    echo "uninstalled Flux from $destdir$prefix"
}

# Creates directory $1 (without DESTDIR) and its missing parents, and lists in $entries
# the ones it created, parents first, so that uninstall removes no directory it found.
entries=()
make_dir() {
    local path=$1 partial=
    local -a parts
    IFS=/ read -r -a parts <<< "${path#/}"
    for part in "${parts[@]}"; do
        partial=$partial/$part
        if [[ ! -d $destdir$partial ]]; then
            mkdir -- "$destdir$partial"
            entries+=("dir $partial")
        fi
    done
}

# install_file MODE SOURCE TARGET (TARGET without DESTDIR)
install_file() {
    make_dir "$(dirname -- "$3")"
    install -m "$1" -- "$2" "$destdir$3"
    entries+=("file $3")
}

# install_link TARGET_NAME LINK (LINK without DESTDIR)
install_link() {
    ln -sfn -- "$1" "$destdir$2"
    entries+=("file $2")
}

# install_text TARGET (without DESTDIR): standard input, with mode 644.
install_text() {
    make_dir "$(dirname -- "$1")"
    cat > "$destdir$1"
    chmod 644 -- "$destdir$1"
    entries+=("file $1")
}

# Lists $entries in the manifest; run on exit, so a failed install can be undone too.
write_manifest() {
    ((${#entries[@]})) || return 0
    make_dir "$(dirname -- "$manifest")"
    entries+=("file $manifest")
    printf '%s\n' "${entries[@]}" > "$destdir$manifest"
}

# A path under the prefix as flux.pc writes it, relative to ${prefix}, so that pkg-config
# can move the whole tree (--define-prefix).
under_prefix() {
    if [[ $1 == "$prefix"/* ]]; then
        echo "\${prefix}${1#"$prefix"}"
    else
        echo "$1"
    fi
}

install_all() {
    local build=$1 header=$2
    local shared=$build/libflux_ffi.so static=$build/libflux_ffi.a
    local native_libs_file=$build/libflux.native-static-libs sources=$build/libflux_ffi.d built
    for built in "$shared" "$static" "$native_libs_file" "$sources"; do
        [[ -f $built ]] || die "$built is missing: run 'make lib' first"
    done
    # Installing an old build would go unnoticed: refuse one older than any of the
    # workspace's files cargo built it from (its dep-info file lists them).
    local source
    for source in $(sed 's/^[^:]*: //' "$sources"); do
        if [[ ! -e $source || $source -nt $shared ]]; then
            die "$shared is older than $source: run 'make lib' first"
        fi
    done

    local version soname native_libs
    version=$(sed -n 's/^#define FLUX_VERSION_STRING "\(.*\)"$/\1/p' "$header")
    [[ -n $version ]] || die "$header has no FLUX_VERSION_STRING"
    soname=$(readelf -d "$shared" | sed -n 's/.*Library soname: \[\(.*\)\]$/\1/p')
    [[ $soname == libflux.so.* ]] || die "$shared has the soname '$soname', not libflux.so.<ABI major>"
    native_libs=$(< "$native_libs_file")

    # An upgrade replaces the previous install whole, old versioned file included.
    uninstall > /dev/null
    trap write_manifest EXIT

    install_file 644 "$header" "$includedir/flux.h"
    install_file 755 "$shared" "$libdir/libflux.so.$version"
    install_link "libflux.so.$version" "$libdir/$soname"
    install_link "$soname" "$libdir/libflux.so"
    install_file 644 "$static" "$libdir/libflux.a"

    install_text "$libdir/pkgconfig/flux.pc" <<PC
prefix=$prefix
libdir=$(under_prefix "$libdir")
includedir=$(under_prefix "$includedir")

Name: flux
Description: Flux rate limiter: the C ABI (flux.h)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lflux
Libs.private: $native_libs
PC
    echo "installed Flux $version ($soname) into $destdir$prefix; the list is in $manifest"
}

case ${1:-} in
install)
    [[ $# == 3 ]] || die "usage: install.sh install BUILD_DIR HEADER"
    install_all "$2" "$3"
    ;;
uninstall) uninstall ;;
*) die "usage: install.sh install BUILD_DIR HEADER | install.sh uninstall" ;;
esac
