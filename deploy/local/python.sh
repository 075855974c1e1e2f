#!/usr/bin/env bash
# Prints the interpreter the project's virtualenv is built on: $PYTHON if set; else the
# distribution's /usr/bin/python3 when it is 3.11 or newer; else python3 on the PATH.
#
# Why the distribution's first: Debian builds its CPython with profile-guided and link-time
# optimisation, as the python:3.11-slim image of deploy/Dockerfile is built. A CPython built
# from source without --enable-optimizations (pyenv's default, first on this machine's PATH)
# cost the consumer ~10 % and the replay ~15 % more CPU, a pure-Python loop 1.45x the time
# (docs/performance.md, "The interpreter").
set -euo pipefail
if [[ -n "${PYTHON:-}" ]]; then
    echo "$PYTHON"
elif [[ -x /usr/bin/python3 ]] \
    && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo /usr/bin/python3
else
    echo python3
fi
