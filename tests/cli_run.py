"""Run the real `wanlora` CLI in a separate process, as a user's shell would.

A fresh `python -c "from wanlora.cli import main; main()"` spends seconds importing torch,
diffusers and transformers, and the suite makes some seventy CLI calls: minutes on a 2-core
CI machine. So a call is, by default, a child forked from a warm interpreter (one per test
process, started at its first call, that has imported all of that once): a real, separate
process with its own argv, environment (exactly the one a fresh process would get), working
directory, stdin (/dev/null), stdout and stderr (files: not a terminal, as a pipe is not),
exit code (-N for a signal) and the interpreter's exit (threads joined, atexit handlers run,
output flushed; only the final module teardown, which costs a forked child seconds, is left
out).

Some variables are read when a library is imported (HF_ENDPOINT by huggingface_hub, COLUMNS
by the console, OMP_NUM_THREADS by torch): a warm interpreter would keep the values it
started with. A call whose environment differs from the warm one's in anything but the
variables wanlora reads at call time (CALL_TIME_ENV) therefore starts a fresh interpreter,
as does `fresh=True`.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# read by wanlora when a command runs (src: recipes/project.py, faults.py, openai_backend.py),
# never at import; PYTEST_CURRENT_TEST changes with every test and nothing reads it
CALL_TIME_ENV = {"WANLORA_MODELS_DIR", "WANLORA_FAULT_AT", "OPENAI_API_KEY", "PYTEST_CURRENT_TEST"}
# set by a library when it is imported (torch._inductor, cv2), in a test process as in the CLI
SET_BY_IMPORTS = {"TORCHINDUCTOR_CACHE_DIR", "LD_LIBRARY_PATH"}
# the environment at collection, before any test's monkeypatch: the warm interpreter's
BASE_ENV = dict(os.environ)

FORK_SERVER = r"""
import atexit, json, os, signal, sys, threading, time
import torch, diffusers, transformers, safetensors  # the slow imports, once
from wanlora.cli import main


def exit_code(exc: SystemExit) -> int:  # as the interpreter turns a SystemExit into one
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def child(job) -> None:  # set up as a fresh process would be, run the CLI, exit
    os.environ.clear()
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.stdin = open(os.devnull)
    for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, fd)
        os.close(out)
    sys.argv = ["-c", *job["argv"]]
    code, interrupted = 0, False
    try:
        main()
    except SystemExit as exc:
        code = exit_code(exc)
    except BaseException as exc:  # what an uncaught exception does to `python -c`
        sys.excepthook(type(exc), exc, exc.__traceback__)
        code, interrupted = 1, isinstance(exc, KeyboardInterrupt)
    # the interpreter's exit: threads joined, atexit handlers, stdio flushed; its module
    # teardown is left out (seconds in a forked child, copying every page it touches)
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if interrupted:  # Python ends on an uncaught KeyboardInterrupt by SIGINT's default
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(job)
    deadline = time.monotonic() + job["timeout"]
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() >= deadline and not timed_out:
            os.kill(pid, signal.SIGKILL)  # still our unreaped child: the pid cannot be reused
            timed_out = True
        time.sleep(0.005)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    print(json.dumps({"code": code, "timed_out": timed_out}), flush=True)
"""


class _ForkServer:
    def __init__(self):
        self.env = BASE_ENV
        self.logs = Path(tempfile.mkdtemp(prefix="wanlora-cli-"))
        self.calls = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def serves(self, env: dict) -> bool:
        differ = {k for k in env.keys() | self.env.keys() if env.get(k) != self.env.get(k)}
        return self.proc.poll() is None and differ <= CALL_TIME_ENV | SET_BY_IMPORTS

    def run(self, args, env, cwd, timeout) -> subprocess.CompletedProcess:
        self.calls += 1
        out, err = self.logs / f"{self.calls}.out", self.logs / f"{self.calls}.err"
        job = {
            "argv": list(args),
            "env": env,
            "cwd": str(cwd or os.getcwd()),
            "stdout": str(out),
            "stderr": str(err),
            "timeout": timeout,
        }
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the CLI fork server died"
        reply = json.loads(line)
        stdout, stderr = (p.read_text(encoding="utf-8", errors="replace") for p in (out, err))
        out.unlink()
        err.unlink()
        argv = ["wanlora", *args]
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr)
        return subprocess.CompletedProcess(argv, reply["code"], stdout, stderr)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        for p in self.logs.iterdir():
            p.unlink()
        self.logs.rmdir()


_server: _ForkServer | None = None


def _fork_server() -> _ForkServer:
    global _server
    if _server is None:
        _server = _ForkServer()
        atexit.register(_server.close)
    return _server


def run_cli(
    *args: str, env: dict | None = None, cwd=None, timeout: float = 240, fresh: bool = False
):
    """`wanlora ARGS...` -> CompletedProcess (text stdout/stderr); env adds to os.environ.
    fresh: a new interpreter even where the warm one could serve the call."""
    full_env = {**os.environ, **(env or {})}
    if not fresh:
        server = _fork_server()
        if server.serves(full_env):
            return server.run(args, full_env, cwd, timeout)
    return subprocess.run(
        [sys.executable, "-c", "from wanlora.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )
