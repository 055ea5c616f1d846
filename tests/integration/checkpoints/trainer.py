"""The counting trainer of the kill tests: STEPS steps of STEP_SECONDS, a checkpoint after every step.

It resumes from ``$MLOPS_CHECKPOINT_DIR/state.json`` when present, appends one line per executed
step to ``$COUNT_FILE`` (so the test counts every step ever executed, over all tries), writes each
checkpoint atomically (tmp file, then rename) with ``mlops-checkpoint.json`` naming the step, and
writes ``{"value": ..., "steps": ...}`` to ``$MLOPS_RESULT_FILE`` at the end (and to
``$RESULT_COPY`` when set: a path the test reads when the task's return value is not at hand,
as under ``airflow tasks test``). Standard library
only: it runs in the Debian base image and on the worker alike.
"""

from __future__ import annotations

import json
import os
import time

STEPS = int(os.environ.get("STEPS", "60"))
STEP_SECONDS = float(os.environ.get("STEP_SECONDS", "0.2"))
ckpt = os.environ["MLOPS_CHECKPOINT_DIR"]
count_file = os.environ["COUNT_FILE"]


def advance(value: int, step: int) -> int:
    return (value * 31 + step * step + 7) % 1_000_003


def write_atomic(name: str, data: dict) -> None:
    tmp = os.path.join(ckpt, f".{name}.tmp")
    with open(tmp, "w") as out:
        json.dump(data, out)
    os.replace(tmp, os.path.join(ckpt, name))


with open(os.path.join(os.path.dirname(count_file), f"pid-{os.getpid()}"), "w") as out:
    out.write(str(os.getpid()))
state = {"step": 0, "value": 1}
path = os.path.join(ckpt, "state.json")
if os.path.exists(path):
    with open(path) as source:
        state = json.load(source)
print(f"starting at step {state['step']}", flush=True)
while state["step"] < STEPS:
    time.sleep(STEP_SECONDS)
    step = state["step"] + 1
    state = {"step": step, "value": advance(state["value"], step)}
    with open(count_file, "a") as out:
        out.write(f"{step}\n")
    write_atomic("state.json", state)
    write_atomic("mlops-checkpoint.json", {"step": step})
for result_path in filter(None, (os.environ["MLOPS_RESULT_FILE"], os.environ.get("RESULT_COPY"))):
    with open(result_path, "w") as out:
        json.dump({"value": state["value"], "steps": state["step"]}, out)
print("done", flush=True)
