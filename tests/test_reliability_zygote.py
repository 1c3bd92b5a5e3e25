"""Run the real `wanlora` CLI in child processes, cheaply: a helper for test_reliability_*.

A fresh `python -c "from wanlora.cli import main; main()"` spends seconds importing torch,
diffusers and transformers. The zygote is one such process that imports all of that once and
then forks a child per command: each child is a real, separate process running the CLI's
main() with its own argv, environment and output file, and it can be killed with SIGKILL
(after a delay, measured by the zygote, which is the child's parent) like a preempted machine.
The children run torch with one thread (see Zygote.__init__), the reference runs too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ZYGOTE = r"""
import json, os, signal, sys, time
import torch, diffusers, transformers, safetensors  # the slow imports, once
from wanlora.cli import main
import wanlora.cache.build, wanlora.run.training, wanlora.models, wanlora.export.musubi  # noqa

for line in sys.stdin:
    job = json.loads(line)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.environ.update(job["env"])
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.argv = ["wanlora", *job["argv"]]
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 3
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    killed = False
    deadline = None if job.get("kill_after") is None else start + job["kill_after"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if deadline is not None and time.monotonic() >= deadline and not killed:
            os.kill(pid, signal.SIGKILL)  # still our unreaped child: the pid cannot be reused
            killed = True
        time.sleep(0.005)
    print(json.dumps({"status": status, "seconds": time.monotonic() - start}), flush=True)
"""


@dataclass
class Result:
    code: int | None  # exit code, None when killed by a signal
    signal: int | None
    output: str
    seconds: float

    @property
    def killed(self) -> bool:
        return self.signal == signal.SIGKILL


class Zygote:
    def __init__(self, workdir: Path, env: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.runs = 0
        # one thread: tiny models gain nothing from more, and on a busy 2-core CI machine
        # OpenMP's spinning threads make a run ten times slower
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
        full_env.pop("WANLORA_FAULT_AT", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=full_env,
        )

    def run(
        self,
        *argv: str,
        env: dict[str, str] | None = None,
        kill_after: float | None = None,
    ) -> Result:
        self.runs += 1
        log = self.workdir / f"run-{self.runs}.log"
        job = {"argv": list(argv), "env": env or {}, "log": str(log), "kill_after": kill_after}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the zygote died"
        reply = json.loads(line)
        status = reply["status"]
        output = log.read_text(encoding="utf-8", errors="replace")
        if os.WIFSIGNALED(status):
            return Result(None, os.WTERMSIG(status), output, reply["seconds"])
        return Result(os.WEXITSTATUS(status), None, output, reply["seconds"])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def test_zygote_runs_the_cli_and_reports_kills(tmp_path):
    z = Zygote(tmp_path)
    try:
        ok = z.run("--help")
        assert ok.code == 0 and "train" in ok.output
        bad = z.run("train", str(tmp_path / "nowhere"))
        assert bad.code == 1 and "Traceback" not in bad.output
    finally:
        z.close()
