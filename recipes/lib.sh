# Sourced by the recipe scripts. stage DIR DONE_FILE CMD...: run CMD --out DIR; skipped when
# DIR/DONE_FILE exists, resumed when DIR holds an interrupted run. With `set -e` in the caller,
# the first failing stage stops the script; re-running it redoes nothing that finished.
# The scripts cd to the checkout first: there `make test` built .venv, whose catcli and python
# a plain `bash recipes/NAME.sh` uses when the caller's PATH has no catcli.
if ! command -v catcli >/dev/null 2>&1 && [ -x .venv/bin/catcli ]; then
    PATH="$PWD/.venv/bin:$PATH"
fi
stage() {
    local dir=$1 done=$2; shift 2
    if [ -e "$dir/$done" ]; then echo "== $dir: done, skipped" >&2; return; fi
    local resume=()
    if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then resume=(--resume); fi
    echo "== $dir: $*" >&2
    "$@" --out "$dir" "${resume[@]}"
}
