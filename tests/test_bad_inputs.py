"""Bad input across every command: exit code 2, one line on stderr that names the problem, no traceback, and
nothing half-written at the target.

Each case is (id, argv, needle, target): placeholders in argv are filled from the `world` fixture (a tiny model
with its tokenizer, a prepared data directory, a training run, broken copies of them); `target`, when given, is
a path (same placeholders) that must be as it was before the command — absent if it was absent.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import socket
from pathlib import Path

import pytest

from xmodel.cli.main import main

from .tokenizer_helpers import char_tokenizer


def _model_args(vocab: int) -> list[str]:
    return ["--model.vocab_size", str(vocab), "--model.hidden_size", "64", "--model.intermediate_size", "128",
            "--model.num_hidden_layers", "2", "--model.num_attention_heads", "4", "--model.num_key_value_heads", "2",
            "--model.max_position_embeddings", "64", "--model.pad_token_id", "0", "--model.bos_token_id", "1",
            "--model.eos_token_id", "2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    """Paths the cases refer to as {name}."""
    root = tmp_path_factory.mktemp("bad-inputs")
    char_tokenizer().save_pretrained(root / "tokenizer")
    assert main(["init", "nano", str(root / "model"), "--tokenizer", str(root / "tokenizer"),
                 *_model_args(96)]) == 0
    # Broken copies of the model folder.
    for name in ("truncated", "corrupt_header", "bad_config", "no_shape", "nan_weights"):
        shutil.copytree(root / "model", root / name)
    weights = (root / "truncated" / "model.safetensors")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    header = root / "corrupt_header" / "model.safetensors"
    header.write_bytes(b"\xff" * 16 + header.read_bytes()[16:])
    (root / "bad_config" / "config.json").write_text("{ not json")
    config = json.loads((root / "no_shape" / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        config.pop(key)
    (root / "no_shape" / "config.json").write_text(json.dumps(config))
    (root / "empty").mkdir()
    (root / "yaml_gpt5.yaml").write_text("preset: gpt5\n")
    (root / "yaml_bad.yaml").write_text("train: [unclosed\n")
    (root / "yaml_unknown_field.yaml").write_text("train:\n  max_stepz: 3\n")
    (root / "not_utf8.txt").write_bytes(b"\xff\xfe\xfa broken")
    (root / "junk.gguf").write_bytes(b"GGUF" + bytes(range(100)))
    _loading_world(root)
    busy = socket.socket()  # a port in use: listening, as a running server's would be
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    yield {k: str(v) for k, v in {
        "root": root, "model": root / "model", "tokenizer": root / "tokenizer", "truncated": root / "truncated",
        "corrupt_header": root / "corrupt_header", "bad_config": root / "bad_config",
        "no_shape": root / "no_shape", "nan_weights": root / "nan_weights", "empty": root / "empty",
        "missing": root / "no-such-thing", "out": root / "out", "yaml_gpt5": root / "yaml_gpt5.yaml",
        "yaml_bad": root / "yaml_bad.yaml", "yaml_unknown_field": root / "yaml_unknown_field.yaml",
        "not_utf8": root / "not_utf8.txt", "junk_gguf": root / "junk.gguf", "truncated_unlisted": root / "truncated_unlisted",
        "tiny_context": root / "tiny_context", "eval_data": root / "eval-data", "llama": root / "llama",
        "llama_truncated": root / "llama_truncated", "llama_corrupt_header": root / "llama_corrupt_header",
        "existing_gguf": root / "existing.gguf", "busy_port": busy.getsockname()[1]}.items()}
    busy.close()


def _loading_world(root: Path) -> None:
    """What the loading cases need beyond the broken copies above: NaN weights, folders without checksums (made
    elsewhere), a model with a 1-token context, a data root with one HumanEval problem, a Llama export and broken
    copies of it, an existing GGUF file."""
    import torch

    from xmodel import XmodelForCausalLM
    from xmodel.model.loading import CHECKSUM_FILE, save_model

    model = XmodelForCausalLM.from_pretrained(root / "nan_weights")
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(float("nan"))
    save_model(model, root / "nan_weights")
    (root / "corrupt_header" / CHECKSUM_FILE).unlink()
    shutil.copytree(root / "truncated", root / "truncated_unlisted")
    (root / "truncated_unlisted" / CHECKSUM_FILE).unlink()
    shutil.copytree(root / "model", root / "tiny_context")
    config = json.loads((root / "tiny_context" / "config.json").read_text())
    (root / "tiny_context" / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 1}))
    humaneval = root / "eval-data" / "eval" / "humaneval" / "HumanEval.jsonl.gz"
    humaneval.parent.mkdir(parents=True)
    with gzip.open(humaneval, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"task_id": "HumanEval/0", "prompt": "def one():\n", "entry_point": "one",
                             "canonical_solution": "    return 1\n",
                             "test": "def check(candidate):\n    assert candidate() == 1\n"}) + "\n")
    assert main(["export", str(root / "model"), "--to", "llama", str(root / "llama")]) == 0
    for name in ("llama_truncated", "llama_corrupt_header"):
        shutil.copytree(root / "llama", root / name)
    weights = root / "llama_truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    header = root / "llama_corrupt_header" / "model.safetensors"
    header.write_bytes(b"\xff" * 16 + header.read_bytes()[16:])
    (root / "llama_corrupt_header" / CHECKSUM_FILE).unlink()
    (root / "existing.gguf").write_bytes(b"an earlier export")


CASES = [
    # ---- info ---------------------------------------------------------------------------------------------
    ("info-negative-seq", ["info", "nano", "--seq-len", "-1"], "--seq-len: must be a positive integer", None),
    ("info-word-seq", ["info", "nano", "--seq-len", "x"], "--seq-len: must be a positive integer", None),
    ("info-zero-micro-batch", ["info", "nano", "--micro-batch", "0"], "--micro-batch: must be a positive", None),
    ("info-missing-dir", ["info", "{missing}"], "no such model directory", None),
    ("info-empty-dir", ["info", "{empty}"], "not a model directory (no config.json)", None),
    ("info-bad-config", ["info", "{bad_config}"], "config.json", None),
    ("info-no-shape", ["info", "{no_shape}"], "hidden_size", None),
    ("info-bad-override-type", ["info", "nano", "--model.hidden_size", "abc"], "model.hidden_size: expected int",
     None),
    ("info-heads-not-dividing", ["info", "nano", "--model.num_key_value_heads", "3"], "does not divide", None),
    ("info-unknown-field", ["info", "nano", "--model.hidden_sise", "3"], "hidden_sise", None),
    ("info-unknown-preset", ["info", "gpt5"], "gpt5", None),
    ("info-dtype-choice", ["info", "nano", "--dtype", "fp8"], "invalid choice", None),
    # ---- init ---------------------------------------------------------------------------------------------
    ("init-unknown-preset", ["init", "gpt5", "{out}"], "invalid choice", "{out}"),
    ("init-yaml-unknown-preset", ["init", "nano", "{out}", "--config", "{yaml_gpt5}"], "gpt5", "{out}"),
    ("init-yaml-malformed", ["init", "nano", "{out}", "--config", "{yaml_bad}"], "yaml_bad.yaml", "{out}"),
    ("init-yaml-unknown-field", ["init", "nano", "{out}", "--config", "{yaml_unknown_field}"], "max_stepz", "{out}"),
    ("init-yaml-missing", ["init", "nano", "{out}", "--config", "{missing}"], "no-such-thing", "{out}"),
    ("init-into-nonempty", ["init", "nano", "{model}"], "exists and is not empty", "{model}"),
    ("init-tokenizer-empty-dir", ["init", "nano", "{out}", "--tokenizer", "{empty}"], "empty", "{out}"),
    ("init-tokenizer-missing", ["init", "nano", "{out}", "--tokenizer", "{missing}"], "no-such-thing", "{out}"),
    ("init-tokenizer-too-big", ["init", "nano", "{out}", "--tokenizer", "{tokenizer}", "--model.vocab_size", "16"],
     "do not fit model.vocab_size", "{out}"),
    ("init-bad-seed", ["init", "nano", "{out}", "--seed", "x"], "--seed", "{out}"),
    # ---- schedule -----------------------------------------------------------------------------------------
    ("schedule-negative-decay", ["schedule", "plot", "--preset", "nano", "--decay-from", "-10", "--output",
                                 "{out}/s.png"], "--decay-from: must be an integer ≥ 0", "{out}"),
    ("schedule-decay-in-warmup", ["schedule", "plot", "--preset", "nano", "--decay-from", "1",
                                  "--train.schedule.warmup_steps", "5", "--output", "{out}/s.png"],
     "before the end of warmup", "{out}"),
    ("schedule-zero-steps", ["schedule", "plot", "--preset", "nano", "--steps", "0", "--output", "{out}/s.png"],
     "--steps: must be a positive integer", "{out}"),
    ("schedule-decay-on-cosine", ["schedule", "plot", "--preset", "nano", "--decay-from", "10",
                                  "--train.schedule.kind", "cosine", "--train.schedule.total_steps", "100",
                                  "--output", "{out}/s.png"], "only a WSD schedule", "{out}"),
    ("schedule-bad-kind", ["schedule", "plot", "--preset", "nano", "--train.schedule.kind", "step"],
     "train.schedule.kind", None),
    ("schedule-negative-lr", ["schedule", "plot", "--preset", "nano", "--train.schedule.max_lr", "-1"],
     "max_lr", None),
    # ---- tokenizer ----------------------------------------------------------------------------------------
    ("tokenizer-zero-vocab", ["tokenizer", "train", "--out", "{out}", "--vocab-size", "0"],
     "--vocab-size: must be a positive integer", "{out}"),
    ("tokenizer-tiny-vocab", ["tokenizer", "train", "--out", "{out}", "--vocab-size", "100"], "vocab_size",
     "{out}"),
    ("tokenizer-bad-model", ["tokenizer", "train", "--out", "{out}", "--model", "wordpiece"], "invalid choice",
     "{out}"),
    # ---- train --------------------------------------------------------------------------------------------
    ("train-missing-data", ["train", "--data", "{missing}", "--tokenizer", "{tokenizer}", "--output", "{out}"],
     "no-such-thing", "{out}"),
    ("train-missing-tokenizer", ["train", "--data", "{empty}", "--tokenizer", "{missing}", "--output", "{out}"],
     "no-such-thing", "{out}"),
    ("train-decay-without-from", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--stage", "decay",
                                  "--output", "{out}"], "--stage decay needs --from", "{out}"),
    ("train-from-without-decay", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--from", "{model}",
                                  "--output", "{out}"], "--from starts a decay branch", "{out}"),
    ("train-from-not-checkpoint", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--stage", "decay",
                                   "--from", "{model}", "--output", "{out}"], "not a checkpoint directory", "{out}"),
    ("train-unknown-preset", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--preset", "gpt5",
                              "--output", "{out}"], "gpt5", "{out}"),
    ("train-yaml-gpt5", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--config", "{yaml_gpt5}",
                         "--output", "{out}"], "gpt5", "{out}"),
    ("train-bad-precision", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--train.precision",
                             "fp8", "--output", "{out}"], "train.precision", "{out}"),
    ("train-zero-steps", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--train.max_steps", "0",
                          "--output", "{out}"], "max_steps", "{out}"),
    ("train-bad-stage", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--stage", "cooldown"],
     "invalid choice", None),
    # ---- tune ---------------------------------------------------------------------------------------------
    ("tune-report-missing-storage", ["tune", "report", "--storage", "{root}/none/MISSING.db", "--study-name", "x",
                                     "--output", "{out}"], "no such study database", "{root}/none"),
    ("tune-mup-unknown-optimizer", ["tune", "mup", "--data", "synthetic", "--output", "{out}",
                                    "--tune.mup.optimizers", "[adamw, sgd]"], "tune.mup.optimizers", "{out}"),
    ("tune-mup-unknown-policy", ["tune", "mup", "--data", "synthetic", "--output", "{out}",
                                 "--tune.mup.lr_policies", "[table7]"], "tune.mup.lr_policies", "{out}"),
    ("tune-transfer-unknown-parametrisation", ["tune", "transfer", "--data", "synthetic", "--output", "{out}",
                                               "--tune.transfer.parametrisations", "[mup:nope]"],
     "tune.transfer.parametrisations", "{out}"),
    # ---- train: optimizers, policies, recipes, starting points --------------------------------------------
    ("train-unknown-optimizer", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--train.optimizer",
                                 "sgd", "--output", "{out}"], "train.optimizer", "{out}"),
    ("train-unknown-lr-policy", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--train.mup_lr_policy",
                                 "table7", "--output", "{out}"], "train.mup_lr_policy", "{out}"),
    ("train-unknown-batch-ramp", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--train.batch_ramp",
                                  "cubic", "--output", "{out}"], "train.batch_ramp", "{out}"),
    ("train-unknown-recipe", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--config", "xmodel-3",
                              "--output", "{out}"], "packaged recipe: xmodel-2, xmodel-lm", "{out}"),
    ("train-muon-bad-momentum", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}",
                                 "--train.muon_momentum", "1.5", "--output", "{out}"], "muon_momentum", "{out}"),
    ("train-init-from-missing", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--init-from",
                                 "{missing}", "--output", "{out}"], "no-such-thing", "{out}"),
    ("train-init-from-and-from", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--init-from",
                                  "{model}", "--stage", "decay", "--from", "{model}", "--output", "{out}"],
     "--init-from and --from", "{out}"),
    ("train-init-from-with-preset", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--init-from",
                                     "{model}", "--preset", "tiny", "--output", "{out}"], "--preset and --init-from",
     "{out}"),
    ("train-init-from-shape-override", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--init-from",
                                        "{model}", "--model.num_hidden_layers", "3", "--output", "{out}"],
     "drop the override", "{out}"),
    ("train-init-from-truncated", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--init-from",
                                   "{truncated}", "--output", "{out}"], "truncated", "{out}"),
    ("train-negative-warmup", ["train", "--data", "{empty}", "--tokenizer", "{tokenizer}", "--warmup-steps", "-3",
                               "--output", "{out}"], "--warmup-steps", "{out}"),
    ("info-unknown-recipe", ["info", "--config", "xmodel-3"], "packaged recipe", None),
    ("import-junk-gguf", ["import", "{junk_gguf}", "{out}"], "not a readable GGUF file", "{out}"),
    ("import-missing-gguf", ["import", "{root}/none.gguf", "{out}"], "no such GGUF file", "{out}"),
    # ---- loading a model folder: generate, chat, serve, eval, export, import --------------------------------
    # A damaged weight file is named: by the checksums Xmodel saved beside it, else by the safetensors reader.
    ("generate-truncated", ["generate", "{truncated}", "--prompt", "hi"],
     "truncated/model.safetensors: checksum mismatch", None),
    ("generate-truncated-unlisted", ["generate", "{truncated_unlisted}", "--prompt", "hi"],
     "truncated_unlisted/model.safetensors: not a readable safetensors file", None),
    ("generate-corrupt-header", ["generate", "{corrupt_header}", "--prompt", "hi"],
     "corrupt_header/model.safetensors: not a readable safetensors file", None),
    ("generate-bad-config", ["generate", "{bad_config}", "--prompt", "hi"], "config.json: not valid JSON", None),
    ("generate-empty-prompt", ["generate", "{model}", "--prompt", ""], "--prompt: empty", None),
    ("generate-prompt-fills-context", ["generate", "{model}", "--prompt", "a" * 64],
     "tokens fill the model's context of 64", None),
    ("generate-nan-weights", ["generate", "{nan_weights}", "--prompt", "hi", "--max-new-tokens", "4"],
     "logits are not finite", None),
    ("generate-no-such-gpu", ["generate", "{model}", "--prompt", "hi", "--device", "cuda:99"],
     "--device cuda:99", None),
    ("generate-bad-device", ["generate", "{model}", "--prompt", "hi", "--device", "gpu"], "--device gpu", None),
    ("chat-no-such-gpu", ["chat", "{model}", "--device", "cuda:99"], "--device cuda:99", None),
    ("chat-truncated", ["chat", "{truncated}"], "checksum mismatch", None),
    ("serve-port-out-of-range", ["serve", "{model}", "--port", "70000"], "--port 70000: must be in 0..65535",
     None),
    ("serve-port-in-use", ["serve", "{model}", "--port", "{busy_port}"], "cannot listen there", None),
    ("serve-host-not-here", ["serve", "{model}", "--host", "192.0.2.1", "--port", "0"], "--host 192.0.2.1", None),
    ("serve-no-such-gpu", ["serve", "{model}", "--port", "0", "--device", "cuda:99"], "--device cuda:99", None),
    ("serve-truncated", ["serve", "{truncated}", "--port", "0"], "checksum mismatch", None),
    ("serve-corrupt-header", ["serve", "{corrupt_header}", "--port", "0"], "not a readable safetensors file",
     None),
    ("serve-api-key-file-missing", ["serve", "{model}", "--port", "0", "--api-key-file", "{missing}"],
     "--api-key-file", None),
    ("serve-api-key-file-not-utf8", ["serve", "{model}", "--port", "0", "--api-key-file", "{not_utf8}"],
     "not UTF-8", None),
    ("serve-two-api-keys", ["serve", "{model}", "--port", "0", "--api-key", "a", "--api-key-file", "{not_utf8}"],
     "give one of them", None),
    ("export-llama-truncated", ["export", "{truncated}", "--to", "llama", "{out}"], "checksum mismatch", "{out}"),
    ("export-llama-corrupt-header", ["export", "{corrupt_header}", "--to", "llama", "{out}"],
     "not a readable safetensors file", "{out}"),
    ("export-llama-bad-config", ["export", "{bad_config}", "--to", "llama", "{out}"], "config.json", "{out}"),
    ("export-gguf-exists", ["export", "{model}", "--to", "gguf", "{existing_gguf}"],
     "existing.gguf: exists (pass --overwrite", "{existing_gguf}"),
    ("export-llama-exists", ["export", "{model}", "--to", "llama", "{llama}"],
     "exists and is not empty (pass --overwrite", "{llama}"),
    ("import-truncated", ["import", "{llama_truncated}", "{out}"], "checksum mismatch", "{out}"),
    ("import-corrupt-header", ["import", "{llama_corrupt_header}", "{out}"], "not a readable safetensors file",
     "{out}"),
    ("import-bad-config", ["import", "{bad_config}", "{out}"], "config.json: not valid JSON", "{out}"),
    ("eval-truncated", ["eval", "{truncated}", "--suite", "code", "--tasks", "humaneval", "--data-root",
                        "{eval_data}", "--output", "{out}"], "checksum mismatch", "{out}"),
    ("eval-bad-config", ["eval", "{bad_config}", "--suite", "code", "--tasks", "humaneval", "--data-root",
                         "{eval_data}", "--output", "{out}"], "config.json: not valid JSON", "{out}"),
    ("eval-no-such-gpu", ["eval", "{model}", "--device", "cuda:99", "--data-root", "{eval_data}", "--output",
                          "{out}"], "--device cuda:99", "{out}"),
    ("eval-no-benchmark-data", ["eval", "{model}", "--data-root", "{empty}", "--output", "{out}"],
     "holds none of the chosen benchmarks", "{out}"),
    ("eval-context-too-short", ["eval", "{tiny_context}", "--suite", "code", "--tasks", "humaneval", "--limit", "1",
                                "--data-root", "{eval_data}", "--output", "{out}"],
     "context (max_position_embeddings) of 1 token", "{out}"),
]


def _fill(value: str, world: dict[str, str]) -> str:
    return value.format(**world)


def _snapshot(path: Path):
    if not path.exists():
        return None
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize("case_id, argv, needle, target", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(world, case_id, argv, needle, target, capsys):
    argv = [_fill(a, world) for a in argv]
    target_path = Path(_fill(target, world)) if target else None
    before = _snapshot(target_path) if target_path else None
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, (code, captured.err[-2000:])
    assert "Traceback" not in captured.err
    assert len(lines) == 1 and needle in lines[0], captured.err[-2000:]
    if target_path is not None:
        assert _snapshot(target_path) == before, f"{target_path} changed"


def test_cases_are_many_and_named_once():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
