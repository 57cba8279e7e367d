#!/usr/bin/env bash
# Mutation testing of the modules where a silent bug costs money or data (docs/mutation.md).
#
#   scripts/mutation.sh                      all groups: answers filters teachers resume
#   scripts/mutation.sh answers filters      some groups
#   scripts/mutation.sh synthkd/answers.py teachers.cache    some modules (their group's tests)
#
# Each group of [tool.mutmut.synthkd_groups] in pyproject.toml runs in its own copy of the working
# tree (mutation_out/work/GROUP, fresh each time) with mutmut 3, niced, so that a mutant only runs
# against the group's test files. Prints one table (also mutation_out/table.md) and writes the
# surviving mutants, with file, line and diff, to mutation_out/survivors-GROUP.txt.
# Env: PYTHON (default .venv/bin/python, else python3), JOBS (parallel mutants, default 2),
# SAMPLE=N with SEED=S (default 1): run only a seeded random sample of N mutants per module (an
# unbiased estimate of the score where a full run takes too long; use a fresh SEED after adding tests),
# MUTATION_OUT (default mutation_out), MUTATION_SHARED (default ../shared). Not part of .ci/run: hours on a 2-core machine.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PYTHON=$(command -v "$PYTHON")
# absolute (not resolved: a venv's python must keep its own path), as the runs cd into their copies
[[ "$PYTHON" == /* ]] || PYTHON="$PWD/$PYTHON"
MUTMUT_VERSION=3.8.1
JOBS=${JOBS:-2}
OUT=$(mkdir -p "${MUTATION_OUT:-mutation_out}" && cd "${MUTATION_OUT:-mutation_out}" && pwd)
HOOKS="$ROOT/scripts/mutation_hooks"
SHARED=${MUTATION_SHARED:-$ROOT/../shared}  # the sibling data folder benchmarks/ reads, if any
REPORT=("$PYTHON" "$ROOT/scripts/mutation_report.py")

if ! "$PYTHON" -c "import mutmut" 2>/dev/null; then
    echo "mutation: installing mutmut==$MUTMUT_VERSION into $PYTHON's environment" >&2
    "$PYTHON" -m pip install -q "mutmut==$MUTMUT_VERSION"
fi
have=$("$PYTHON" -c "from importlib.metadata import version; print(version('mutmut'))")
[[ "$have" == "$MUTMUT_VERSION" ]] || echo "mutation: warning: mutmut $have, scores were taken with $MUTMUT_VERSION" >&2

# Arguments -> groups, and the modules asked for within each group (none = the whole group).
declare -A MODS=()
ORDER=()
args=("$@")
[[ ${#args[@]} -gt 0 ]] || read -r -a args <<<"$("${REPORT[@]}" groups)"
for a in "${args[@]}"; do
    g=$("${REPORT[@]}" group-of "$a")
    [[ -v "MODS[$g]" ]] || { ORDER+=("$g"); MODS[$g]=""; }
    [[ "$a" == "$g" ]] || MODS[$g]+=" $a"
done

TABLE="$OUT/table.md"
{
    echo "mutmut $have, $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo '+dirty'), $(date -u +%FT%TZ), JOBS=$JOBS, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    [[ -z "${SAMPLE:-}" ]] || echo "Random sample of ${SAMPLE} mutants per module, SEED=${SEED:-1}; 'not checked' = the rest."
    echo
    echo "| module | mutants | killed | survived | of which only a string literal | equivalent (listed) | no tests | timeout/suspicious | score % | group time |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
} >"$TABLE"

for g in "${ORDER[@]}"; do
    read -r -a only <<<"${MODS[$g]}"
    tag=$g
    for m in "${only[@]}"; do tag+="+$(basename "${m%.py}" | sed 's/.*\.//')"; done
    work="$OUT/work/$tag"
    rm -rf "$work"
    mkdir -p "$work/subproc_hits"
    # the working tree as git sees it (tracked + untracked, not ignored): works on an unmerged tree too
    git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$work"
    # benchmarks read ../shared/data relative to the repo; under mutmut the repo is $work/mutants
    [[ -d "$SHARED" ]] && ln -s "$(cd "$SHARED" && pwd)" "$work/shared"
    patterns=()
    while read -r p; do [[ -n "$p" ]] && patterns+=("$p"); done < <("${REPORT[@]}" prepare "$g" "$work" "${only[@]}")
    if [[ -n "${SAMPLE:-}" ]]; then
        patterns=()
        while read -r p; do patterns+=("$p"); done < <("${REPORT[@]}" sample "$g" "$work" "$SAMPLE" "${SEED:-1}" "${only[@]}" 2>/dev/null | grep -E '^synthkd\.[^ ]*__mutmut_[0-9]+$')
        echo "mutation: $g: sample of ${#patterns[@]} mutants (SAMPLE=$SAMPLE per module, SEED=${SEED:-1})" >&2
    fi
    if [[ -n "${SAMPLE:-}" ]]; then what="${#patterns[@]} sampled mutants"; else what="${patterns[*]:-(all mutants)}"; fi
    echo "== $g: $(date -u +%T) mutmut run $what  (log: $OUT/$tag.log)" >&2
    start=$SECONDS
    rc=0
    # SIGINT back to default: a shell's background job ignores it, and the CLI tests that send it
    # would then see a child that cannot be interrupted.
    (cd "$work" && env SYNTHKD_MUTMUT_HITS="$work/subproc_hits" SYNTHKD_MUTMUT_ROOT="$work" \
        PYTHONPATH="$HOOKS${PYTHONPATH:+:$PYTHONPATH}" \
        nice -n 10 "$PYTHON" -c 'import signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
from mutmut.__main__ import cli
cli(["run", *sys.argv[1:]], prog_name="mutmut")' --max-children "$JOBS" "${patterns[@]}") >"$OUT/$tag.log" 2>&1 || rc=$?
    secs=$((SECONDS - start))
    [[ $rc -eq 0 ]] || echo "mutation: mutmut run for $g exited $rc after ${secs}s; see $OUT/$tag.log" >&2
    SYNTHKD_MUTATION_ROOT="$ROOT" "${REPORT[@]}" report "$g" "$work" "$OUT/survivors-$tag.txt" "${secs}s" "${only[@]}" >>"$TABLE"
done
cat "$TABLE" | tee -a "$OUT/history.md"
echo >>"$OUT/history.md"
echo
echo "surviving mutants: $OUT/survivors-*.txt   logs: $OUT/*.log"
