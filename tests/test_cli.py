"""The `xmodel` command line: info, init, generate, and one-line errors for bad input."""

import json
import subprocess
import sys

import pytest

from xmodel.cli.main import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "xmodel.cli.main", *args], capture_output=True, text=True,
                          timeout=300)


def test_info_all_presets(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("xmodel-2-1.2b", "xmodel-lm-1.1b", "nano", "tiny"):
        assert name in out
    assert "1.25G" in out  # Xmodel-2 total parameters


def test_info_json_with_overrides(capsys):
    assert main(["info", "nano", "--json", "--seq-len", "512", "--model.num_hidden_layers", "18"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["seq_len"] == 512 and "L18" in row["shape"]
    assert row["params_non_embedding"] == 2 * 6198016 - 256  # twice the blocks, one final norm


@pytest.mark.parametrize("args,needle", [
    (["info", "nano", "--model.hidden_size", "abc"], "model.hidden_size: expected int, got 'abc'"),
    (["info", "nano", "--model.num_key_value_heads", "3"], "num_key_value_heads: 3 does not divide"),
    (["info", "/no/such/dir"], "no such model directory"),
    (["info", "nano", "--seq-len", "x"], "--seq-len: must be a positive integer, got 'x'"),
    (["generate", "/no/such/dir", "--prompt", "hi"], "no such model directory"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line(args, needle):
    res = run_cli(*args)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert needle in lines[0] and "Traceback" not in res.stderr


def test_init_then_generate_and_info(tmp_path, char_tokenizer_dir):
    out = tmp_path / "model"
    assert main(["init", "nano", str(out), "--tokenizer", str(char_tokenizer_dir), "--model.vocab_size", "128",
                 "--model.num_hidden_layers", "2"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "xmodel.yaml").is_file()
    res = run_cli("generate", str(out), "--prompt", "hello", "--max-new-tokens", "8")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("hello") and len(res.stdout.strip()) > len("hello")
    res = run_cli("info", str(out), "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["shape"].startswith("d256 L2")
    # A second init into the same directory refuses rather than overwriting.
    res = run_cli("init", "nano", str(out))
    assert res.returncode == 2 and "not empty" in res.stderr


def test_generate_refuses_mismatched_tokenizer(tmp_path, char_tokenizer_dir):
    out = tmp_path / "model"
    assert main(["init", "nano", str(out), "--model.vocab_size", "16", "--model.num_hidden_layers", "1"]) == 0
    res = run_cli("generate", str(out), "--prompt", "hi", "--tokenizer", str(char_tokenizer_dir))
    assert res.returncode == 2 and "vocab_size is 16" in res.stderr
