# Helpers shared by the benchmark scripts (sourced, not run).

# CPU time (user + system, in clock ticks) process $1 has used so far.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# The median of the numbers given.
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
