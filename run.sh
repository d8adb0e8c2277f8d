#!/usr/bin/env bash
# ftcp's entry point, as root:
#   ./run.sh demo     set everything up, run the lab demo
#   ./run.sh test     set everything up, run the whole test suite (unit + integration)
#   ./run.sh setup    only set up
#   ./run.sh lab ...  the lab runner (python -m topology ...), e.g. ./run.sh lab run --service echo
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    setup) exec scripts/setup.sh ;;
    demo)  scripts/setup.sh; exec .venv/bin/python -m topology demo "$@" ;;
    lab)   scripts/setup.sh >/dev/null; exec .venv/bin/python -m topology "$@" ;;
    test)
        scripts/setup.sh
        set +e
        .venv/bin/python -m pytest -v -p no:cacheprovider tests "$@"
        rc=$?
        # pytest exits 5 when it collected nothing: that is a failure here.
        [ $rc -eq 5 ] && echo "run.sh: no tests were collected" >&2
        exit $rc ;;
    *) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
