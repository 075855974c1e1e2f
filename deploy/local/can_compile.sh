#!/usr/bin/env bash
# Whether the core can be compiled with mypyc for the interpreter PYTHON (compile.sh): a C
# compiler and that interpreter's headers. Prints the Debian packages that are missing, one a
# line, and exits 1 if any is (.ci/run installs them; compile.sh falls back to interpreted).
#
# Usage: can_compile.sh PYTHON
set -euo pipefail
missing=0
if ! command -v cc >/dev/null; then
    echo gcc
    missing=1
fi
if ! "$1" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    echo python3-dev
    missing=1
fi
exit "$missing"
