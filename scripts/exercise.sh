#!/usr/bin/env bash
# The exercises of docs/exercises.md. Each exercises/*.h holds a reference solution between
# "// EXERCISE N BEGIN" and "// EXERCISE N END" markers, and tests/test_exercises.cpp checks it ([exercise-N]).
#
# Usage: scripts/exercise.sh list          the exercises, their files and test tags
#        scripts/exercise.sh start N       replace exercise N's solution by a stub that throws "not written
#                                          yet": its test fails until you write the code between the markers
#        scripts/exercise.sh solution N    put the reference solution back (git checkout of the file)
#        scripts/exercise.sh check         (CI) every exercise has its markers and a test, and every file
#                                          still compiles with its solution stubbed out
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
cd "$repo"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }

# The file holding exercise N: the one with its markers.
file_of() {
  local f
  f=$(grep -l "// EXERCISE $1 BEGIN" exercises/*.h 2>/dev/null | head -n 1 || true)
  [ -n "$f" ] || { echo "exercise.sh: no exercise $1 (see: scripts/exercise.sh list)" >&2; exit 2; }
  echo "$f"
}

# Prints FILE with exercise N's marked regions replaced by a stub (the markers stay).
stubbed() {
  awk -v n="$2" '
    $0 ~ "// EXERCISE " n " BEGIN" { print; match($0, /^ */); printf "%sLORA_FAIL(\"exercise %s is yours to write (docs/exercises.md)\");\n", substr($0, 1, RLENGTH), n; skip = 1; next }
    $0 ~ "// EXERCISE " n " END" { skip = 0 }
    !skip { print }
  ' "$1"
}

numbers() { grep -ho '// EXERCISE [0-9]* BEGIN' exercises/*.h | awk '{print $3}' | sort -un; }

case "${1:-}" in
  list)
    for n in $(numbers); do
      f=$(file_of "$n")
      printf 'exercise %s  %-28s %s\n' "$n" "$f" "$(sed -n '1{s|^// ||; s| (docs/exercises.md).*||; p}' "$f")"
      printf '            test: ./build/tests/lora_tests "[exercise-%s]"\n' "$n"
    done
    ;;
  start)
    [ $# -eq 2 ] || usage
    f=$(file_of "$2")
    stubbed "$f" "$2" > "$f.tmp" && mv "$f.tmp" "$f"
    echo "exercise $2: the solution in $f is now a stub. Write it between the EXERCISE $2 markers, then:"
    echo "  cmake --build build --target lora_tests && ./build/tests/lora_tests \"[exercise-$2]\""
    echo "  (git diff $f shows your work; scripts/exercise.sh solution $2 brings the reference back)"
    ;;
  solution)
    [ $# -eq 2 ] || usage
    f=$(file_of "$2")
    git checkout -- "$f"
    echo "exercise $2: the reference solution is back in $f"
    ;;
  check)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir "$tmp/exercises"
    status=0
    for n in $(numbers); do
      f=$(file_of "$n")
      begins=$(grep -c "// EXERCISE $n BEGIN" "$f") ends=$(grep -c "// EXERCISE $n END" "$f")
      [ "$begins" = "$ends" ] || { echo "$f: $begins BEGIN and $ends END markers for exercise $n" >&2; status=1; }
      grep -q "\[exercise-$n\]" tests/test_exercises.cpp || { echo "exercise $n has no [exercise-$n] test" >&2; status=1; }
      # The learner's starting point: the file with the solution stubbed out must compile as it stands.
      stubbed "$f" "$n" > "$tmp/$f"
      echo "#include \"$f\"" > "$tmp/exercise_$n.cpp"
      if ${CXX:-c++} -std=c++20 -fsyntax-only -Wall -Wextra -Werror=return-type -fopenmp -I "$tmp" -I "$repo" \
          "$tmp/exercise_$n.cpp"; then
        echo "exercise $n ($f): markers, test and stub in order"
      else
        echo "exercise $n: $f does not compile with its solution stubbed out" >&2
        status=1
      fi
      rm "$tmp/$f"
    done
    exit $status
    ;;
  -h|--help) usage 0 ;;
  *) usage ;;
esac
