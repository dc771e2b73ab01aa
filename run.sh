#!/usr/bin/env bash
# Development entry point. Creates ./.venv on first use (Python 3.11, CPU torch), then:
#   ./run.sh cli  [ARGS]   talking-head video from a picture + audio (python -m sadtalker_ext)
#   ./run.sh app  [ARGS]   standalone gradio app on 127.0.0.1
#   ./run.sh download [ARGS]   fetch the official weights (python -m sadtalker_ext.download)
#   ./run.sh test [ARGS]   the test suite (pytest)
#   ./run.sh setup         only (re)install the environment
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
venv="${SADTALKER_VENV:-$here/.venv}"
py="${PYTHON:-python3.11}"

setup() {
  local stamp="$venv/.installed" want
  want="$(cat requirements.txt requirements-ci.txt | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  if ! command -v "$py" >/dev/null 2>&1; then
    echo "run.sh: $py not found; set PYTHON to a Python 3.10/3.11 interpreter" >&2; exit 2
  fi
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements-ci.txt
  echo "$want" > "$stamp"
}

cmd="${1:-}"; [ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  cli) setup; exec "$venv/bin/python" -m sadtalker_ext "$@" ;;
  app) setup; exec "$venv/bin/python" -m sadtalker_ext.app "$@" ;;
  download) setup; exec "$venv/bin/python" -m sadtalker_ext.download "$@" ;;
  test) setup; exec "$venv/bin/python" -m pytest "$@" ;;
  *) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
