# scripts/debian-kernel.sh: Debian's kernel package, downloaded with apt and
# unpacked into a cache folder, never installed.  Sourced by tests/vm/run
# (the test VM's kernel) and scripts/linux-guest (the Linux PV guest).
#
#   debian_kernel_version CACHE   prints the version linux-image-amd64
#                                 depends on (e.g. 6.1.0-57-amd64)
#   debian_kernel_fetch CACHE V   unpacks linux-image-V into CACHE/linux-image-V
#
# Both print their messages through the caller's `note` and `err`, and exit
# the caller with status 2 when the package cannot be had.

debian_kernel_version() {
    local cache=$1 dep
    dep=$(apt-cache depends linux-image-amd64 2>/dev/null |
          awk '/Depends: linux-image-[0-9]/ {print $2; exit}') || true
    if [ -z "$dep" ] && [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        dep=$(apt-cache depends linux-image-amd64 2>/dev/null |
              awk '/Depends: linux-image-[0-9]/ {print $2; exit}') || true
    fi
    if [ -z "$dep" ]; then
        # No package index: use the newest kernel already in the cache.
        dep=$(ls -d "$cache"/linux-image-*-amd64 2>/dev/null | sort -V | tail -n 1) || true
        dep=${dep##*/}
    fi
    [ -n "$dep" ] || { err "cannot find Debian's linux-image-amd64 (apt-get update?)"; exit 2; }
    echo "${dep#linux-image-}"
}

debian_kernel_fetch() {
    local cache=$1 v=$2
    local dir=$cache/linux-image-$v
    [ -f "$dir/.done" ] && return 0
    note "fetching Debian's linux-image-$v into $cache"
    rm -rf "$dir" "$cache/dl"
    mkdir -p "$cache/dl"
    (cd "$cache/dl" && apt-get download -qq "linux-image-$v" 2>/dev/null) || {
        err "apt-get download linux-image-$v failed"; exit 2; }
    dpkg-deb -x "$cache"/dl/linux-image-"$v"_*.deb "$dir"
    depmod -b "$dir" "$v"   # kmod: the test VM loads modules from here
    rm -rf "$cache/dl"
    touch "$dir/.done"
}
