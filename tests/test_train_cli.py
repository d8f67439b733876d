"""`xmodel train` / `xmodel schedule`: bad input ends in one line naming the problem."""

import pytest

from xmodel.cli.main import main


@pytest.mark.parametrize("args,needle", [
    (["train", "--data", "/no/such/prepared", "--tokenizer", "/no/such/tok"], "/no/such/tok: tokenizer directory"),
    (["train", "--data", "/x", "--tokenizer", "."], "/x: not a prepared data directory"),
    (["train", "--data", "/x", "--tokenizer", ".", "--stage", "decay"], "--stage decay needs --from"),
    (["train", "--data", "/x", "--tokenizer", ".", "--from", "/tmp"], "--from starts a decay branch"),
    (["train", "--data", "/x", "--tokenizer", ".", "--train.schedule.kind", "exp"], "train.schedule.kind: must be"),
    (["schedule", "plot", "--train.schedule.kind", "cosine"], "train.schedule.total_steps: cosine needs"),
])
def test_bad_input_is_one_line(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err, err


def test_schedule_plot_writes_png(tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main(["schedule", "plot", "--preset", "nano", "--train.schedule.warmup_steps", "10",
                 "--train.max_steps", "200", "--decay-from", "100", "--train.schedule.half_life", "20",
                 "--output", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _tiny(vocab: int, hidden: int = 64) -> list[str]:
    return ["--preset", "nano", "--model.vocab_size", str(vocab), "--model.hidden_size", str(hidden),
            "--model.intermediate_size", "128", "--model.num_hidden_layers", "2", "--model.num_attention_heads", "4",
            "--model.num_key_value_heads", "2", "--model.max_position_embeddings", "256",
            "--train.micro_batch_size", "2", "--train.batch_tokens", "512", "--train.max_steps", "2",
            "--train.save_every", "2", "--train.eval_sequences", "4", "--train.sample_tokens", "4",
            "--train.peak_flops", "1e11", "--no-progress"]


def test_train_on_prepared_data_records_the_run_and_refuses_another_shape(prepared, small_cfg, tokenizer_dir,
                                                                           tmp_path, capsys):
    import json

    import yaml

    from xmodel.config.core import section_to_dict
    from xmodel.data.shards import load_manifest

    config = tmp_path / "data.yaml"  # the data section the directory was prepared with, as a user would pass it
    config.write_text(yaml.safe_dump({"data": section_to_dict(small_cfg)}))

    data_dir = prepared.path  # the fixture's Manifest
    vocab = load_manifest(data_dir).vocab_size
    run = tmp_path / "run"
    common = ["train", "--data", str(data_dir), "--tokenizer", str(tokenizer_dir), "--output", str(run),
              "--config", str(config)]
    assert main([*common, *_tiny(vocab)]) == 0
    record = json.loads((run / "config.json").read_text())
    assert record["model"]["hidden_size"] == 64 and record["changes"] == []
    mixture = record["mixture"]
    assert mixture["stage"] == "stable" and set(mixture["sources"]) == {"en", "zh", "code"}
    assert abs(sum(s["share"] for s in mixture["sources"].values()) - 1) < 1e-9
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [2] and len(samples[0]["samples"]) == 3
    assert (run / "plots" / "loss.png").is_file()
    capsys.readouterr()
    # The same folder with another model shape: the checkpoint cannot be loaded, said in one line.
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert main([*common, *_tiny(vocab, hidden=96), "--train.max_steps", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot be loaded into this model" in err and "step_000002" in err, err
    assert before == {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


def test_init_from_a_llama_export_trains_both_stages_and_resumes(prepared, small_cfg, tokenizer_dir, tmp_path,
                                                                 capsys):
    """A model exported to the Llama layout is a starting point: the first step's loss is that model's loss on
    the first batch (fp32), a decay stage decays from max_lr at its step 0, a shape override is refused, and
    resuming continues the run instead of initialising again."""
    import json

    import torch
    import yaml

    from xmodel.config.core import section_to_dict
    from xmodel.data.mixture import build_sampler
    from xmodel.data.shards import load_manifest
    from xmodel.train.metrics import read_metrics

    config = tmp_path / "data.yaml"
    config.write_text(yaml.safe_dump({"data": section_to_dict(small_cfg)}))
    manifest = load_manifest(prepared.path)
    source, llama = tmp_path / "source", tmp_path / "llama"
    model_args = _tiny(manifest.vocab_size)[2:16]  # the --model.* pairs
    assert main(["init", "nano", str(source), "--tokenizer", str(tokenizer_dir), "--seed", "3", *model_args]) == 0
    assert main(["export", str(source), str(llama), "--to", "llama"]) == 0
    train_args = ["--data", str(prepared.path), "--config", str(config), "--init-from", str(llama),
                  "--train.micro_batch_size", "2", "--train.batch_tokens", "512", "--train.max_steps", "2",
                  "--train.save_every", "2", "--train.eval_sequences", "4", "--train.sample_prompts", "[]",
                  "--train.precision", "fp32", "--train.log_every", "1", "--train.peak_flops", "1e11",
                  "--no-progress"]
    run = tmp_path / "stable"
    assert main(["train", "--output", str(run), *train_args]) == 0
    assert "initialised from" in capsys.readouterr().out
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32)
    first = build_sampler(manifest, small_cfg, stage="stable", seed=0).batch(0, 2)
    with torch.no_grad():
        expected = reference(input_ids=first["input_ids"], labels=first["labels"]).loss.item()
    rows = read_metrics(run / "metrics.jsonl")
    assert rows[0]["step"] == 1 and abs(rows[0]["loss"] - expected) < 1e-5 * expected, (rows[0], expected)
    assert json.loads((run / "config.json").read_text())["init_from"] == str(llama)
    # Resuming continues the run (no second initialisation).
    assert main(["train", "--output", str(run), *train_args, "--train.max_steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "initialised from" not in out
    # A decay stage of the released model: the schedule decays from max_lr at step 0.
    decay = tmp_path / "decay"
    assert main(["train", "--output", str(decay), "--stage", "decay", "--train.schedule.half_life", "2",
                 *train_args]) == 0
    lrs = [r["lr"] for r in read_metrics(decay / "metrics.jsonl") if "loss" in r]
    max_lr = 0.01
    assert lrs == [max_lr * 0.5 ** (s / 2) for s in range(2)]
    capsys.readouterr()
    # The weights fix the shape.
    assert main(["train", "--output", str(tmp_path / "other"), *train_args, "--model.hidden_size", "128"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.hidden_size 128" in err and "drop the override" in err, err


def test_an_imports_config_trains_with_only_data_and_tokenizer(prepared, tokenizer_dir, tmp_path, capsys):
    """`xmodel import` writes an xmodel.yaml that `xmodel train --config` takes with only --data and
    --tokenizer: it starts from the imported weights at a fine-tuning LR, on the mixture the data was prepared
    with."""
    import yaml

    from xmodel.data.shards import load_manifest
    from xmodel.train.metrics import read_metrics

    manifest = load_manifest(prepared.path)
    source, llama, imported = tmp_path / "source", tmp_path / "llama", tmp_path / "imported"
    assert main(["init", "nano", str(source), "--tokenizer", str(tokenizer_dir),
                 *_tiny(manifest.vocab_size)[2:16]]) == 0
    assert main(["export", str(source), str(llama), "--to", "llama"]) == 0
    assert main(["import", str(llama), str(imported)]) == 0
    text = (imported / "xmodel.yaml").read_text()
    assert "fine-tuning rate" in text
    doc = yaml.safe_load(text)
    assert set(doc) == {"model", "train"} and doc["train"]["init_from"] == str(imported.resolve())
    run = tmp_path / "run"
    assert main(["train", "--config", str(imported / "xmodel.yaml"), "--data", str(prepared.path), "--tokenizer",
                 str(tokenizer_dir), "--output", str(run), "--train.max_steps", "2", "--train.batch_tokens", "512",
                 "--train.micro_batch_size", "2", "--train.log_every", "1", "--train.save_every", "2",
                 "--train.eval_sequences", "4", "--train.sample_prompts", "[]", "--no-progress"]) == 0
    assert "initialised from" in capsys.readouterr().out
    lrs = [r["lr"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert lrs == [2e-5 * 1 / 20, 2e-5 * 2 / 20]  # the warmup of a fresh optimizer, up to the fine-tuning LR
