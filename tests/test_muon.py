"""Muon for the hidden matrices, AdamW for the rest: the split, one step against the published algorithm, the
μP scaling of its learning rate, an optimizer switch at a decay branch, and the one-line refusals."""

import json
import math

import pytest
import torch

from xmodel.config import load_config
from xmodel.errors import ConfigError, XmodelError
from xmodel.model import XmodelForCausalLM
from xmodel.train.optimizers import build_optimizers
from xmodel.train.start import Start
from xmodel.train.trainer import train as train_model

from .train_helpers import PatternSource, tiny_train_config


def train(cfg, run_dir, **kwargs):
    return train_model(cfg.model, cfg.train, PatternSource(97, 32), run_dir, progress=False,
                       log=kwargs.pop("log", lambda *_: None), **kwargs)


def muon_config(**overrides):
    return tiny_train_config(4, **{"train.optimizer": "muon", **overrides})


def test_muon_gets_the_hidden_matrices_and_adamw_the_rest():
    cfg = muon_config(**{"model.tie_word_embeddings": False, "model.dim_model_base": 16})
    model = XmodelForCausalLM(cfg.model)
    muon, adamw = build_optimizers(model, cfg.train, torch.device("cpu"))
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    muon_names = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    adamw_names = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    assert all(any(k in n for k in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
               for n in muon_names) and len(muon_names) == 7 * cfg.model.num_hidden_layers
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"} <= adamw_names
    assert not muon_names & adamw_names and len(muon_names | adamw_names) == len(names)
    # μP: the Muon group's learning rate is lr/√m (m = 64/16 = 4), Moonlight's RMS matching inside torch's Muon.
    (group,) = muon.param_groups
    assert group["lr_scale"] == 0.5 and group["adjust_lr_fn"] == "match_rms_adamw" and group["nesterov"]
    # AdamW keeps the rest under the default policy (xmodel-2.5): embedding at lr, norm gains at lr/m.
    assert {g["name"]: g["lr_scale"] for g in adamw.param_groups} == {"embedding": 1.0, "norms": 0.25}


def _newton_schulz5(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Keller Jordan's published quintic iteration (kellerjordan.github.io/posts/muon), written out here."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16()
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


def test_one_muon_step_matches_the_published_algorithm():
    """Two steps (so the momentum matters) on a 48×32 matrix: Nesterov momentum 0.95, NS5, decoupled weight
    decay, update × 0.2·√max(A, B) (Moonlight). Both iterate in bf16, in a different order of operations, so
    the total change may differ by bf16 rounding: tolerance 3 % of it (Frobenius norm)."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(48, 32))
    w0 = w.detach().clone()
    grads = [torch.randn(48, 32), torch.randn(48, 32)]
    lr, wd, mu = 0.02, 0.1, 0.95
    opt = torch.optim.Muon([w], lr=lr, weight_decay=wd, momentum=mu, nesterov=True, adjust_lr_fn="match_rms_adamw")
    ref, keller, buf = w0.clone(), w0.clone(), torch.zeros(48, 32)
    for g in grads:
        w.grad = g.clone()
        opt.step()
        buf = mu * buf + g
        update = _newton_schulz5(g + mu * buf).float()
        ref = ref * (1 - lr * wd) - lr * 0.2 * math.sqrt(48) * update
        keller = keller * (1 - lr * wd) - lr * math.sqrt(max(1, 48 / 32)) * update  # the other published rule
    assert (w.detach() - ref).norm() <= 0.03 * (ref - w0).norm()
    assert (w.detach() - keller).norm() > 0.06 * (keller - w0).norm()  # the test tells the two rules apart
    # The update's RMS is Moonlight's 0.2·lr (what AdamW's updates typically have).
    rms = (lr * 0.2 * math.sqrt(48) * update).pow(2).mean().sqrt()
    assert 0.15 * lr < rms < 0.25 * lr


def test_muon_trains_and_switches_at_a_decay_branch(tmp_path):
    log = []
    stable = train(tiny_train_config(6, **{"train.save_every": 6}), tmp_path / "stable", log=log.append)
    assert stable.losses[-1] < stable.losses[0]
    ckpt_path = stable.last_checkpoint
    # Resuming the AdamW run with Muon is refused, naming both.
    with pytest.raises(XmodelError, match="trained with adamw, not train.optimizer muon"):
        train(muon_config(**{"train.max_steps": 8}), tmp_path / "stable")
    # A decay branch may switch: the model is loaded, Muon starts fresh, and the switch is logged.
    log.clear()
    branch = train(muon_config(), tmp_path / "branch", start=Start(stage="decay", branch_from=ckpt_path),
                   log=log.append)
    assert any("optimizer switched adamw -> muon" in line for line in log)
    assert branch.step == 10 and all(math.isfinite(x) for x in branch.losses)
    state = json.loads((branch.last_checkpoint / "trainer_state.json").read_text())["state"]
    assert state["optimizer"] == "muon" and state["branch_start"] == 6
    # The branch's own checkpoint resumes with Muon's state.
    more = train(muon_config(**{"train.max_steps": 6}), tmp_path / "branch",
                 start=Start(stage="decay", branch_from=ckpt_path), log=log.append)
    assert more.step == 12


def test_unknown_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match="train.optimizer"):
        load_config("nano", overrides={"train.optimizer": "sgd"})
