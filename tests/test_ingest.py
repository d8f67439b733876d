"""Ingestion of real files in every format, and what each bad input gives: a one-line error or a counted skip."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from xmodel.cli.main import main
from xmodel.data.ingest import SkipLog, check_source, iter_records, resolve_files, text_of
from xmodel.data.root import data_root
from xmodel.errors import XmodelError


EN = "corpora/en/english_public_domain.jsonl.gz"


def real_docs(root: Path, n: int = 50) -> list[dict]:
    with gzip.open(root / EN, "rt", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


def read_texts(files, fmt="auto", field="text", **kw):
    skips = SkipLog()
    texts = []
    for rec in iter_records(files, fmt, 0, skips, columns=[field], **kw):
        try:
            texts.append(text_of(rec, field))
        except Exception as e:  # SkipRecord
            skips.skip(e.reason, rec.where, e.detail)
    return texts, skips


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "xmodel.cli.main", *args], capture_output=True, text=True,
                          timeout=300, env=env)


# ---- formats --------------------------------------------------------------------------------------------------

def test_jsonl_gz_text_parquet_and_datasets_give_the_same_documents(shared_data, tmp_path):
    docs = real_docs(shared_data, 40)
    want = [d["text"] for d in docs]
    got, skips = read_texts([shared_data / EN], max_docs=40)
    assert got == want and skips.total == 0

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": want, "source": [d["source"] for d in docs]}), tmp_path / "en.parquet")
    got, _ = read_texts([tmp_path / "en.parquet"])
    assert got == want

    import datasets

    datasets.Dataset.from_dict({"text": want}).save_to_disk(str(tmp_path / "en_ds"))
    got, _ = read_texts([tmp_path / "en_ds"])
    assert got == want

    (tmp_path / "en.txt").write_text("\n\n".join(want), encoding="utf-8")
    got, _ = read_texts([tmp_path / "en.txt"], text_split="file")
    assert got == ["\n\n".join(want)]


def test_text_split_by_paragraph_and_line(shared_data):
    path = shared_data / "corpora/en/tinyshakespeare.txt"
    paragraphs, _ = read_texts([path], text_split="paragraph")
    raw = path.read_text(encoding="utf-8")
    assert paragraphs[0] == raw.split("\n\n")[0]
    assert len(paragraphs) == len([p for p in raw.split("\n\n") if p.strip()])
    lines, _ = read_texts([path], text_split="line", max_docs=100)
    assert lines == [x for x in raw.splitlines() if x.strip()][:100]


def test_tasks_split_the_records_disjointly_and_completely(shared_data):
    files = [shared_data / EN]
    full = [r.uid for r in iter_records(files, "auto", 3, SkipLog(), max_docs=500)]
    parts = [[r.uid for r in iter_records(files, "auto", 3, SkipLog(), max_docs=500, rank=k, world_size=3)]
             for k in range(3)]
    assert sorted(sum(parts, [])) == full and len(set(full)) == 500
    assert all(uid >> 56 == 3 for uid in full)  # the source index lives in the top byte


def test_tasks_get_equal_bytes_when_document_lengths_vary(shared_data, tmp_path):
    # Real documents, every tenth one made 40x longer: dealing by count would give the task that happens to
    # own the long ones far more text; dealing by size keeps every task within one document of the mean.
    docs = real_docs(shared_data, 400)
    path = tmp_path / "skewed.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            text = d["text"] * (40 if i % 10 == 0 else 1)
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    sizes = [sum(len(json.dumps({"text": text_of(r, "text")}, ensure_ascii=False)) for r in
                 iter_records([path], "auto", 0, SkipLog(), rank=k, world_size=3)) for k in range(3)]
    longest = max(len(line) for line in path.read_text(encoding="utf-8").splitlines())
    assert max(sizes) - min(sizes) <= longest
    assert max(sizes) / min(sizes) < 1.1


# ---- bad inputs -------------------------------------------------------------------------------------------------

def test_malformed_json_and_invalid_utf8_are_counted_with_their_line(shared_data, tmp_path):
    docs = real_docs(shared_data, 5)
    lines = [json.dumps(d).encode() for d in docs]
    lines[1] = b'{"text": "cut off'
    lines[3] = json.dumps(docs[3]).encode().replace(b"a", b"\xff\xfe", 1)
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    texts, skips = read_texts([path])
    assert texts == [docs[0]["text"], docs[2]["text"], docs[4]["text"]]
    assert skips.counts == {"malformed_json": 1, "invalid_utf8": 1}
    assert skips.examples[0].startswith(f"{path}:2: malformed json")
    assert skips.examples[1].startswith(f"{path}:4: invalid utf8")


def test_missing_or_non_text_field_is_a_counted_skip(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text": "a real line"}\n{"body": "x"}\n{"text": 7}\n{"text": "  "}\n')
    texts, skips = read_texts([path])
    assert texts == ["a real line"]
    assert skips.counts == {"missing_field": 1, "not_text": 1, "empty_text": 1}
    assert f"{path}:2: missing field (no field 'text'; fields: body)" in skips.examples


def check(path: Path, field="text"):
    check_source("src", [path], "auto", lambda rec: text_of(rec, field), labels=[path.name])


def test_wrong_field_name_is_one_line_error(shared_data):
    with pytest.raises(XmodelError) as e:
        check(shared_data / EN, field="txt")
    msg = str(e.value)
    assert "\n" not in msg
    assert "source src: no usable record in the first 200 of english_public_domain.jsonl.gz (missing field: 200" in msg
    assert "fields: text, source, chunk" in msg


def test_empty_file_is_an_error_alone_and_a_counted_skip_among_others(shared_data, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(XmodelError, match="^source src: empty.jsonl: empty file$"):
        check(empty)
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(d) for d in real_docs(shared_data, 3)) + "\n")
    check_source("src", [empty, good], "auto", lambda rec: text_of(rec, "text"))  # no error
    texts, skips = read_texts([empty, good])
    assert len(texts) == 3 and skips.counts == {"empty_file": 1}


def test_missing_path_is_one_line_error(shared_data):
    with pytest.raises(XmodelError, match="^source en: corpora/en/nope.jsonl matches no file under "):
        resolve_files(["corpora/en/nope.jsonl"], shared_data, "auto", "source en")
    with pytest.raises(XmodelError, match="no such file"):
        resolve_files(["/no/such/file.jsonl"], shared_data, "auto", "source en")


def test_vocab_and_tokenizer_mismatch_are_refused(shared_data, tmp_path, tokenizer_dir, char_tokenizer_dir):
    from xmodel.data.prepare import prepare_data
    from xmodel.data.shards import PackedDataset, check_tokenizer, check_vocab

    from .data_helpers import small_data_config
    cfg = small_data_config(sources=[{"name": "en", "paths": [EN], "max_docs": 30}], decay={"sft": {}},
                            dedup={"near": False}, tasks=1, workers=1, seq_len=64)
    m = prepare_data(cfg, tokenizer_dir, tmp_path / "p", shared_data, progress=False, log=lambda *_: None)
    check_tokenizer(m, tokenizer_dir)  # the same tokenizer passes
    with pytest.raises(XmodelError, match="shards were tokenised with tokenizer .* not with this tokenizer"):
        check_tokenizer(tmp_path / "p", char_tokenizer_dir)
    with pytest.raises(XmodelError, match="the shards' tokenizer has 4000 tokens but model.vocab_size is 211"):
        check_vocab(m, 211)
    check_vocab(PackedDataset.of(m, "en"), 4000)


def test_data_root_precedence_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("XMODEL_DATA_ROOT", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    assert data_root(str(tmp_path / ".")) == tmp_path.resolve()
    with pytest.raises(XmodelError, match=r"^--data-root /no/where: no such directory$"):
        data_root("/no/where")
    monkeypatch.setenv("XMODEL_DATA_ROOT", "/no/where")
    with pytest.raises(XmodelError, match=r"^XMODEL_DATA_ROOT=/no/where: no such directory$"):
        data_root()


@pytest.mark.parametrize("change,needle", [
    ({"paths": ["corpora/en/missing.jsonl.gz"]}, "source en: corpora/en/missing.jsonl.gz matches no file under"),
    ({"text_field": "body"}, "source en: no usable record in the first 200 of corpora/en/english_public_domain"
                             ".jsonl.gz (missing field: 200"),
    ({"weight": -1}, "data.sources[0].weight: must be >= 0"),
    ({"format": "csv"}, "data.sources[0].format: must be one of"),
])
def test_prepare_cli_bad_config_is_one_line(tmp_path, tokenizer_dir, shared_data, change, needle, capsys):
    import yaml

    source = {"name": "en", "paths": [EN], "max_docs": 20, **change}
    cfg = tmp_path / "data.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"sources": [source], "seq_len": 64}}))
    code = main(["data", "prepare", "--config", str(cfg), "--tokenizer", str(tokenizer_dir), "--out",
                 str(tmp_path / "out"), "--data-root", str(shared_data), "--no-progress"])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1, err
    assert needle in lines[0]
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("args,needle", [
    (["data", "stats", "{tmp}/none"], "not a prepared data directory"),
    (["data", "prepare", "--config", "quickstart", "--out", "{tmp}/o"], "--tokenizer: no tokenizer given"),
    (["data", "prepare", "--config", "quickstart", "--tokenizer", "{tmp}/nope", "--out", "{tmp}/o"],
     "no such tokenizer directory"),
    (["tokenizer", "train", "--config", "{tmp}/missing.yaml", "--out", "{tmp}/t"], "config file not found"),
])
def test_cli_bad_arguments_are_one_line(tmp_path, shared_data, args, needle, capsys):
    code = main([a.format(tmp=tmp_path) for a in args] + ["--data-root", str(shared_data)]
                if args[1] == "prepare" else [a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_cli_error_in_a_fresh_process_has_no_traceback(tmp_path):
    res = run_cli("data", "stats", str(tmp_path / "none"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_prepare_counts_bad_records_with_their_location(shared_data, tmp_path, tokenizer_dir):
    from xmodel.data.prepare import prepare_data

    from .data_helpers import small_data_config

    docs = real_docs(shared_data, 60)
    lines = [json.dumps(d).encode() for d in docs]
    lines[7] = b'{"text": broken'
    lines[20] = json.dumps(docs[20]).encode().replace(b"e", b"\xc3\x28", 1)
    lines[33] = b'{"body": "no text field"}'
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    cfg = small_data_config(sources=[{"name": "en", "paths": [str(bad)]}], decay={"sft": {}}, tasks=2, workers=2,
                            seq_len=64)
    m = prepare_data(cfg, tokenizer_dir, tmp_path / "p", shared_data, progress=False, log=lambda *_: None)
    skipped = m.sources["en"]["skipped"]
    assert skipped["counts"] == {"invalid_utf8": 1, "malformed_json": 1, "missing_field": 1}
    assert sorted(e.split(": ")[0] for e in skipped["examples"]) == [f"{bad}:21", f"{bad}:34", f"{bad}:8"]
    assert m.sources["en"]["documents_read"] == 57
