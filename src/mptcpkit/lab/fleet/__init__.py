"""The lab fleet: queue lab runs for classes of machines on procrastinate (a PostgreSQL task queue).

`lab submit` enqueues a `JobSpec`; `lab worker` on each lab machine takes one job at a time (a per-machine lock)
and runs it as a child `mptcpkit lab run` whose results land in the shared store with the machine's identity;
`lab queue` shows, cancels and retries jobs; `lab bisect` drives a search for the first bad kernel.
"""
