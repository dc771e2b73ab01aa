#!/usr/bin/env bash
# Development entry point. Creates .venv/ beside this script (and for tests .venv-gradio4/) on first use
# (Python 3.11, CPU torch). Run it from any folder: relative paths are read from where you are.
#   run.sh cli  [ARGS]        talking-head video from a picture + audio (python -m sadtalker_ext)
#   run.sh app  [ARGS]        standalone gradio app on 127.0.0.1
#   run.sh download [ARGS]    fetch the official weights (python -m sadtalker_ext.download)
#   run.sh test [ARGS]        ruff check + ruff format --check, the test suite (pytest, in the repository),
#                             then tests/webui under gradio 4
#   run.sh test-gradio4 [ARGS]    only the gradio-4 pass (default tests/webui)
#   run.sh setup              only (re)install the environments (.venv and .venv-gradio4)
# SADTALKER_VENV / SADTALKER_VENV_GRADIO4 choose other environment folders, PYTHON the interpreter.

set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${SADTALKER_VENV:-$here/.venv}"
# Forge's gradio 4 line (requirements-gradio4.txt): the WebUI tests run a second time there
venv4="${SADTALKER_VENV_GRADIO4:-$here/.venv-gradio4}"
py="${PYTHON:-python3.11}"

# make_venv DIR REQUIREMENTS: (re)install DIR when the requirement files changed since its last install
make_venv() {
  local dir="$1" reqs="$2" stamp="$1/.installed" want
  want="$(cat "$here/requirements.txt" "$here/$reqs" | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  if ! command -v "$py" >/dev/null 2>&1; then
    echo "run.sh: $py not found; set PYTHON to a Python 3.10/3.11 interpreter" >&2; exit 2
  fi
  [ -x "$dir/bin/python" ] || "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0
  "$dir/bin/python" -m pip install -q --disable-pip-version-check -r "$here/$reqs"
  echo "$want" > "$stamp"
}
setup() { make_venv "$venv" requirements-ci.txt; }
setup_gradio4() { make_venv "$venv4" requirements-gradio4.txt; }

# test_gradio4 [ARGS]: pytest under .venv-gradio4 on tests/webui (or on the given paths inside it)
test_gradio4() {
  local a p rp root any_path=0 opts=() paths=()
  root="$(pwd -P)"
  for a in "$@"; do
    p="${a%%::*}"
    if [[ "$a" != -* && -e "$p" ]]; then
      any_path=1
      rp="$(realpath "$p")"
      case "$rp/" in
        "$root/tests/webui/"*) paths+=("$a") ;;                      # inside tests/webui
        *) case "$root/tests/webui/" in "$rp/"*) paths+=("tests/webui") ;; esac ;;  # a folder above it
      esac
    else
      opts+=("$a")
    fi
  done
  [ "$any_path" = 0 ] && paths=(tests/webui)
  if [ "${#paths[@]}" = 0 ]; then
    echo "run.sh: no tests/webui path given: gradio 4 pass not needed" >&2; return 0
  fi
  echo "run.sh: gradio 4 pass: ${paths[*]} under $("$venv4/bin/python" -c 'import gradio; print("gradio", gradio.__version__)') ($venv4)" >&2
  "$venv4/bin/python" -m pytest "${opts[@]}" "${paths[@]}"
}

# The tests most exposed to float rounding (split vs whole, batched vs one by one, parity with recorded
# draws), run once more with torch's scalar kernels: another CPU picks other kernels than this one.
kernel_tests=(
  tests/test_render_loading.py::test_split_path_equals_forward_and_broadcasts
  tests/test_enhance.py::test_stored_noise_when_seed_is_none
  tests/test_enhance.py::test_pixel_path_equals_gfpganer_math
  tests/test_enhance.py::test_batching_equals_one_by_one
  tests/test_motion_parity.py::test_noise_generator_reproduces_recorded_draws
  tests/test_enhance_parity.py::test_seeded_noise_mode_is_repeatable_and_separate
  tests/test_motion_units.py::test_expression_frames_independent_of_chunking
)
# test_kernels [ARGS]: that pass, after a whole-suite run only (no ARGS)
test_kernels() {
  [ $# -eq 0 ] || return 0
  echo "run.sh: scalar-kernel pass (ATEN_CPU_CAPABILITY=default): ${#kernel_tests[@]} tests" >&2
  ATEN_CPU_CAPABILITY=default "$venv/bin/python" -m pytest -q "${kernel_tests[@]}"
}

cmd="${1:-}"; [ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup; setup_gradio4 ;;
  # the caller's folder stays the working folder (relative paths, ./results); the package comes from here;
  # SADTALKER_RUN_SH lets messages say `run.sh download ...` (what works from any folder)
  cli) setup; SADTALKER_RUN_SH="$here/run.sh" PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$venv/bin/python" -m sadtalker_ext "$@" ;;
  app) setup; SADTALKER_RUN_SH="$here/run.sh" PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$venv/bin/python" -m sadtalker_ext.app "$@" ;;
  download) setup; SADTALKER_RUN_SH="$here/run.sh" PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$venv/bin/python" -m sadtalker_ext.download "$@" ;;
  test)
    setup; setup_gradio4
    cd "$here"  # test paths are relative to the repository
    # lint first (whole tree, config in pyproject.toml): a finding fails the run before any test starts
    "$venv/bin/ruff" check . && "$venv/bin/ruff" format --check . \
      || { echo "run.sh: ruff failed (fix: $venv/bin/ruff check --fix . && $venv/bin/ruff format .)" >&2; exit 1; }
    rc=0; "$venv/bin/python" -m pytest "$@" || rc=$?
    rck=0; test_kernels "$@" || rck=$?
    rc4=0; test_gradio4 "$@" || rc4=$?
    [ "$rc" -ne 0 ] && echo "run.sh: pytest failed (exit $rc)" >&2
    [ "$rck" -ne 0 ] && echo "run.sh: scalar-kernel pass failed (exit $rck)" >&2
    [ "$rc4" -ne 0 ] && echo "run.sh: gradio 4 pass failed (exit $rc4)" >&2
    [ "$rc" -ne 0 ] && exit "$rc"
    [ "$rck" -ne 0 ] && exit "$rck"
    exit "$rc4" ;;
  test-gradio4) setup_gradio4; cd "$here"; test_gradio4 "$@" ;;
  *) # usage: the comment block at the top of this file
    [ -n "$cmd" ] && echo "run.sh: unknown command '$cmd'" >&2
    sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 2 ;;
esac
