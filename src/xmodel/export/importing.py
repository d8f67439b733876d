"""`xmodel import`: a Hugging Face checkpoint of another layout (see `model.convert`) written out as an Xmodel
checkpoint directory, with its tokenizer and a training config that continues from it.

The result is a normal Xmodel checkpoint: it can be evaluated, trained further or given a new decay stage.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import XmodelError
from ..model.configuration_xmodel import XmodelConfig
from ..model.convert import DTYPES, as_xmodel, detect_layout, read_config
from ..model.loading import load_model_dir, save_model
from .llama import copy_tokenizer_files, staged_dir


def import_checkpoint(src: str | Path, out: str | Path, mup: dict | None = None,
                      dtype: str | None = None) -> tuple[Path, str, XmodelConfig]:
    """Convert `src` into an Xmodel checkpoint directory `out` (tokenizer files copied): (out, layout, config)."""
    src, out = Path(src), Path(out)
    if out.exists() and any(out.iterdir()):
        raise XmodelError(f"{out}: exists and is not empty")
    if not src.is_dir():
        raise XmodelError(f"{src}: no such checkpoint directory")
    layout = detect_layout(read_config(src), src)
    model = load_model_dir(src, "cpu", DTYPES[dtype] if dtype else None, foreign=as_xmodel(mup))
    with staged_dir(out) as tmp:
        save_model(model, tmp)
        copy_tokenizer_files(src, tmp)
        write_training_config(model.config, out, tmp / "xmodel.yaml")
    return out, layout, model.config


# Fine-tuning defaults for pretrained weights: a from-scratch μP max LR (0.01) would wreck them.
FINETUNE_LR = 2e-5
FINETUNE_WARMUP = 20


def write_training_config(model_config: XmodelConfig, model_dir: Path, path: Path) -> None:
    """An xmodel.yaml that `xmodel train --config` takes with only --data and --tokenizer: the model section,
    init_from this folder, and a fine-tuning LR with a short warmup (the optimizer starts fresh). No data
    section: the run trains on the mixture its prepared directory was made with."""
    import yaml

    from ..config.core import section_to_dict

    doc = {"model": section_to_dict(model_config),
           "train": {"init_from": str(Path(model_dir).resolve()),
                     "schedule": {"max_lr": FINETUNE_LR, "warmup_steps": FINETUNE_WARMUP}}}
    header = (f"# written by xmodel import: continue training this model with\n"
              f"#   xmodel train --config {path.name} --data PREPARED_DIR --tokenizer TOKENIZER_DIR "
              f"[--stage decay]\n"
              f"# train.schedule.max_lr {FINETUNE_LR:g} is a fine-tuning rate for pretrained weights (a from-scratch "
              f"μP max LR such as 0.01 would wreck them);\n# warmup_steps {FINETUNE_WARMUP}: the optimizer starts "
              f"fresh. Without a data section the run uses the mixture its data was prepared with.\n")
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
