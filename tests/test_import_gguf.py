"""`xmodel import FILE.gguf OUT`: a llama-architecture GGUF file becomes an Xmodel checkpoint whose logits are
those of transformers' own GGUF loader on the same file (fp32), with the file's tokenizer."""

import gzip
import json

import pytest
import torch

from xmodel.cli.main import main


@pytest.fixture(scope="module")
def source(tmp_path_factory, shared_data):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("gguf-import")
    with gzip.open(shared_data / "corpora/en/english_public_domain.jsonl.gz", "rt", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for _, line in zip(range(100), fh)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                            bos_token="<|endoftext|>").save_pretrained(root / "tokenizer")
    assert main(["init", "nano", str(root / "model"), "--tokenizer", str(root / "tokenizer"), "--seed", "1",
                 "--model.vocab_size", "640", "--model.hidden_size", "64", "--model.intermediate_size", "128",
                 "--model.num_hidden_layers", "2", "--model.num_attention_heads", "4",
                 "--model.num_key_value_heads", "2", "--model.max_position_embeddings", "128"]) == 0
    return root


@pytest.mark.parametrize("gguf_type", ["f32", "f16", "q8_0", "q4_0"])
def test_imported_gguf_matches_transformers_loader(source, tmp_path, gguf_type):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = tmp_path / f"m-{gguf_type}.gguf"
    assert main(["export", str(source / "model"), str(gguf_file), "--to", "gguf", "--type", gguf_type]) == 0
    out = tmp_path / "imported"
    assert main(["import", str(gguf_file), str(out)]) == 0
    reference = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf_file.name, dtype=torch.float32)
    ours = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert type(ours).__name__ == "XmodelForCausalLM"
    ids = torch.randint(0, 600, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(ids).logits - reference(ids).logits).abs().max().item() < 1e-4
    text = "The quick brown fox, said Hamlet."
    assert (AutoTokenizer.from_pretrained(out)(text).input_ids
            == AutoTokenizer.from_pretrained(tmp_path, gguf_file=gguf_file.name)(text).input_ids)
    assert (out / "xmodel.yaml").is_file()


def test_gguf_bad_inputs_are_one_line(source, tmp_path, capsys):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(range(200)))
    for args, needle in ([[str(junk), str(tmp_path / "a")], "not a readable GGUF file"],
                         [[str(tmp_path / "none.gguf"), str(tmp_path / "b")], "no such GGUF file"]):
        assert main(["import", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and needle in err, err
        assert not (tmp_path / args[1]).exists()
