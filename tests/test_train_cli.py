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
