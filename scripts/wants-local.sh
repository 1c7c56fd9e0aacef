#!/usr/bin/env bash
# Decide whether `make install` builds the local model backend (llama-cpp-python).
#
# Usage: scripts/wants-local.sh [--why] [ENV_FILE]   (ENV_FILE defaults to .env)
#
# Prints "yes" or "no" (with --why: one sentence saying why instead). The rule is chinwag's
# own choice of backend: LLM_BACKEND=local -> yes; LLM_BACKEND=openai -> no; otherwise no
# when OPENAI_API_KEY or OPENAI_BASE_URL is set (an API backend), else yes (the bundled
# model). As in chinwag, the environment wins over ENV_FILE, an empty value counts as unset,
# and names are case-insensitive.
set -uo pipefail

WHY=0
if [[ "${1:-}" == "--why" ]]; then
    WHY=1
    shift
fi
ENV_FILE="${1:-.env}"

# The value of setting $1 in the environment ("" when unset or empty).
from_environment() {
    local name
    for name in $(compgen -e); do
        if [[ "${name^^}" == "$1" && -n "${!name}" ]]; then
            printf '%s' "${!name}"
            return
        fi
    done
}

# The value of setting $1 in ENV_FILE, dotenv style (the last assignment wins).
from_file() {
    [[ -f "$ENV_FILE" ]] || return 0
    local line key value found=""
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line#"${line%%[![:space:]]*}"}"
        [[ -z "$line" || "$line" == \#* || "$line" != *=* ]] && continue
        line="${line#export }"
        key="${line%%=*}"
        key="${key%"${key##*[![:space:]]}"}"
        [[ "${key^^}" == "$1" ]] || continue
        value="${line#*=}"
        value="${value#"${value%%[![:space:]]*}"}"
        if [[ "$value" == \"*\"* ]]; then
            value="${value#\"}"
            value="${value%%\"*}"
        elif [[ "$value" == \'*\'* ]]; then
            value="${value#\'}"
            value="${value%%\'*}"
        elif [[ "$value" == \#* ]]; then
            value=""  # only a comment after the "="
        else
            value="${value%%[[:space:]]#*}"
            value="${value%"${value##*[![:space:]]}"}"
        fi
        found="$value"
    done <"$ENV_FILE"
    printf '%s' "$found"
}

# "VALUE<TAB>WHERE" for setting $1, or nothing when it is unset everywhere.
setting() {
    local value
    value="$(from_environment "$1")"
    if [[ -n "$value" ]]; then
        printf '%s\t%s' "$value" "the environment"
        return
    fi
    value="$(from_file "$1")"
    [[ -n "$value" ]] && printf '%s\t%s' "$value" "$ENV_FILE"
}

answer() {
    if ((WHY)); then echo "$2"; else echo "$1"; fi
    exit 0
}

backend="$(setting LLM_BACKEND)"
case "${backend%%$'\t'*}" in
    local) answer yes "LLM_BACKEND=local (${backend#*$'\t'}): building the local model backend" ;;
    openai) answer no "LLM_BACKEND=openai (${backend#*$'\t'})" ;;
esac
for name in OPENAI_API_KEY OPENAI_BASE_URL; do
    found="$(setting "$name")"
    if [[ -n "$found" ]]; then
        answer no "$name is set (${found#*$'\t'}): an API backend"
    fi
done
answer yes "no API backend is configured (OPENAI_API_KEY, OPENAI_BASE_URL): the bundled local model"
