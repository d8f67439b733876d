"""The `xmodel tokenizer` and `xmodel data` commands end to end (in-process), on real data."""

import json

import yaml

from xmodel.cli.main import main
from xmodel.data.config import builtin_configs, resolve_config_path
from xmodel.tokenizer import load_tokenizer

from .data_helpers import SMALL


def write_config(tmp_path, data=SMALL):
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"data": data}))
    return str(path)


def test_tokenizer_train_with_overrides(tmp_path, shared_data, capsys):
    cfg = write_config(tmp_path)
    out = tmp_path / "tok"
    code = main(["tokenizer", "train", "--config", cfg, "--out", str(out), "--data-root", str(shared_data),
                 "--vocab-size", "1500", "--data.tokenizer.sample_chars", "80000"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "tokenizer sample: " in printed and f"wrote {out} (hash " in printed
    assert load_tokenizer(out).get_vocab_size() == 1500
    meta = json.loads((out / "xmodel_tokenizer.json").read_text())
    assert meta["settings"]["sample_chars"] == 80000 and set(meta["sample_chars"]) == {"en", "zh", "code"}
    assert main(["tokenizer", "train", "--config", cfg, "--out", str(out), "--data-root", str(shared_data)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_tokenizer_stats_prints_fertility_against_bpe(tmp_path, tokenizer_dir, shared_data, capsys):
    code = main(["tokenizer", "stats", str(tokenizer_dir), "--config", write_config(tmp_path), "--data-root",
                 str(shared_data), "--chars", "20000"])
    assert code == 0
    out = capsys.readouterr().out
    assert "BPE baseline 4,000 entries" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[3:6]}
    assert set(rows) == {"en", "zh", "code"}
    for row in rows.values():
        assert 0.1 < float(row[3]) < 1.2 and 0.7 < float(row[-1]) < 1.4  # tok/char, ours/BPE


def test_data_stats_table_and_json(prepared, capsys):
    assert main(["data", "stats", str(prepared.path), "--sequences", "5000"]) == 0
    out = capsys.readouterr().out
    for needle in ("source", "dup rate", "sft.commonsense", "stable mixture (seed 0, first 5,000 sequences)",
                   "decay mixture"):
        assert needle in out
    assert main(["data", "stats", str(prepared.path), "--json", "--stage", "decay", "--seed", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["mixtures"]) == {"decay"}
    mix = result["mixtures"]["decay"]
    assert all(abs(mix["realised"][n] - w) <= 0.01 for n, w in mix["configured"].items())
    en = result["sources"]["en"]
    assert en["documents_read"] == 300 and en["train_sequences"] == prepared.sources["en"]["train"]["sequences"]


def test_quickstart_config_is_packaged_and_valid(shared_data):
    from xmodel.config import load_config

    assert "quickstart" in builtin_configs()
    cfg = load_config(yaml_path=resolve_config_path("quickstart")).data
    assert {s.language for s in cfg.sources} == {"en", "zh", "code"}
    assert cfg.decay.sft_share == 0.64 and set(cfg.decay.sft) == {"math", "code", "logic", "knowledge", "commonsense"}
    from xmodel.data.prepare import build_inputs

    inputs = build_inputs(cfg, shared_data, check=True)  # every path exists and every file reads
    assert len(inputs) == len(cfg.sources) + sum(len(v) for v in cfg.decay.sft.values())
