#!/usr/bin/env bash
# Create (or bring up to date) the project's virtual environment in .venv at the repository root.
# Safe to run again: it reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.obscast-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
  # torch is pinned exactly (torch==2.13.0); pip, not uv, so a local CPU wheel is found.
  .venv/bin/python -m pip install --quiet -e ".[osse,test]"
  echo "$want" > "$stamp"
fi
# Headless Chromium for the UI test (tests/test_ui.py): Debian's package, installed when missing
# and this runs as root with apt-get; otherwise say how to get it.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup.sh: chromium not found; the UI test needs it (as root: apt-get install -y chromium)" >&2
  fi
fi
