"""The ReAct loop: episodes advance in lock-step batches, one completion per episode per round.

An `Episode` knows its task's prompt format and environment: it says what it wants completed next (a
`Request`: the shared few-shot prefix, its own text so far and the stop strings) and takes the completion back
(`receive`), stepping its environment. A `Policy` turns a batch of requests into completions: the language
model (`policy.LMPolicy`) or a scripted one (`ScriptedPolicy`, each episode's oracle/expert moves). Keeping the
two apart means the oracle tests exercise exactly the parsing, environment and scoring a model goes through.

`run_episodes` keeps up to ``batch_size`` episodes in flight (a finished one is replaced at once), writes each
finished episode's full trace as a JSONL line and times generation apart from environment work.
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tqdm import tqdm


@dataclass
class Request:
    prefix: str          # the few-shot prompt shared by many episodes (cacheable)
    text: str            # this episode's prompt after the prefix
    stop: list[str]      # the completion ends before the first of these
    episode: "Episode"


@dataclass
class Step:
    thought: str | None
    action: str
    observation: str
    completions: list[str]     # raw model outputs behind this step (two when ReAct's fallback call was needed)


@dataclass
class Episode(ABC):
    """One task instance. Subclasses set `task`, `uid`, `prefix` and fill `text` as the episode runs."""

    task: str = ""
    uid: str = ""
    prefix: str = ""
    text: str = ""
    max_steps: int = 7
    repeat_limit: int = 5              # end after this many identical (action, observation) steps in a row
    steps: list[Step] = field(default_factory=list)
    done: bool = False
    stop_reason: str | None = None     # finished | step_limit | repeated_action | environment_error
    calls: int = 0                     # completions requested
    bad_calls: int = 0                 # completions that needed ReAct's follow-up call
    env_seconds: float = 0.0
    gen_seconds: float = 0.0           # this episode's share of batched generation time
    prompt_tokens_dropped: int = 0     # most tokens ever cut from the left of its prompt to fit the context
    start_error: str | None = None     # why the environment could not start (stop reason environment_error)

    @abstractmethod
    def start(self) -> None:
        """Reset the environment and write the episode's opening text."""

    @abstractmethod
    def request(self) -> Request:
        """What the policy should complete next."""

    @abstractmethod
    def receive(self, completion: str) -> None:
        """Take the policy's completion; step the environment when it holds an action."""

    @abstractmethod
    def scores(self) -> dict:
        """The task's metrics for this episode (e.g. {"em": 1.0} or {"success": 0.0})."""

    def oracle_completion(self) -> str:
        """What a scripted policy writes next (gold actions / expert plan)."""
        raise NotImplementedError(f"{self.task}: no scripted policy")

    def record(self) -> dict:
        """The full trace, as one JSON-able record."""
        return {"task": self.task, "id": self.uid, **self.details(), **self.scores(),
                "stop_reason": self.stop_reason, "n_steps": len(self.steps), "calls": self.calls,
                "bad_calls": self.bad_calls, "prompt_tokens_dropped": self.prompt_tokens_dropped,
                "start_error": self.start_error,
                "env_seconds": round(self.env_seconds, 4), "gen_seconds": round(self.gen_seconds, 4),
                "steps": [vars(s) for s in self.steps], "prompt": self.text}

    def details(self) -> dict:
        return {}

    def close(self) -> None:
        """Release the environment (called once the episode's record is written)."""

    def after_step(self) -> None:
        """Shared stopping rules: the step limit and a run of identical steps."""
        if self.done:
            return
        n = self.repeat_limit
        if n and len(self.steps) >= n:
            tail = {(s.action, s.observation) for s in self.steps[-n:]}
            if len(tail) == 1:
                self.finish("repeated_action")
                return
        if len(self.steps) >= self.max_steps:
            self.finish("step_limit")

    def finish(self, reason: str) -> None:
        self.done = True
        self.stop_reason = reason


class Policy(Protocol):
    def complete(self, requests: list[Request]) -> list[str]: ...


class ScriptedPolicy:
    """Writes each episode's own oracle/expert move: proves the adapter and the metric without a model."""

    def complete(self, requests: list[Request]) -> list[str]:
        return [r.episode.oracle_completion() for r in requests]


@dataclass
class RunStats:
    episodes: int = 0
    rounds: int = 0
    completions: int = 0
    generation_s: float = 0.0
    environment_s: float = 0.0
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        other = max(self.wall_s - self.generation_s - self.environment_s, 0.0)
        wall = self.wall_s or 1e-9
        return {"episodes": self.episodes, "rounds": self.rounds, "completions": self.completions,
                "wall_s": round(self.wall_s, 3), "generation_s": round(self.generation_s, 3),
                "environment_s": round(self.environment_s, 3), "other_s": round(other, 3),
                "generation_share": round(self.generation_s / wall, 4),
                "environment_share": round(self.environment_s / wall, 4),
                "episodes_per_minute": round(60 * self.episodes / wall, 3)}


class TraceWriter:
    """Episode records appended as JSONL to a temporary name, renamed into place when the run completes."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self.fh = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            self.fh = self.tmp.open("w", encoding="utf-8")

    def write(self, record: dict) -> None:
        if self.fh:
            self.fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.fh.flush()

    def close(self, ok: bool) -> None:
        if self.fh:
            self.fh.close()
            if ok:
                self.tmp.replace(self.path)
            else:
                self.tmp.unlink(missing_ok=True)


def run_episodes(episodes: Iterable[Episode], policy: Policy, batch_size: int = 8, traces: Path | None = None,
                 progress: bool = True, desc: str = "episodes") -> tuple[list[dict], RunStats]:
    """Run every episode to its end; returns their records (in input order) and the timing."""
    queue = list(episodes)
    order = {id(ep): i for i, ep in enumerate(queue)}
    queue.reverse()  # pop() from the end keeps the input order
    records: list[dict | None] = [None] * len(order)
    stats = RunStats()
    writer = TraceWriter(traces)
    active: list[Episode] = []
    start_wall = time.perf_counter()
    bar = tqdm(total=len(order), desc=desc, unit="ep", disable=not progress, leave=False)
    ok = False
    try:
        while queue or active:
            while queue and len(active) < batch_size:
                ep = queue.pop()
                t = time.perf_counter()
                try:
                    ep.start()
                except Exception as e:  # a game that will not load ends its episode, not the run
                    ep.start_error = f"{type(e).__name__}: {e}"
                    ep.finish("environment_error")
                ep.env_seconds += time.perf_counter() - t
                stats.environment_s += time.perf_counter() - t
                active.append(ep)
            live = [ep for ep in active if not ep.done]
            if live:
                requests = [ep.request() for ep in live]
                t = time.perf_counter()
                completions = policy.complete(requests)
                spent = time.perf_counter() - t
                stats.generation_s += spent
                stats.rounds += 1
                stats.completions += len(requests)
                for ep, completion in zip(live, completions):
                    ep.calls += 1
                    ep.gen_seconds += spent / len(live)
                    t = time.perf_counter()
                    ep.receive(completion)
                    dt = time.perf_counter() - t
                    ep.env_seconds += dt
                    stats.environment_s += dt
            for ep in [ep for ep in active if ep.done]:
                active.remove(ep)
                rec = ep.record()
                ep.close()
                records[order[id(ep)]] = rec
                writer.write(rec)
                stats.episodes += 1
                bar.update(1)
        ok = True
    finally:
        for ep in active:
            ep.close()
        bar.close()
        writer.close(ok)
        stats.wall_s = time.perf_counter() - start_wall
    return [r for r in records if r is not None], stats
