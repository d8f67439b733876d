"""`prepare_data` on real data: shards equal a direct encode, SFT masks, idempotent reruns, kill and resume."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from xmodel.data.dedup import load_removed
from xmodel.data.ingest import SkipLog, iter_records, resolve_files, text_of
from xmodel.data.prepare import WORK, prepare_data
from xmodel.data.heldout import is_heldout
from xmodel.data.manifest import load_manifest
from xmodel.data.shards import PackedDataset
from xmodel.data.simhash import content_hash
from xmodel.errors import XmodelError
from xmodel.tokenizer import EOS, IM_END, IM_START, load_tokenizer

from .data_helpers import SMALL, small_data_config


def expected_stream(cfg, root, tok, source_index: int, rank: int, removed: set, split: str) -> list[int]:
    """What task `rank` should have packed for a pretraining source, re-derived with plain `Tokenizer.encode`."""
    src = cfg.sources[source_index]
    eos = tok.token_to_id(EOS)
    cap = -(-cfg.heldout.max_tokens // cfg.tasks)
    files = resolve_files(src.paths, root, src.format, src.name)
    out, heldout = [], 0
    for rec in iter_records(files, src.format, source_index, SkipLog(), max_docs=src.max_docs, rank=rank,
                            world_size=cfg.tasks):
        if rec.uid in removed:
            continue
        text = text_of(rec, src.text_field)
        ids = tok.encode(text, add_special_tokens=False).ids + [eos]
        held = is_heldout(content_hash(text)[0], cfg.heldout.fraction) and heldout + len(ids) <= cap
        if held:
            heldout += len(ids)
        if held == (split == "heldout"):
            out += ids
    return out


@pytest.mark.parametrize("source_index", [0, 1, 2])
def test_shard_tokens_equal_a_direct_encode(prepared, small_cfg, shared_data, tokenizer_dir, source_index):
    tok = load_tokenizer(tokenizer_dir)
    removed = set(load_removed(prepared.path / WORK / "dedup").tolist())
    name = small_cfg.sources[source_index].name
    seq = small_cfg.seq_len
    for split in ("train", "heldout"):
        ds = PackedDataset.of(prepared, name, split)
        for shard in ds.shards:
            rank = int(shard["file"].split("-")[1].split(".")[0])
            want = expected_stream(small_cfg, shared_data, tok, source_index, rank, removed, split)
            got = np.fromfile(ds.path / shard["file"], dtype=ds.dtype)
            assert len(got) == shard["sequences"] * seq == len(want) // seq * seq
            assert got.tolist() == want[: len(got)], f"{name}/{shard['file']}"
    assert prepared.sources[name]["train"]["sequences"] > 10


def test_manifest_counts_and_dtype(prepared, small_cfg):
    m = load_manifest(prepared.path)
    assert m.dtype == "uint16" and m.vocab_size == 4000 and m.seq_len == 256
    assert set(m.sources) == {"en", "zh", "code", "sft.math", "sft.code", "sft.logic", "sft.knowledge",
                              "sft.commonsense"}
    en = m.sources["en"]
    assert en["documents_read"] == 300
    kept = en["documents_read"] - en["exact_removed"] - en["near_removed"]
    assert en["train"]["documents"] + en["heldout"]["documents"] == kept
    assert 0 < en["heldout"]["documents"] < 0.15 * kept
    for key in ("exact_removed", "near_removed"):
        assert {n: s[key] for n, s in m.sources.items()} == m.dedup[key]
    assert sum(m.dedup["exact_removed"].values()) + sum(m.dedup["near_removed"].values()) > 0
    assert m.sources["sft.code"]["skipped"]["counts"] == {"empty_text": 1}  # an empty answer in code_alpaca_2k
    for s in m.sources.values():
        assert s["train"]["tokens"] == s["train"]["sequences"] * 256
        assert all((m.path / "sources").glob("*/*.bin"))
    assert not list(m.path.rglob("*.tmp"))


def test_sft_sequences_train_only_on_assistant_turns(prepared, tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    start, end, eos = tok.token_to_id(IM_START), tok.token_to_id(IM_END), tok.token_to_id(EOS)
    user = tok.encode("user", add_special_tokens=False).ids
    ds = PackedDataset.of(prepared, "sft.math")
    assert ds.has_mask
    trained_end, shares = 0, []
    for i in range(min(len(ds), 40)):
        row = ds[i]
        ids, mask = row["input_ids"], row["loss_mask"]
        assert mask.dtype == bool
        shares.append(mask.mean())
        for j in np.nonzero(ids == start)[0]:
            assert not mask[j]  # turn openers are prompt
            if j + len(user) < len(ids) and ids[j + 1: j + 1 + len(user)].tolist() == user:
                assert not mask[j + 1]
        trained_end += int(mask[ids == end].sum() + mask[ids == eos].sum())
        assert mask[ids == eos].all()
    assert trained_end > 0 and 0.1 < np.mean(shares) < 0.9
    text = tok.decode(ds[0]["input_ids"][ds[0]["loss_mask"]].tolist(), skip_special_tokens=False)
    assert IM_START not in text


def test_rerun_is_a_no_op_and_other_settings_are_refused(prepared, small_cfg, tokenizer_dir, shared_data):
    before = {p: p.stat().st_mtime_ns for p in prepared.path.rglob("*.bin")}
    messages = []
    again = prepare_data(small_cfg, tokenizer_dir, prepared.path, shared_data, progress=False, log=messages.append)
    assert "already prepared" in messages[0] and again.fingerprint == prepared.fingerprint
    assert {p: p.stat().st_mtime_ns for p in prepared.path.rglob("*.bin")} == before
    other = small_data_config(seq_len=128)
    with pytest.raises(XmodelError, match="was prepared with other settings, tokenizer or input files; pass "
                                          "--overwrite"):
        prepare_data(other, tokenizer_dir, prepared.path, shared_data, progress=False)
    # A different number of workers is the same preparation.
    msgs = []
    prepare_data(small_data_config(workers=1), tokenizer_dir, prepared.path, shared_data, progress=False,
                 log=msgs.append)
    assert "already prepared" in msgs[0]


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((folder / "sources").rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_killed_halfway_then_rerun_gives_identical_files(prepared, tokenizer_dir, shared_data, tmp_path):
    """One worker, four tasks: kill the whole process group once the pack stage has finished a task but not all,
    then run the same command again; every shard and index equals the uninterrupted run's."""
    cfg_file = tmp_path / "data.yaml"
    cfg_file.write_text(yaml.safe_dump({"data": SMALL}))
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "xmodel.cli.main", "data", "prepare", "--config", str(cfg_file), "--tokenizer",
           str(tokenizer_dir), "--out", str(out), "--data-root", str(shared_data), "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    completions = out / WORK / "logs" / "pack" / "completions"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        done = len(list(completions.glob("*"))) if completions.is_dir() else 0
        if done >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "prepare finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    done = len(list(completions.glob("*")))
    assert 1 <= done < 4
    for f in (out / "sources").rglob("*.bin"):  # only complete shards carry their final name
        assert f.stat().st_size % (256 * 2) == 0
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert digest(out) == digest(prepared.path)
    assert json.loads((out / "manifest.json").read_text())["sources"] == \
        json.loads((prepared.path / "manifest.json").read_text())["sources"]


def test_packed_dataset_reads_rows_and_rejects_bad_input(prepared):
    ds = PackedDataset(prepared.path, source="en")
    assert len(ds) == prepared.sources["en"]["train"]["sequences"] and ds.seq_len == 256
    row = ds[len(ds) - 1]
    assert row["input_ids"].dtype == np.int64 and row["input_ids"].shape == (256,) and row["loss_mask"] is None
    ids, mask = ds.get_many(np.array([0, len(ds) - 1, 0]))
    assert (ids[0] == ds[0]["input_ids"]).all() and (ids[1] == row["input_ids"]).all() and mask is None
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(XmodelError, match="not a prepared source"):
        PackedDataset(prepared.path / "sources" / "nope")
    assert PackedDataset(prepared.path, split="heldout", source="en").tokenizer_hash == prepared.tokenizer_hash


@pytest.mark.slow
def test_slurm_submission_runs_the_same_pipeline(prepared, small_cfg, tokenizer_dir, shared_data, tmp_path,
                                                monkeypatch):
    """A cluster run without a cluster: a stand-in `sbatch` records the submissions, then every job-array
    element of every stage is run the way Slurm would (the pickled executor, SLURM_ARRAY_TASK_ID set).
    The shards equal the local run's."""
    import dill

    from xmodel.data.prepare import slurm_executors

    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sbatch").write_text("#!/bin/sh\nn=$(ls $0.d 2>/dev/null | wc -l)\nmkdir -p $0.d\n"
                                   "for a in \"$@\"; do last=$a; done\ncp \"$last\" $0.d/job$n.slurm\n"
                                   "echo \"Submitted batch job $((100 + n))\"\n")
    (bindir / "scontrol").write_text("#!/bin/sh\necho node1\n")  # `scontrol show hostnames` on a job's node
    for tool in ("sbatch", "scontrol"):
        (bindir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_NODELIST", "node1")
    out = tmp_path / "cluster"
    executors = slurm_executors(small_cfg, tokenizer_dir, out, shared_data, partition="cpu", time_limit="1:00:00")
    assert [e.job_name for e in executors] == ["xmodel-signatures", "xmodel-pairs", "xmodel-clusters",
                                               "xmodel-pack", "xmodel-manifest"]
    executors[-1].run()
    scripts = sorted((bindir / "sbatch.d").glob("*.slurm"))
    assert len(scripts) >= 5 and "#SBATCH --partition=cpu" in scripts[0].read_text()
    assert "launch_pickled_pipeline" in scripts[0].read_text()
    for e in executors:  # in dependency order, as Slurm would start them
        pik = out / WORK / "logs" / e.job_name.split("-")[1] / "executor.pik"
        with open(pik, "rb") as f:
            job = dill.load(f)
        for i in range(job.tasks):
            monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(i))
            job.run()
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert digest(out) == digest(prepared.path)
    assert load_manifest(out).fingerprint == prepared.fingerprint
