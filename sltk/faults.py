"""Named points where the process can be killed on purpose, to prove that every step resumes.

`SLTK_KILL_AT="<point>:<n>[:torn]"` (comma-separated for several) SIGKILLs the process once `n`
records have passed the point in this process. The points are a file's name where records are
written (`drafts.jsonl`: after n appended records; a whole file written at once, e.g.
`sft_generator.jsonl` or `manifest.json`: before its rename), a training checkpoint folder's name
(`generator.ckpt`: after n checkpoints), and a generation call's progress label (`judge`,
`extend 1/1 stage 1`, `eval`: after n calls return). With `torn`, a JSONL append writes half of its
last line first and a training checkpoint is left without its marker, as a kill in the middle of a write
would. Unset (always, outside the fault tests) it does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "SLTK_KILL_AT"
_passed: dict[str, int] = {}


def due(point: str, n: int = 1) -> str | None:
    """Count `n` records past `point`; "kill" or "torn" when this process is to die there, else None."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    for item in spec.split(","):
        name, _, rest = item.partition(":")
        count, _, how = rest.partition(":")
        if name == point:
            _passed[point] = _passed.get(point, 0) + n
            if _passed[point] >= int(count or 1):
                return how or "kill"
    return None


def kill() -> None:
    """Die at once, as a lost machine or an out-of-memory kill would: no cleanup, no flush."""
    os.kill(os.getpid(), signal.SIGKILL)


def point(name: str, n: int = 1) -> None:
    """Die here if `SLTK_KILL_AT` names this point and its count is reached."""
    if due(name, n):
        kill()
