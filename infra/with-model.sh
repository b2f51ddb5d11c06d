#!/usr/bin/env bash
# Run a command beside a throwaway local model server: start it (its home in a temporary folder, a free loopback
# port), export MNEMOFLOW_TEST_MODEL_HOME and MNEMOFLOW_TEST_MODEL_URL for the real-model tests, run the command,
# stop the server whatever the command's outcome. Without the server installed (`make model`) the command runs
# alone, and the real-model tests skip (or fail, with MNEMOFLOW_REQUIRE_MODEL=1).
#   infra/with-model.sh PYTHON COMMAND [ARGS...]
set -euo pipefail
python=$1; shift
home=$(mktemp -d "${TMPDIR:-/tmp}/mnemoflow-model.XXXXXX")
control() {
    MNEMOFLOW_LOCAL_SERVER_HOME="$home" "$python" -c "
import sys
from mnemoflow.llm.local_server import start_local_server, stop_local_server
from mnemoflow.settings import LocalServerSettings
if sys.argv[1] == 'start':
    print(start_local_server(LocalServerSettings()).base_url)
else:
    stop_local_server(LocalServerSettings().home)
" "$1"
}
cleanup() {
    control stop >/dev/null 2>&1 || true
    rm -rf "$home"
}
trap cleanup EXIT INT TERM
if url=$(control start); then
    export MNEMOFLOW_TEST_MODEL_HOME="$home" MNEMOFLOW_TEST_MODEL_URL="$url"
    echo "with-model: local model server at $url (log in $home)" >&2
else
    echo "with-model: no local model server (see above); the real-model tests will not run" >&2
fi
"$@"
