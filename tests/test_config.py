"""The typed config: presets < YAML < overrides, and one-line errors that name the field."""

import pytest

from xmodel.config import ConfigError, config_to_dict, dump_config, load_config


def test_precedence(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: nano\nmodel:\n  num_hidden_layers: 5\n  hidden_size: 384\n  num_attention_heads: 6\n")
    cfg = load_config(yaml_path=path, overrides=["--model.num_hidden_layers", "7", "model.rope_theta=5e5"])
    m = cfg.model
    assert cfg.preset == "nano"
    assert (m.hidden_size, m.num_hidden_layers, m.intermediate_size) == (384, 7, 640)  # preset kept ffn
    assert m.rope_theta == 500000.0 and isinstance(m.rope_theta, float)


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config("tiny", overrides=["--model.scale_depth", "null"])
    dump_config(cfg, tmp_path / "c.yaml")
    again = load_config(yaml_path=tmp_path / "c.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)
    assert again.model.scale_depth is None


@pytest.mark.parametrize("overrides,message", [
    (["--model.hidden_size", "abc"], "model.hidden_size: expected int, got 'abc'"),
    (["--model.hidden_sise", "256"], "model.hidden_sise: unknown key"),
    (["--model.hidden_size", "250"], "model.hidden_size: 250 is not divisible by num_attention_heads=4"),
    (["--model.num_key_value_heads", "3"], "model.num_key_value_heads: 3 does not divide"),
    (["--model.vocab_size", "0"], "model.vocab_size: must be > 0"),
    (["--model.vocab_size", "-5"], "model.vocab_size: must be > 0"),
    (["--model.scale_emb", "0"], "model.scale_emb: must be > 0"),
    (["--model.tie_word_embeddings", "maybe"], "model.tie_word_embeddings: expected bool"),
    (["--model.pad_token_id", "70000"], "model.pad_token_id: 70000 is outside the vocabulary"),
    (["--optim.lr", "1"], "optim: unknown key"),
    (["--hidden_size", "1"], "hidden_size: an override names section.key"),
])
def test_bad_values_name_the_field(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config("nano", overrides=overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(yaml_path=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden_size: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml:.*invalid YAML"):
        load_config(yaml_path=bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(yaml_path=bad)
    with pytest.raises(ConfigError, match="unknown"):
        load_config("huge")


def test_nested_sections_in_lists_serialise(tmp_path):
    import json

    cfg = load_config("nano", overrides={"data.sources": [{"name": "en", "paths": ["corpora/en/*.jsonl.gz"]}]})
    plain = config_to_dict(cfg)
    assert plain["data"]["sources"][0]["name"] == "en"
    json.dumps(plain)  # every value is plain data
    dump_config(cfg, tmp_path / "c.yaml")
    assert config_to_dict(load_config(yaml_path=tmp_path / "c.yaml")) == plain
