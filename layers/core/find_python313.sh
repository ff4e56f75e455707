#!/bin/sh
# Prints the path of a Python 3.13 interpreter (the Lambda runtime's version), for compiling the
# layer's .pyc files; exits 1 with a message when there is none. Looked for, in order:
#   $PYTHON313, python3.13 on PATH, uv's managed Pythons, pyenv's versions (even when not selected).
is_313() {
    [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1
}
for candidate in "${PYTHON313:-}" "$(command -v python3.13 2>/dev/null)"; do
    if is_313 "$candidate"; then echo "$candidate"; exit 0; fi
done
if command -v uv >/dev/null 2>&1; then
    candidate="$(uv python find 3.13 2>/dev/null)"
    if is_313 "$candidate"; then echo "$candidate"; exit 0; fi
fi
root="${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}"
for candidate in "$root"/versions/3.13*/bin/python3.13; do
    if is_313 "$candidate"; then echo "$candidate"; exit 0; fi
done
echo "No Python 3.13 found to compile the layer's .pyc files for the python3.13 runtime." >&2
echo "Install one (e.g. 'pyenv install 3.13' or 'uv python install 3.13'), put python3.13 on PATH," >&2
echo "or set PYTHON313=/path/to/python3.13." >&2
exit 1
