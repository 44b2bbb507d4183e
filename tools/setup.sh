#!/usr/bin/env bash
# Installs what tether needs on a fresh Debian machine (system packages, PyPI packages) and builds
# and installs the package with its C++ tests. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -f /usr/include/asio.hpp ] || need_apt+=(libasio-dev)
[ -f /usr/include/msgpack.hpp ] || need_apt+=(libmsgpack-cxx-dev)
[ -d /usr/include/gtest ] || need_apt+=(libgtest-dev)
[ -f /usr/include/openssl/hmac.h ] || need_apt+=(libssl-dev)
[ -f /usr/include/sqlite3.h ] || need_apt+=(libsqlite3-dev)
command -v ninja >/dev/null || need_apt+=(ninja-build)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "== installing Python build and test dependencies"
python3 -m pip install -q --disable-pip-version-check "scikit-build-core>=0.9" "nanobind>=2.0" cmake ninja \
  cloudpickle msgpack numpy pytest pytest-timeout pytest-xdist 2>&1 | grep -v -i "running pip as the 'root'" || true

echo "== building and installing tether (C++ core, extension, GoogleTest tests)"
python3 -m pip install -q --disable-pip-version-check --no-build-isolation . 2>&1 | grep -v -i "running pip as the 'root'" || true
python3 -c "import tether; print('tether', tether.__version__, 'installed')"
