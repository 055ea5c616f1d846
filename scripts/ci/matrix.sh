#!/usr/bin/env bash
# The version matrix (`make test-matrix`): besides the locked .venv, build with uv
#   floor   every floor that pyproject.toml declares, pinned with == all at once
#           (scripts/ci/matrix_versions.py pins), plus the caps in scripts/ci/floor-constraints.txt;
#   latest  a fresh resolution without uv.lock: today's newest releases;
# install the package (editable, [all]) and the test tools into each, then run tests/unit and the
# smoke set tests/smoke in it. Prints the versions table and the time of each step; exits 1 when
# an environment does not resolve or its tests fail (every environment is still tried).
#
# Usage: scripts/ci/matrix.sh [floor] [latest]        (default: both)
# Env:   UV (.tools/bin/uv), PYTHON (python3.11), MATRIX_DIR (build/matrix, git-ignored),
#        MATRIX_UNIT_ARGS (tests/unit -n 2), MATRIX_PYTEST_ARGS (tests/smoke), MLOPS_REQUIRE_DOCKER (as for make test).
#
# Every uv call passes --no-config: from the repository root `uv pip install` would otherwise read
# pyproject.toml's [tool.uv] constraint-dependencies (apache-airflow==3.3.2, the dev env's pin)
# and neither the floor nor a fresh resolution would be what they claim.
set -euo pipefail
cd "$(dirname "$0")/../.."

UV=${UV:-.tools/bin/uv}
PYTHON=${PYTHON:-python3.11}
DIR=${MATRIX_DIR:-build/matrix}
# Two pytest runs per env: the unit tests on every core (pytest-xdist), then the smoke set, which
# starts real services, in one process. MATRIX_PYTEST_ARGS replaces both with one run.
read -r -a UNIT_ARGS <<<"${MATRIX_UNIT_ARGS:-tests/unit -n ${PYTEST_WORKERS:-2}}"
read -r -a PYTEST_ARGS <<<"${MATRIX_PYTEST_ARGS:-tests/smoke}"
[ -z "${MATRIX_PYTEST_ARGS:-}" ] || UNIT_ARGS=()
# The test tools, as in pyproject's dev group (redis: tests/unit/feast uses its exception types).
TEST_TOOLS=("pytest>=8.0" "pytest-timeout>=2.3" "pytest-xdist>=3.5" "redis>=5.0")
ENVS=("$@")
[ ${#ENVS[@]} -gt 0 ] || ENVS=(floor latest)

[ -x "$UV" ] || { echo "matrix: $UV not found (run make env first)" >&2; exit 2; }
for env in "${ENVS[@]}"; do
    case "$env" in floor | latest) ;; *) echo "matrix: unknown environment '$env' (floor, latest)" >&2; exit 2 ;; esac
done
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
declare -A BUILD_S TEST_S RESULT
failed=0

# install ENV VENV: resolve and install into VENV; on failure print uv's reasons and return 1.
install() {
    local env=$1 venv=$2 log="$DIR/$1.install.log"
    local args=(--no-config --compile-bytecode -p "$venv" -e ".[all]" "${TEST_TOOLS[@]}")
    if [ "$env" = floor ]; then
        "$PYTHON" scripts/ci/matrix_versions.py pins >"$DIR/floor-pins.txt" || return 1
        args+=(-c "$DIR/floor-pins.txt" -c scripts/ci/floor-constraints.txt)
        echo "::: matrix floor: pins $(tr '\n' ' ' <"$DIR/floor-pins.txt")"
    fi
    if ! "$UV" pip install "${args[@]}" >"$log" 2>&1; then
        echo "::: matrix $env: FAILED, the environment does not resolve or install. uv says:" >&2
        grep -v '^ [-+~] ' "$log" | tail -40 >&2
        if [ "$env" = floor ]; then
            echo "::: a declared floor cannot be installed with the others: raise it in pyproject.toml, or cap" \
                "the transitive dependency that breaks it in scripts/ci/floor-constraints.txt" >&2
        fi
        return 1
    fi
    grep -E '^(Resolved|Prepared|Installed)' "$log" | sed "s/^/::: matrix $env: /"
}

# newest: the newest release of each direct dependency on the index, where the latest env has
# an older one, and the resolver's reason (informational: the env is still tested as resolved).
newest() {
    local venv=$1 names line name version
    names=$("$PYTHON" scripts/ci/matrix_versions.py pins | sed 's/==.*//')
    # shellcheck disable=SC2086
    "$UV" pip install --no-config --dry-run --no-deps --upgrade -p "$venv" $names 2>&1 |
        sed -n 's/^ + \([^=]*\)==\(.*\)$/\1 \2/p' >"$DIR/latest.newer.txt" || true
    "$PYTHON" -c 'import json, sys; print(json.dumps(dict(l.split() for l in open(sys.argv[1]) if l.strip())))' \
        "$DIR/latest.newer.txt" >"$DIR/latest.newest.json"
    while read -r name version; do
        [ -n "$name" ] || continue
        echo "::: matrix latest: NOTE $name $version is on the index but does not install with the rest:"
        "$UV" pip install --no-config --dry-run -p "$venv" -e ".[all]" "${TEST_TOOLS[@]}" "$name==$version" 2>&1 |
            grep -E '^\s*(cause|hint|And because|error)' | sed 's/^/:::     /' || true
    done <"$DIR/latest.newer.txt"
}

for env in "${ENVS[@]}"; do
    venv="$DIR/$env"
    echo "::: matrix $env: building $venv"
    start=$(date +%s)
    rm -rf "$venv" "$DIR/$env.versions.json" "$DIR/$env.newest.json"
    "$UV" venv --no-config -q -p "$PYTHON" "$venv"
    if ! install "$env" "$venv"; then
        BUILD_S[$env]=$(($(date +%s) - start)) TEST_S[$env]=0 RESULT[$env]="does not resolve"
        failed=1
        continue
    fi
    "$venv/bin/python" scripts/ci/matrix_versions.py record >"$DIR/$env.versions.json"
    if [ "$env" = floor ] && ! "$PYTHON" scripts/ci/matrix_versions.py check "$DIR/floor.versions.json"; then
        BUILD_S[$env]=$(($(date +%s) - start)) TEST_S[$env]=0 RESULT[$env]="not at the floors"
        failed=1
        continue
    fi
    if [ "$env" = latest ]; then newest "$venv"; fi
    BUILD_S[$env]=$(($(date +%s) - start))
    echo "::: matrix $env: built in ${BUILD_S[$env]}s; running pytest ${UNIT_ARGS[*]:-}, then ${PYTEST_ARGS[*]}"
    start=$(date +%s)
    run_pytest() { env -u VIRTUAL_ENV PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest "$@" -q -p no:cacheprovider; }
    if { [ ${#UNIT_ARGS[@]} -eq 0 ] || run_pytest "${UNIT_ARGS[@]}"; } && run_pytest "${PYTEST_ARGS[@]}"; then
        RESULT[$env]=passed
    else
        RESULT[$env]="tests FAILED"
        failed=1
    fi
    TEST_S[$env]=$(($(date +%s) - start))
done

if [ -x .venv/bin/python ]; then .venv/bin/python scripts/ci/matrix_versions.py record >"$DIR/locked.versions.json"; fi
BUILT=()
for env in "${ENVS[@]}"; do [ -s "$DIR/$env.versions.json" ] && BUILT+=("$env"); done
if [ ${#BUILT[@]} -gt 0 ]; then
    echo "::: matrix: versions installed (declared floor, each env, newest on the index, locked .venv)"
    "$PYTHON" scripts/ci/matrix_versions.py table "$DIR" "${BUILT[@]}"
fi
echo "::: matrix: summary"
for env in "${ENVS[@]}"; do
    printf '::: matrix %-6s %-17s build %4ss  tests %4ss\n' "$env" "${RESULT[$env]}" "${BUILD_S[$env]}" "${TEST_S[$env]}"
done
exit "$failed"
