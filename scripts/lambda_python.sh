#!/bin/sh
# Prints the folder of a python3.12 with pip: the Lambda runtime's Python (template.yaml), which `sam build` runs
# from PATH to build python3.12 functions and layers ("Binary validation failed" without it). Without one, says in
# one line how to get one and fails. The Makefile's `build` puts the folder first on PATH.
#
# SAM's documented alternative, building in a Lambda-like container (`sam build --use-container`), needs Docker.
set -u
version=3.12

works() {
    [ -n "$1" ] && [ -x "$1" ] && "$1" -c "import sys, pip; assert '%d.%d' % sys.version_info[:2] == '$version'" >/dev/null 2>&1
}

on_path=$(command -v "python$version" 2>/dev/null || true)
if works "$on_path"; then
    dirname "$on_path"
    exit 0
fi
# pyenv and uv install it without making it the python3.12 on PATH (pyenv's shim then fails): use the install.
for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/"python$version" \
                 "$HOME"/.local/share/uv/python/cpython-"$version".*/bin/"python$version"; do
    if works "$candidate"; then
        dirname "$candidate"
        exit 0
    fi
done
echo "make build: sam build needs python$version with pip (the Lambda runtime's Python) and found none; install it (pyenv install $version, uv python install $version, or your system's python$version and python3-pip packages), then run make build again." >&2
exit 1
