#!/usr/bin/env python3
"""The floor under any durable journal on this disk: the CPU and wall time of one group
commit written as a single sequential `write` + `fdatasync` (BATCH events of EVENT_BYTES
each), appended to a growing file and overwriting a preallocated one. Compare with the
journal's own cost per commit (herald_journal_commit_seconds, and the kernel's share of the
writer thread in a profile) to see how much of it the storage engine adds.

    python3 bench/fsync_floor.py [COMMITS] [BATCH] [EVENT_BYTES]     (default 2000 50 700)
"""
import os
import resource
import sys
import tempfile
import time

commits = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 50
event_bytes = int(sys.argv[3]) if len(sys.argv) > 3 else 700
buf = b"x" * (batch * event_bytes)

with tempfile.TemporaryDirectory(dir=".") as d:
    fd = os.open(os.path.join(d, "log"), os.O_WRONLY | os.O_CREAT, 0o644)
    for mode in ("append", "overwrite"):
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0 if mode == "append" else 64 * len(buf))
        os.fsync(fd)
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        for i in range(commits):
            if mode == "overwrite":
                os.lseek(fd, (i % 64) * len(buf), os.SEEK_SET)
            os.write(fd, buf)
            os.fdatasync(fd)
        after, ended = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(
            f"{mode:9}: {1e6 * cpu / commits:5.0f} µs CPU and {1e6 * (ended - started) / commits:5.0f} µs wall "
            f"per commit of {batch} events; {1e6 * cpu / commits / batch:.1f} µs CPU per event"
        )
    os.close(fd)
