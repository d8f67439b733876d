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
