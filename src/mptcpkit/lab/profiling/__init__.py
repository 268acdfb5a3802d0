"""CPU profiles of lab runs: perf recording, folded stacks, differential views (docs/profiling.md).

Modules: perf (probe, argv, one recording), folded (perf script -> folded stacks, pure), storage (the
`profiles` table and artifact files), session (the runner's hook), diff (share changes with confidence, flame
tree; pure), views (which scenarios to diff), flamegraph (HTML with d3-flame-graph), marks (profiled samples),
bisect (the fleet bisect's hook), cli (commands).
"""
