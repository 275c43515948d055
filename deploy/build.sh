#!/usr/bin/env bash
# The build steps of the container image, kept here so that tests/test_deploy.sh runs exactly
# what deploy/Dockerfile runs:
#   deploy/build.sh deps          install the Debian packages the build needs (apt-get)
#   deploy/build.sh build SRC OUT build the release binaries in SRC, copy them to OUT/bin
#   deploy/build.sh runtime       install the shared libraries the binaries need at run time
set -euo pipefail

# A subset of the Makefile's DEBIAN_DEPS: only what compiling needs, not the test tools.
BUILD_PACKAGES=(build-essential pkg-config libuv1-dev libcjson-dev libhiredis-dev node-llhttp)
# What the final image adds to debian:bookworm-slim (which already has libc6).
RUNTIME_PACKAGES=(libuv1 libcjson1 libhiredis0.14)
BINARIES=(spool-server spool-worker spool)

apt_install() {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
  rm -rf /var/lib/apt/lists/*
}

case "${1:-}" in
  deps)
    apt_install "${BUILD_PACKAGES[@]}"
    ;;
  runtime)
    apt_install "${RUNTIME_PACKAGES[@]}"
    ;;
  build)
    src=${2:?usage: build.sh build SRC OUT}
    out=${3:?usage: build.sh build SRC OUT}
    # The binaries are built from scratch: objects from another machine must not leak in.
    make -C "$src" clean
    make -C "$src" -j"$(nproc)" all
    mkdir -p "$out/bin"
    for b in "${BINARIES[@]}"; do
      if [ ! -x "$src/build/bin/$b" ]; then
        echo "build.sh: $b was not built" >&2
        exit 1
      fi
      install -m 0755 "$src/build/bin/$b" "$out/bin/$b"
    done
    ;;
  packages)
    # For tests: the package lists, one "kind package" per line.
    printf 'build %s\n' "${BUILD_PACKAGES[@]}"
    printf 'runtime %s\n' "${RUNTIME_PACKAGES[@]}"
    ;;
  *)
    echo "usage: build.sh deps | runtime | build SRC OUT | packages" >&2
    exit 2
    ;;
esac
