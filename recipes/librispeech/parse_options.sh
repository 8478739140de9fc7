#!/usr/bin/env bash
# Kaldi/icefall-style option parsing: turns `--foo-bar VALUE` into foo_bar=VALUE for every
# variable already defined by the calling script (source this file after the defaults).
# `--help` prints the script's header comment and the variables with their defaults.
while true; do
  [ -z "${1:-}" ] && break
  case "$1" in
    --help|-h)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
      echo "Options (current values):"
      # Only the variables defined before this file was sourced are options.
      grep -oE '^[a-z_][a-z0-9_]*=' "$0" | tr -d '=' | awk '!seen[$0]++' | while read -r __v; do
        if [ -n "${!__v+x}" ]; then printf '  --%s %s\n' "${__v//_/-}" "${!__v}"; fi
      done
      exit 0 ;;
    --*=*)
      echo "$0: options must be given as '--name value', not '$1'" >&2; exit 1 ;;
    --*)
      __name=$(echo "${1#--}" | tr '-' '_')
      if [ -z "${!__name+x}" ]; then
        echo "$0: unknown option $1 (see --help)" >&2; exit 1
      fi
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      printf -v "$__name" '%s' "$2"
      shift 2 ;;
    *) break ;;
  esac
done
true
