#!/usr/bin/env bash
# Runs the commands that README.md and docs/*.md mark for CI, and checks the program output they quote, so
# the docs cannot rot. The convention (docs/ladder.md, "Docs that CI runs"):
#
#   ```sh                          A shell block whose first line is `# ci`: its commands run in one bash
#   # ci                           (set -euo pipefail) from a scratch folder that mirrors the repository,
#   ./build/autograd_basics        with build/ the build folder; a non-zero exit fails the check. Files
#   ```                            the commands write land in the scratch folder and are removed after.
#
#   ```sh                          `# ci-instead: CMD` lines at the top: the block's own commands take too
#   # ci-instead: ./build/x --quick    long for CI, which runs these in their place.
#   ./build/x
#   ```
#
#   ```sh                          Never run; the reason is required.
#   # ci: skip (needs PyTorch)
#   ```
#
#   <!-- ci-output -->             On the line before a ```text block: that block is the exact stdout of
#   ```text                        the last `# ci` block above it (trailing spaces aside); --update
#   ...                            rewrites it from a fresh run.
#   ```
#
#   <!-- ci-source: PATH -->       On the line before a code block: its lines must appear, together and in
#   ```cpp                         order, in the repository's file PATH (a quoted snippet cannot go stale).
#
# Every ```sh, ```bash, ```shell and ```console block must start with one of these markers (in a console
# block, `# ci` runs the lines that start with "$ ").
#
# Usage: scripts/check-docs.sh [--build-dir DIR] [--update] [--list] [FILE.md ...]
#   --build-dir DIR  a configured and built build folder (scripts/test.sh passes its Release build);
#                    default: configure and build build-docs/ (CPU only, no tests)
#   --update         rewrite every <!-- ci-output --> block with what its commands print now
#   --list           show what would run, run nothing
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
cd "$repo"

build_dir="" update=0 list=0 files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) [ $# -ge 2 ] || { echo "check-docs: --build-dir needs a folder" >&2; exit 2; }; build_dir=$2; shift 2 ;;
    --update) update=1; shift ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "check-docs: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) [ -f "$1" ] || { echo "check-docs: no such file '$1'" >&2; exit 2; }; files+=("$1"); shift ;;
  esac
done
[ ${#files[@]} -gt 0 ] || files=(README.md docs/*.md)

work=$(mktemp -d "${TMPDIR:-/tmp}/check-docs.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ---- Extract the blocks: work/N.sh (commands), work/N.expected (quoted output), one manifest line each.
awk -v work="$work" '
  function fail(msg) { printf "%s:%d: %s\n", FILENAME, open_line, msg > "/dev/stderr"; bad = 1 }
  function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
  FNR == 1 { in_block = 0; last_ci = ""; pending_output = 0; pending_source = "" }
  !in_block && /^[ \t]*```/ {
    lang = trim(substr(trim($0), 4)); in_block = 1; open_line = FNR; n = 0
    is_output = pending_output; source = pending_source; pending_output = 0; pending_source = ""; next
  }
  !in_block {
    if (trim($0) == "<!-- ci-output -->") pending_output = 1
    else if (trim($0) ~ /^<!-- ci-source: [^ ]+ -->$/) { pending_source = trim($0); sub(/^<!-- ci-source: /, "", pending_source); sub(/ -->$/, "", pending_source) }
    else if (trim($0) != "") { pending_output = 0; pending_source = "" }
    next
  }
  in_block && /^[ \t]*```[ \t]*$/ {
    in_block = 0
    if (source != "") {
      id = sprintf("%03d", ++blocks)
      for (i = 1; i <= n; i++) print lines[i] > (work "/" id ".snippet")
      close(work "/" id ".snippet")
      printf "%s\t%s\t%d\t%s\tsource\n", id, FILENAME, open_line, source
      next
    }
    if (is_output) {
      if (last_ci == "") { fail("<!-- ci-output --> block with no `# ci` block above it in this file"); next }
      for (i = 1; i <= n; i++) print lines[i] > (work "/" last_ci ".expected")
      if (n == 0) printf "" > (work "/" last_ci ".expected")
      close(work "/" last_ci ".expected")
      printf "%s\t%s\t%d\t%d\toutput\n", last_ci, FILENAME, open_line, FNR
      next
    }
    if (lang !~ /^(sh|bash|shell|console)$/) next
    first = trim(lines[1])
    if (first ~ /^# ci: skip \(.+\)$/) next
    id = sprintf("%03d", ++blocks)
    script = work "/" id ".sh"
    if (first == "# ci") {
      for (i = 2; i <= n; i++) {
        line = lines[i]
        if (lang == "console") { if (line !~ /^\$ /) continue; line = substr(line, 3) }
        print line > script
      }
    } else if (first ~ /^# ci-instead: /) {
      for (i = 1; i <= n && trim(lines[i]) ~ /^# ci-instead: /; i++) print substr(trim(lines[i]), 15) > script
    } else {
      fail("a ```" lang " block must start with `# ci`, `# ci-instead: COMMAND` or `# ci: skip (reason)` (scripts/check-docs.sh)")
      next
    }
    close(script)
    last_ci = id
    printf "%s\t%s\t%d\t%d\trun\n", id, FILENAME, open_line, FNR
    next
  }
  in_block { lines[++n] = $0 }
  END { if (in_block) fail("a code block is not closed"); exit bad }
' "${files[@]}" > "$work/manifest" || { echo "check-docs: fix the blocks above" >&2; exit 1; }

if [ "$list" = 1 ]; then
  while IFS=$'\t' read -r id file line _end kind; do
    [ "$kind" = source ] && { echo "$file:$line quotes $_end"; continue; }
    [ "$kind" = run ] || { echo "    (its output is quoted at $file:$line and compared)"; continue; }
    echo "$file:$line"
    sed 's/^/    $ /' "$work/$id.sh"
  done < "$work/manifest"
  exit 0
fi

# ---- The build folder, and a scratch folder mirroring the repository around it.
if [ -z "$build_dir" ]; then
  build_dir=$repo/build-docs
  echo "== check-docs: building $build_dir"
  cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLORA_CUDA=OFF -DLORA_BUILD_TESTS=OFF >/dev/null
  cmake --build "$build_dir" --parallel "$(nproc)" >/dev/null
fi
build_dir=$(cd "$build_dir" && pwd)
scratch=$work/repo
mkdir "$scratch"
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  entries=$(git -C "$repo" ls-files | cut -d/ -f1 | sort -u)
else
  entries=$(ls -A "$repo")
fi
for e in $entries; do
  case "$e" in build|build-*|.git) continue ;; esac
  ln -s "$repo/$e" "$scratch/$e"
done
ln -s "$build_dir" "$scratch/build"

# ---- Run every block; compare quoted output.
failures=0 ran=0 compared=0 updated=()
declare -A block_file block_line
while IFS=$'\t' read -r id file line end kind; do
  if [ "$kind" = source ]; then  # $end is the quoted file
    compared=$((compared + 1))
    if [ -f "$repo/$end" ] && [[ "$(cat "$repo/$end")" == *"$(cat "$work/$id.snippet")"* ]]; then
      echo "ok    $file:$line (quotes $end)"
    else
      failures=$((failures + 1))
      echo "FAIL  $file:$line: the quoted code is no longer in $end; quote it again from the file"
    fi
    continue
  fi
  if [ "$kind" = run ]; then
    block_file[$id]=$file block_line[$id]=$line
    ran=$((ran + 1))
    start=$(date +%s)
    if (cd "$scratch" && timeout 900 bash -euo pipefail "$work/$id.sh" </dev/null) >"$work/$id.out" 2>"$work/$id.err"; then
      echo "ok    $file:$line ($(( $(date +%s) - start )) s)"
    else
      status=$?
      failures=$((failures + 1))
      echo "FAIL  $file:$line: exit status $status from:"
      sed 's/^/        $ /' "$work/$id.sh"
      echo "      last lines of its output:"
      tail -n 15 "$work/$id.out" "$work/$id.err" | sed 's/^/        /'
    fi
    continue
  fi
  # An output block: $id is the block whose stdout it quotes; lines line..end are its fences.
  compared=$((compared + 1))
  sed 's/[[:space:]]*$//' "$work/$id.out" > "$work/$id.actual"
  sed 's/[[:space:]]*$//' "$work/$id.expected" > "$work/$id.quoted"
  if cmp -s "$work/$id.actual" "$work/$id.quoted"; then
    echo "ok    $file:$line (quoted output matches)"
  elif [ "$update" = 1 ]; then
    echo "$file	$line	$end	$work/$id.actual" >> "$work/updates"
    updated+=("$file:$line")
  else
    failures=$((failures + 1))
    echo "FAIL  $file:$line: the quoted output differs from what ${block_file[$id]}:${block_line[$id]} prints now:"
    diff -u "$work/$id.quoted" "$work/$id.actual" | sed '1,2d; s/^/        /' | head -n 60
    echo "      (if the change is intended: bash scripts/check-docs.sh --update $file)"
  fi
done < "$work/manifest"

# ---- --update: replace each quoted block's lines, last block first so earlier line numbers hold.
if [ -f "$work/updates" ]; then
  sort -t$'\t' -k1,1 -k2,2nr "$work/updates" | while IFS=$'\t' read -r file line end actual; do
    { head -n "$line" "$file"; cat "$actual"; tail -n +"$end" "$file"; } > "$work/rewrite"
    cat "$work/rewrite" > "$file"
  done
  printf 'updated %s\n' "${updated[@]}"
fi

echo "check-docs: $ran blocks run, $compared quoted outputs compared, $failures failed"
[ "$failures" = 0 ]
