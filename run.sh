#!/usr/bin/env bash
# ftcp's entry point, as root:
#   ./run.sh demo     set everything up, run the lab demo
#   ./run.sh test     set everything up, lint, run the whole test suite (unit + integration)
#   ./run.sh lint     set everything up, run the lint only (ruff, pyproject.toml [tool.ruff])
#   ./run.sh setup    only set up
#   ./run.sh lab ...  the lab runner (python -m topology ...), e.g. ./run.sh lab run --service echo
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
cmd="${1:-}"
[ $# -gt 0 ] && shift
lint() {
    # A finding fails the run before any test starts. `./run.sh lint --fix` fixes what
    # ruff can fix by itself; other arguments go to `ruff check` too.
    echo "run.sh: lint (ruff check)"
    .venv/bin/ruff check --no-cache "$@" . || { echo "run.sh: the lint failed" >&2; return 1; }
}
case "$cmd" in
    setup) exec scripts/setup.sh ;;
    demo)  scripts/setup.sh; exec .venv/bin/python -m topology demo "$@" ;;
    lab)   scripts/setup.sh >/dev/null; exec .venv/bin/python -m topology "$@" ;;
    lint)  scripts/setup.sh >/dev/null; lint "$@" ;;
    test)
        scripts/setup.sh
        lint
        set +e
        .venv/bin/python -m pytest -v -p no:cacheprovider tests "$@"
        rc=$?
        # pytest exits 5 when it collected nothing: that is a failure here.
        [ $rc -eq 5 ] && echo "run.sh: no tests were collected" >&2
        exit $rc ;;
    *) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
