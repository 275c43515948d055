#!/usr/bin/env bash
# Writes a binary's --help as a plain man-style text page on standard output, for
# $(PREFIX)/share/doc/spool/ (make install):  deploy/helpdoc.sh build/bin/spool-server
set -euo pipefail

bin=${1:?usage: helpdoc.sh BINARY}
name=$(basename "$bin")
help=$("$bin" --help)
version=$("$bin" --version 2>/dev/null || echo "$name")
upper=$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')
# The first paragraph after the usage line says what the program is.
summary=$(printf '%s\n' "$help" | awk 'NR > 1 && NF { print; exit }')

printf '%s(1)\t\t\t%s\t\t\t%s(1)\n\n' "$upper" "$version" "$upper"
printf 'NAME\n       %s - %s\n\n' "$name" "$summary"
printf 'SYNOPSIS\n       %s\n\n' "$(printf '%s\n' "$help" | head -n 1 | sed 's/^[Uu]sage: *//')"
printf 'DESCRIPTION\n'
printf '%s\n' "$help" | sed 's/^/       /; s/^ *$//'
printf '\nSEE ALSO\n       spool-server(1), spool-worker(1), spool(1); docs/API.md, docs/OPERATIONS.md\n'
