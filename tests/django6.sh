#!/bin/sh
# Run the Django test files under Django 6 (its built-in django.tasks), which needs Python
# 3.12 or later, in a venv of their own (.venv-django6, kept between runs). The project's
# own venv tests Django 5.2 LTS + the django-tasks backport (Python 3.11).
#
# The interpreter: $DJANGO6_PYTHON, else the first python3.14/3.13/3.12 on PATH that runs,
# else the newest pyenv version >= 3.12. None: the run is skipped with a message (not an
# error), so machines without such a Python still pass `make test`.
set -eu
cd "$(dirname "$0")/.."
VENV=.venv-django6
new_enough='import sys; sys.exit(sys.version_info < (3, 12))'

find_python() {
    if [ -n "${DJANGO6_PYTHON:-}" ]; then echo "$DJANGO6_PYTHON"; return; fi
    for candidate in python3.14 python3.13 python3.12; do
        if "$candidate" -c "$new_enough" >/dev/null 2>&1; then command -v "$candidate"; return; fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        for version in $(pyenv versions --bare 2>/dev/null | sort -rV); do
            candidate="$(pyenv prefix "$version" 2>/dev/null)/bin/python"
            if [ -x "$candidate" ] && "$candidate" -c "$new_enough" >/dev/null 2>&1; then
                echo "$candidate"; return
            fi
        done
    fi
}

if [ ! -f "$VENV/.installed-stamp" ] || [ pyproject.toml -nt "$VENV/.installed-stamp" ]; then
    python="$(find_python)"
    if [ -z "$python" ]; then
        echo "django6: no Python 3.12+ found (set DJANGO6_PYTHON): Django 6 tests skipped"
        exit 0
    fi
    echo "django6: making $VENV with $python"
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e '.[django,postgres,fastapi,cli]' \
        'django>=6' pytest pytest-xdist pytest-timeout httpx
    touch "$VENV/.installed-stamp"
fi
"$VENV/bin/python" -c 'import django; print(f"django6: Django {django.__version__}")'
exec "$VENV/bin/python" -m pytest -n 2 -q -p no:cacheprovider tests/test_django.py tests/test_django_e2e.py
