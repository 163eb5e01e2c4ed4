#!/usr/bin/env bash
# Print the path of a kube-apiserver (Kubernetes 1.20) binary for the operator's integration tests,
# building it once from the distribution's `kubernetes` SOURCE package (no registry ships the
# binary). Also makes sure etcd-server is installed (the API server's store).
#
# The binary is cached outside the repo, keyed by the source package version and the patch applied:
#   ${SLATE_CACHE:-~/.cache/slate}/kube-apiserver-<source version>-reflect2-<reflect2 version>
# A warm run prints that path at once. A cold run takes 4-7 min (more on a shared machine).
#
# The one patch: the vendored github.com/modern-go/reflect2 1.0.1 crashes under Go >= 1.18 on the
# first custom resource; it is replaced by the distribution's golang-github-modern-go-reflect2-dev.
#
# Progress goes to stderr; stdout is only the binary's path. Exit 1 with one line if it cannot be had.
set -euo pipefail

cache=${SLATE_CACHE:-$HOME/.cache/slate}
mkdir -p "$cache"
log() { echo "kube-apiserver.sh: $*" >&2; }
die() { log "$*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $*"; fi
}

apt_quiet() { DEBIAN_FRONTEND=noninteractive as_root apt-get "$@" >&2; }

# One build at a time on this machine (parallel test runs share the cache).
exec 9>"$cache/.kube-apiserver.lock"
flock 9

need_pkgs() {  # install the named Debian packages that are missing
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' \
    || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_quiet install -y --no-install-recommends "${missing[@]}" \
      || { apt_quiet update && apt_quiet install -y --no-install-recommends "${missing[@]}"; }
  fi
}

need_pkgs etcd-server

# deb-src lines: copies of the existing deb lines (deb822 or one-line format).
src_list=/etc/apt/sources.list.d/slate-deb-src.sources
ensure_deb_src() {
  if [ ! -s "$src_list" ]; then
    log "adding deb-src lines"
    local tmp; tmp=$(mktemp)
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -e "$f" ] && [ "$f" != "$src_list" ] || continue
      if grep -qE '^Types:(.* )?deb( |$)' "$f"; then
        sed -E 's/^Types:.*/Types: deb-src/' "$f" >>"$tmp"; echo >>"$tmp"
      fi
    done
    if [ -f /etc/apt/sources.list ]; then
      grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' >"$tmp.list" || true
      [ -s "$tmp.list" ] && as_root cp "$tmp.list" /etc/apt/sources.list.d/slate-deb-src.list
    fi
    [ -s "$tmp" ] || [ -s "$tmp.list" ] || die "no deb lines found to copy into deb-src lines"
    [ -s "$tmp" ] && as_root cp "$tmp" "$src_list"
    rm -f "$tmp" "$tmp.list"
    apt_quiet update
  fi
}

src_version() { apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/{print $2; exit}'; }

ensure_deb_src
ver=$(src_version)
if [ -z "$ver" ]; then apt_quiet update; ver=$(src_version); fi
[ -n "$ver" ] || die "the distribution has no kubernetes source package"
r2ver=$(apt-cache show golang-github-modern-go-reflect2-dev 2>/dev/null \
  | awk '/^Version:/{print $2; exit}')
[ -n "$r2ver" ] || die "the distribution has no golang-github-modern-go-reflect2-dev"
key=$(printf '%s-reflect2-%s' "$ver" "$r2ver" | tr -c 'A-Za-z0-9.+\n-' '_')
bin="$cache/kube-apiserver-$key"

if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

log "building kube-apiserver from source package kubernetes $ver (reflect2 $r2ver); 4-7 min"
need_pkgs golang-go make rsync dpkg-dev golang-github-modern-go-reflect2-dev
work="$cache/build-$key"
rm -rf "$work"
mkdir -p "$work"
(cd "$work" && apt-get source -q --download-only "kubernetes=$ver" >&2 \
  && dpkg-source --no-check -x ./*.dsc src >&2) || die "apt-get source kubernetes=$ver failed"
tree="$work/src"
[ -d "$tree/vendor/github.com/modern-go/reflect2" ] || die "no vendored reflect2 in $tree"
r2src=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -d "$r2src" ] || die "missing $r2src"
rm -rf "$tree/vendor/github.com/modern-go/reflect2"
mkdir -p "$tree/vendor/github.com/modern-go/reflect2"
cp -rL "$r2src/." "$tree/vendor/github.com/modern-go/reflect2/"
rm -rf "$tree/vendor/github.com/modern-go/reflect2/"*_test.go

upstream=${ver%%-*}; upstream=${upstream#*:}; upstream=${upstream##*really}; upstream=${upstream%%+*}
(
  cd "$tree"
  export GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 GOCACHE="$cache/go-build"
  export KUBE_GIT_VERSION="v$upstream" KUBE_GIT_TREE_STATE=clean KUBE_GIT_COMMIT=debian
  export KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR="$(echo "$upstream" | cut -d. -f2)"
  make WHAT=cmd/kube-apiserver >&2
) || die "make WHAT=cmd/kube-apiserver failed (log above)"
built=$(find "$tree/_output" -type f -name kube-apiserver -perm -u+x | head -1)
[ -n "$built" ] || die "build produced no kube-apiserver binary"
cp "$built" "$bin.tmp"
mv "$bin.tmp" "$bin"
rm -rf "$work"
"$bin" --version >&2
echo "$bin"
