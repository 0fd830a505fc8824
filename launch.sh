#!/usr/bin/env bash
# commsim's two commands, and the local launchers.
#   ./launch.sh            the main job on its built-in defaults
#   ./launch.sh test       the test suite
#   ./launch.sh bench ...      `commsim bench ...` on NPROC local ranks (default 4) under torchrun
#   ./launch.sh bench-mpi ...  the same with --backend mpi under the environment's mpirun
#   ./launch.sh calibrate ...  `commsim calibrate ...` on NPROC local ranks under torchrun
#   ./launch.sh calibrate-mpi ...  the same with --backend mpi under mpirun
#   ./launch.sh ddp ...        `commsim ddp ...` on NPROC local ranks under torchrun; with
#                              --scaling 1,2,4 one process that runs each world size itself
#   ./launch.sh ARGS...    `commsim ARGS...` inside the project's virtual environment
# The first call creates .venv and installs the project with the extras a local run
# needs (torch pinned to its CPU wheel by constraints.txt); later calls reuse it and
# reinstall only when pyproject.toml or constraints.txt changed. Paths in ARGS are the
# caller's: nothing here changes the working folder (but `test`, which runs the
# repository's tests from the repository).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

VENV=${COMMSIM_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
EXTRAS=${COMMSIM_EXTRAS:-torch,mpi,plot,dev}

setup() {
    local stamp="$VENV/.commsim-installed"
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] \
        && [ "$stamp" -nt "$ROOT/pyproject.toml" ] && [ "$stamp" -nt "$ROOT/constraints.txt" ]; then
        return 0
    fi
    echo "launch.sh: setting up $VENV (extras: $EXTRAS)" >&2
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c "$ROOT/constraints.txt" -e "$ROOT[$EXTRAS]" >&2
    touch "$stamp"
}

# OpenMPI refuses to run as root without these; harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

NPROC=${NPROC:-4}

# check VERB ARGS...: parse and validate the flags in one process, so that a typo is one
# line and exit 2, not one error per rank and the launcher's traceback
check() {
    RANK=0 WORLD_SIZE=$NPROC LOCAL_RANK=0 LOCAL_WORLD_SIZE=$NPROC \
        "$VENV/bin/python" -m commsim "$1" --check-flags "${@:2}"
}

# filtered LAUNCHER CMD...: CMD with its stderr through commsim/bench/launchlog.py, which
# keeps the ranks' lines but drops the launcher's traceback and notices when a rank fails,
# so that one line says why (docs/reliability.md). The exit code is CMD's, or the ranks'
# when they said it: 3 a rank died or stopped answering, 130 Ctrl-C.
filtered() {
    local launcher=$1 codes json= prev=
    shift
    for json in "$@"; do  # the --json file, for the line that says where the rows are
        case "$prev" in --json) break ;; esac
        case "$json" in --json=*) json=${json#--json=}; break ;; esac
        prev=$json json=
    done
    exec 3>&1
    set +e
    "$@" 2>&1 1>&3 3>&- | "$VENV/bin/python" -I "$ROOT/commsim/bench/launchlog.py" \
        "$launcher" "$json" >&2 3>&-
    codes=("${PIPESTATUS[@]}")
    set -e
    exec 3>&-
    if [ "${codes[0]}" -ne 0 ] && [ "${codes[1]}" -ne 0 ]; then
        return "${codes[1]}"
    fi
    return "${codes[0]}"
}

# run_torch VERB ARGS...: `commsim VERB ARGS...` on NPROC local ranks under torchrun
run_torch() {
    check "$@"
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} filtered torchrun "$VENV/bin/torchrun" \
        --standalone --nproc-per-node "$NPROC" -m commsim "$@"
}

# run_mpi VERB ARGS...: the same with --backend mpi under the environment's mpirun
run_mpi() {
    local verb=$1 extra=()
    shift
    check "$verb" --backend mpi "$@"
    [ "$NPROC" -gt "$(nproc)" ] && extra=(--oversubscribe)
    # one host: the ranks talk through shared memory and open no TCP port (unless the
    # user chose the transports: OMPI_MCA_btl)
    OMPI_MCA_btl=${OMPI_MCA_btl:-^tcp} \
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} filtered mpirun "$VENV/bin/mpirun" -n "$NPROC" \
        "${extra[@]}" "$VENV/bin/python" -m commsim "$verb" --backend mpi "$@"
}

# run_ddp ARGS...: `commsim ddp ARGS...` on NPROC local ranks under torchrun; with --scaling,
# one process that launches a torchrun per world size itself
run_ddp() {
    local arg
    for arg in "$@"; do
        case "$arg" in
            --scaling|--scaling=*)
                check ddp "$@"
                OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$VENV/bin/python" -m commsim ddp "$@"
                return ;;
        esac
    done
    run_torch ddp "$@"
}

# The quickstart: this machine calibrated (once: the profile is cached per host, backend
# and rank count), a local 4-rank allreduce benchmark measured beside the predictions
# made from that profile, and the comparison report.
main_job() {
    local stamp out report profile
    stamp=$(date +%Y%m%d-%H%M%S)
    out="results/bench-$stamp.jsonl"
    report="results/compare-$stamp.html"
    # to 64 MiB, the benchmark's largest: to 16 MiB the bandwidth's slope takes in mid
    # sizes, and predicted a 64 MiB ring 15% slower (docs/calibrate.md), for 1 s less
    profile=$(NPROC=4 run_torch calibrate --reuse | tail -n 1)
    NPROC=4 run_torch bench --profile "$profile" --collective allreduce \
        --algorithm native,ring,tree --place in -b 1K -e 64M -f 4 -n 5 -w 2 --json "$out"
    "$VENV/bin/commsim" compare "$out" --report "$report" --summary
    echo "profile: $profile"
    echo "report: $report"
    echo "$out"
}

setup
export PATH="$VENV/bin:$PATH"
case "${1:-}" in
    "")   main_job ;;
    test) shift; cd "$ROOT" && exec "$VENV/bin/python" -m pytest "$@" ;;
    bench) shift; run_torch bench "$@" ;;
    bench-mpi) shift; run_mpi bench "$@" ;;
    calibrate) shift; run_torch calibrate "$@" ;;
    calibrate-mpi) shift; run_mpi calibrate "$@" ;;
    ddp) shift; run_ddp "$@" ;;
    *)    exec "$VENV/bin/commsim" "$@" ;;
esac
