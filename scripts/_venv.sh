# Sourced by scripts/*: create .venv and install the project with the given
# extras, skipping the install when pyproject.toml has not changed since.
ensure_venv() {
  local extras=$1 py=${PYTHON:-python3} stamp
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  stamp=".venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)-${extras//,/-}"
  if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip 2>/dev/null >/dev/null
    .venv/bin/python -m pip install -q -e ".[${extras}]" 2>&1 | grep -vE "^WARNING: Location|^\s*$" || true
    .venv/bin/python -c "import celery_durable" && touch "$stamp"
  fi
}
