# Sourced by the recipe scripts. stage DIR DONE_FILE CMD...: run CMD --out DIR; skipped when
# DIR/DONE_FILE exists, resumed when DIR holds an interrupted run. With `set -e` in the caller,
# the first failing stage stops the script; re-running it redoes nothing that finished.
stage() {
    local dir=$1 done=$2; shift 2
    if [ -e "$dir/$done" ]; then echo "== $dir: done, skipped" >&2; return; fi
    local resume=()
    if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then resume=(--resume); fi
    echo "== $dir: $*" >&2
    "$@" --out "$dir" "${resume[@]}"
}
