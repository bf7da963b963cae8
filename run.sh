#!/usr/bin/env bash
# One command per job, on a machine with nothing installed by hand:
#   ./run.sh demo [--out DIR ...]   set up, then run the node on the bundled frames over DDS
#   ./run.sh test [pytest args]     set up, then run the test suite (what CI runs); a test path runs just that
#   ./run.sh bench [args]           set up, then print forward / parser / node latency figures
#   ./run.sh bench-backends [args]  the same for every installed backend, side by side (torch, onnxruntime, ...)
#   ./run.sh lint                   set up, then ruff check (rules in ruff.toml; CI runs it too)
# Set-up is a virtual environment in .venv (HPR_VENV to change) with this package installed
# editable, its ROS 2 wheels (no ROS distro needed), the pinned PyTorch, ONNX Runtime and OpenVINO of
# constraints.txt, and human_parsing_msgs built into it with the ROS 2 interface toolchain from PyPI.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${HPR_VENV:-.venv}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[run.sh] creating $VENV" >&2
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.human_parsing_ros-installed"
  if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    echo "[run.sh] installing the package, PyTorch and the ROS 2 wheels into $VENV (first time: a few minutes)" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" >&2 || true
    "$VENV/bin/python" -m pip install -q -c constraints.txt -e '.[ros,train,test,onnxruntime,openvino,msgs-build]' 2>&1 | grep -v "is ignored" >&2 || true
    build_msgs  # the node imports the typed messages
    "$VENV/bin/python" -c "import human_parsing_ros.ros.node, torch, torchvision" # fails loudly if the install did
    touch "$stamp"
  fi
  build_msgs  # again whenever a .msg file changed (a no-op otherwise)
}

# human_parsing_msgs (the typed messages) built by pip with the ROS 2 interface toolchain from PyPI (extra
# msgs-build) against the environment's own ROS wheels (no build isolation: the generated code is tied to their
# exact versions); again whenever a .msg file, its CMake or its pyproject changes.
build_msgs() {
  local stamp="$VENV/.human_parsing_msgs-built" log="$VENV/human_parsing_msgs-build.log"
  if [ -f "$stamp" ] && [ -z "$(find human_parsing_msgs -newer "$stamp" -type f | head -1)" ]; then
    return
  fi
  echo "[run.sh] building human_parsing_msgs into $VENV (under a minute)" >&2
  if ! "$VENV/bin/pip" install --no-build-isolation -c constraints.txt ./human_parsing_msgs > "$log" 2>&1; then
    echo "[run.sh] building human_parsing_msgs failed; the log: $log" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  "$VENV/bin/python" -c "import human_parsing_msgs.msg"  # fails loudly if the build did not install it
  touch "$stamp"
}

job=${1:-}
[ $# -gt 0 ] && shift
case "$job" in
  demo)  setup; exec "$VENV/bin/human_parsing_demo" "$@" ;;
  test)  # with a test path among the arguments pytest runs just that; otherwise the whole suite
    setup
    for arg in "$@"; do
      case "$arg" in test|test/*|./test/*) exec "$VENV/bin/python" -m pytest "$@" ;; esac
    done
    # the whole suite on HPR_TEST_WORKERS processes (default 2: many tests wait on subprocesses and DDS)
    exec "$VENV/bin/python" -m pytest test -n "${HPR_TEST_WORKERS:-2}" --dist worksteal "$@" ;;
  bench) setup; exec "$VENV/bin/python" benchmarks/bench_serving.py "$@" ;;
  bench-backends) setup; exec "$VENV/bin/python" benchmarks/bench_backends.py "$@" ;;
  lint)  setup; exec "$VENV/bin/ruff" check . "$@" ;;
  *) echo "usage: ./run.sh demo|test|bench|bench-backends|lint [args]" >&2; exit 2 ;;
esac
