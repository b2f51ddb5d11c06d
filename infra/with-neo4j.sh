#!/usr/bin/env bash
# Run a command beside a throwaway Neo4j server: start it (data in a temporary folder, a free port),
# export NEO4J_URI, run the command, stop the server and delete its data whatever the command's outcome.
#   infra/with-neo4j.sh PYTHON COMMAND [ARGS...]
set -euo pipefail
python=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
home=$(mktemp -d "${TMPDIR:-/tmp}/mnemoflow-neo4j.XXXXXX")
cleanup() {
    "$python" "$here/neo4j/neo4jctl.py" stop --home "$home" >/dev/null 2>&1 || true
    rm -rf "$home"
}
trap cleanup EXIT INT TERM
unset NEO4J_PASSWORD
NEO4J_URI=$("$python" "$here/neo4j/neo4jctl.py" start --home "$home" --port 0 --timeout 300)
export NEO4J_URI
echo "with-neo4j: Neo4j at $NEO4J_URI (data in $home)" >&2
"$@"
