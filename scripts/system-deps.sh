#!/usr/bin/env bash
# What the test suite needs from the machine, installed when missing (called by `make test`):
# Debian's Chromium for the dashboard's browser test, the Qt runtime libraries, and a Redis
# server answering on 127.0.0.1:6379 for the Redis-backed tests (and the redis-server
# binary itself: a test starts a server of its own to kill and restart). Nothing here is
# optional: the tests that use them fail, never skip, without them.
set -euo pipefail

packages=()
[ -x /usr/bin/chromium ] || packages+=(chromium)
# PySide6 wheels bring Qt itself but load these system libraries.
# The xcb ones are what Qt's xcb platform plugin needs on a real or virtual (Xvfb) screen.
for lib in libEGL.so.1 libxkbcommon.so.0 libfontconfig.so.1 libGL.so.1 libdbus-1.so.3 \
  libxcb-cursor.so.0 libxcb-icccm.so.4 libxcb-keysyms.so.1; do
  if ! ldconfig -p 2>/dev/null | grep -q "$lib"; then
    case "$lib" in
      libEGL.so.1) packages+=(libegl1) ;;
      libxkbcommon.so.0) packages+=(libxkbcommon0) ;;
      libfontconfig.so.1) packages+=(libfontconfig1) ;;
      libGL.so.1) packages+=(libgl1) ;;
      libdbus-1.so.3) packages+=(libdbus-1-3) ;;
      libxcb-cursor.so.0) packages+=(libxcb-cursor0) ;;
      libxcb-icccm.so.4) packages+=(libxcb-icccm4) ;;
      libxcb-keysyms.so.1) packages+=(libxcb-keysyms1) ;;
    esac
  fi
done
redis_answers() { command -v redis-cli >/dev/null 2>&1 && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
if ! command -v redis-server >/dev/null 2>&1; then
  packages+=(redis-server)
fi

if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing ${packages[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  else
    echo "system-deps: missing ${packages[*]}; install them with apt-get as root" >&2
    exit 1
  fi
fi

if ! redis_answers; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
fi
