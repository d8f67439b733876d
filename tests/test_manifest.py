"""The manifest module (task reports, split statistics) and the mixture record a training run keeps."""

import json

import pytest

from xmodel.cli.main import main
from xmodel.data.ingest import SkipLog
from xmodel.data.manifest import SourcePacked, SourceReads, SplitStats, TaskReports
from xmodel.data.mixture import build_sampler, load_mixture_record, mixture_record
from xmodel.data.shards import PackedDataset
from xmodel.errors import XmodelError


def shard(sequences, documents, tokens_in, dropped, file="x.bin"):
    return {"file": file if sequences else None, "mask": None, "sequences": sequences, "documents": documents,
            "tokens_in": tokens_in, "tokens_dropped": dropped}


def test_split_stats_merge_counts_every_task_and_lists_only_shards_with_rows():
    stats = SplitStats.merge([shard(3, 5, 800, 32, "a.bin"), shard(0, 1, 40, 40), shard(0, 0, 0, 0),
                              shard(2, 2, 600, 88, "b.bin")], seq_len=256)
    assert (stats.sequences, stats.tokens, stats.documents, stats.tokens_in, stats.tokens_dropped) == \
        (5, 5 * 256, 8, 1440, 160)
    assert [s["file"] for s in stats.shards] == ["a.bin", "b.bin"]
    assert SplitStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats


def test_task_reports_merge_by_kind_without_mixing_kinds(tmp_path):
    reports = TaskReports(tmp_path)
    skips = SkipLog()
    skips.skip("malformed_json", "a.jsonl:3")
    reports.save_reads("pack", 1, {"en": SourceReads(4, skips)})
    reports.save_reads("pack", 0, {"en": SourceReads(2), "zh": SourceReads(7)})
    reports.save_reads("signatures", 0, {"en": SourceReads(100)})
    reports.save_packed(0, {"en": SourcePacked(10, {"train": shard(1, 1, 9, 1)})})
    reads = reports.reads("pack")  # "pack-read-*" files never count as "pack" reports, nor the reverse
    assert {n: r.read for n, r in reads.items()} == {"en": 6, "zh": 7}
    assert reads["en"].skips.counts == {"malformed_json": 1}
    assert [list(task) for task in reports.packed()] == [["en"]]
    assert reports.packed()[0]["en"].chars == 10
    assert reports.dedup() == {}


def test_manifest_split_is_what_the_index_and_the_dataset_hold(prepared):
    for name in prepared.sources:
        for split in ("train", "heldout"):
            stats = prepared.split(name, split)
            ds = PackedDataset.of(prepared, name, split)
            assert len(ds) == stats.sequences and list(stats.shards) == ds.shards
    with pytest.raises(XmodelError, match="no prepared source 'nope'"):
        prepared.split("nope")


def test_a_run_records_its_mixture_and_data_stats_prints_it(prepared, small_cfg, tmp_path, capsys):
    sampler = build_sampler(prepared, small_cfg, "decay", seed=3)
    record = mixture_record(sampler)
    assert record["stage"] == "decay" and record["seed"] == 3 and record["seq_len"] == 256
    assert {n: s["weight"] for n, s in record["sources"].items()} == pytest.approx(small_cfg.stage_weights("decay"))
    assert sum(s["per_block"] for s in record["sources"].values()) == record["block"]
    assert mixture_record(object()) is None  # not a mixture: nothing to record
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {}, "mixture": record}))
    assert load_mixture_record(run) == load_mixture_record(run / "config.json") == json.loads(json.dumps(record))
    assert main(["data", "stats", str(run)]) == 0
    out = capsys.readouterr().out
    assert "decay mixture of" in out and "sft.math" in out and "seed 3" in out
    assert main(["data", "stats", str(run / "config.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sources"].keys() == record["sources"].keys()


def test_a_run_without_a_record_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model": {}}))
    assert main(["data", "stats", str(tmp_path / "config.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json: no mixture recorded" in err[0]
