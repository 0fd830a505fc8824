#!/usr/bin/env bash
# commsim's two commands, and the local launchers.
#   ./launch.sh            the main job on its built-in defaults
#   ./launch.sh test       the test suite
#   ./launch.sh ARGS...    `commsim ARGS...` inside the project's virtual environment
# The first call creates .venv and installs the project with the extras a local run
# needs (torch pinned to its CPU wheel by constraints.txt); later calls reuse it and
# reinstall only when pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV=${COMMSIM_VENV:-.venv}
PY=${PYTHON:-python3}
EXTRAS=${COMMSIM_EXTRAS:-torch,mpi,plot,dev}

setup() {
    local stamp="$VENV/.commsim-installed"
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] \
        && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt constraints.txt ]; then
        return 0
    fi
    echo "launch.sh: setting up $VENV (extras: $EXTRAS)" >&2
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c constraints.txt -e ".[$EXTRAS]" >&2
    touch "$stamp"
}

# OpenMPI refuses to run as root without these; harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

main_job() {
    "$VENV/bin/commsim" predict --table
}

setup
export PATH="$PWD/$VENV/bin:$PATH"
case "${1:-}" in
    "")   main_job ;;
    test) shift; exec "$VENV/bin/python" -m pytest "$@" ;;
    *)    exec "$VENV/bin/commsim" "$@" ;;
esac
