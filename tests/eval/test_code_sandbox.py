"""Code evaluation: canonical solutions pass, broken ones fail, hostile programs are contained (the evaluator
survives and reports a timeout or a failure), and pass@k is the unbiased estimator."""

import itertools
import math
import os
import subprocess
import time

import pytest

from xmodel.eval import local_files as lf
from xmodel.eval.code import humaneval_program, mbpp_program, pass_at_k
from xmodel.eval.sandbox import SandboxLimits, isolation_report, run_program, run_programs

LIMITS = SandboxLimits(timeout_s=5, memory_mb=1024)


@pytest.fixture(scope="module")
def humaneval(data_root):
    return lf.read_records(data_root / "eval/humaneval/HumanEval.jsonl.gz")


def test_canonical_humaneval_solutions_pass_164_of_164(humaneval):
    assert len(humaneval) == 164
    results = run_programs([humaneval_program(d, d["canonical_solution"]) for d in humaneval], LIMITS, parallel=2)
    failed = [(d["task_id"], r.stderr[-200:]) for d, r in zip(humaneval, results) if not r.passed]
    assert failed == []


def test_broken_humaneval_solutions_fail(humaneval):
    broken = {
        "returns None": "    return None\n",
        "syntax error": "    return (\n",
        "raises": "    raise ValueError('no')\n",
    }
    for what, body in broken.items():
        results = run_programs([humaneval_program(d, body) for d in humaneval[:40]], LIMITS, parallel=2)
        assert not any(r.passed for r in results), what
    # Each problem with the next problem's (correct, but other) solution.
    swapped = [humaneval_program(d, nxt["canonical_solution"]) for d, nxt in zip(humaneval[:40], humaneval[1:41])]
    assert not any(r.passed for r in run_programs(swapped, LIMITS, parallel=2))


def test_canonical_mbpp_solutions_pass(data_root):
    rows = [r for r in lf.read_records(data_root / "eval/mbpp/mbpp.jsonl") if 11 <= r["task_id"] <= 510][:100]
    results = run_programs([mbpp_program(r, r["code"]) for r in rows], LIMITS, parallel=2)
    assert [r["task_id"] for r, res in zip(rows, results) if not res.passed] == []
    # The same programs without the solution fail (the tests do run).
    results = run_programs([mbpp_program(r, "") for r in rows[:20]], LIMITS, parallel=2)
    assert not any(r.passed for r in results)


def _sandbox_processes() -> int:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return sum("_sandbox_child.py" in line for line in out.splitlines())


def test_infinite_loop_times_out_and_is_killed():
    start = time.monotonic()
    res = run_program("while True:\n    pass\n", SandboxLimits(timeout_s=2))
    assert res.status == "timeout" and not res.passed
    assert time.monotonic() - start < 10
    assert _sandbox_processes() == 0


def test_sleeping_program_times_out():
    res = run_program("import time\ntime.sleep(60)\n", SandboxLimits(timeout_s=1.5))
    assert res.status == "timeout"


def test_ten_gigabyte_allocation_fails_inside_the_child():
    res = run_program("x = bytearray(10 * 1024 ** 3)\nprint(len(x))\n", LIMITS)
    assert res.status == "failed" and "MemoryError" in res.stderr


def test_fork_bomb_is_contained():
    res = run_program("import os\nwhile True:\n    os.fork()\n", LIMITS)
    assert res.status == "failed"
    res = run_program("import multiprocessing\nmultiprocessing.Process(target=print).start()\n", LIMITS)
    assert res.status == "failed"
    res = run_program("import subprocess\nsubprocess.run(['sh', '-c', 'sleep 100'])\n", LIMITS)
    assert res.status == "failed"


def test_processes_started_behind_the_guard_die_with_the_group():
    # Forks through libc (past the Python guard): the process group is killed at the timeout.
    program = ("import sys\ndel sys.modules['ctypes']\nimport ctypes\nlibc = ctypes.CDLL(None)\n"
               "for _ in range(3):\n    libc.fork()\nwhile True:\n    pass\n")
    res = run_program(program, SandboxLimits(timeout_s=2))
    assert res.status == "timeout"
    time.sleep(0.3)
    assert _sandbox_processes() == 0


def test_file_deletion_and_overwrite_outside_the_workdir_fail(tmp_path):
    victim = tmp_path / "keep" / "data.txt"
    victim.parent.mkdir()
    victim.write_text("precious")
    attempts = [
        f"import os\nos.remove({str(victim)!r})\n",
        f"import shutil\nshutil.rmtree({str(victim.parent)!r})\n",
        f"import pathlib\npathlib.Path({str(victim)!r}).unlink()\n",
        f"open({str(victim)!r}, 'w').write('gone')\n",
        f"import pathlib\npathlib.Path({str(victim)!r}).write_text('gone')\n",
        f"import os\nos.system('rm -rf {victim.parent}')\n",
    ]
    for res in run_programs(attempts, LIMITS):
        assert res.status == "failed"
    assert victim.read_text() == "precious"
    # Inside its own temporary directory a program may write and delete freely.
    res = run_program("open('scratch.txt', 'w').write('x')\nimport os\nprint(os.path.getsize('scratch.txt'))\n",
                      LIMITS)
    assert res.passed and res.stdout.strip() == "1"


def test_no_network():
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        res = run_program(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n", LIMITS)
        assert res.status == "failed"
    finally:
        server.close()


def test_early_exit_does_not_count_as_passing():
    assert run_program("import sys\nsys.exit(0)\nassert False\n", LIMITS).status == "failed"
    assert run_program("import os\nos._exit(0)\n", LIMITS).status == "failed"


def test_environment_does_not_leak_and_isolation_is_reported(monkeypatch):
    monkeypatch.setenv("XMODEL_SECRET_TOKEN", "hunter2")
    res = run_program("import os\nprint(sorted(os.environ))\n", LIMITS)
    assert res.passed and "XMODEL_SECRET_TOKEN" not in res.stdout
    report = isolation_report()
    assert report["python_guard"] is True and isinstance(report["network_namespace"], bool)


def test_pass_at_k_is_the_unbiased_estimator():
    # Against the definition: the share of k-subsets of the n samples that contain a correct one.
    for n, c, k in [(10, 3, 1), (10, 3, 5), (10, 0, 3), (10, 10, 1), (7, 2, 7), (20, 1, 10)]:
        samples = [True] * c + [False] * (n - c)
        subsets = list(itertools.combinations(samples, k))
        exact = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)
