"""Linear probing on the frozen LPM's pooled CLS feature, read from a feature store (no second forward pass).

The store keeps the ViT's pooled feature when its top fused layer is the last block. A linear head is then
trained with the paper's protocol (AdamW, cosine per step, best validation AUC) on these fixed features. It
differs from `--method linear` in one way, stated in its results: the features are not augmented (they are
computed once from the un-augmented high-resolution view).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..logs import get_logger, info_of
from ..metrics import compute_metrics
from ..params import ParamCount
from ..store import FeatureStore
from ..trainer.outputs import write_prediction_rows

_log = get_logger("demo")


def stored_features(store: FeatureStore, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = store.usable(split)
    if "cls" not in store.fields:
        raise ConfigError(f"{store.path} holds no pooled features (its top fused layer is not the ViT's last block)")
    x = torch.stack([store.features(i)["cls"].float() for i in ids])  # (n, D), decoded by the store's codec
    y = torch.tensor([store.samples[i]["label"] for i in ids])
    if len(y) and int(y.max()) >= len(store.classes):
        raise ConfigError(f"{store.path} was preloaded for a multi-label dataset: the stored-feature linear probe is "
                          "single-label; train `--method linear --label-columns ...` instead")  # fmt: skip
    return x, y


def linear_probe(
    store_path: str | Path,
    out: str | Path,
    epochs: int = 20,
    batch_size: int = 16,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    seed: int = 0,
    log=None,
) -> dict[str, Any]:
    """Trains and evaluates a linear head on stored features; writes OUT/results.json."""
    log = info_of(_log, log)
    store = FeatureStore(store_path)
    data = {s: stored_features(store, s) for s in ("train", "val", "test")}
    num_classes, dim = len(store.classes), data["train"][0].shape[1]
    torch.manual_seed(seed)
    head = torch.nn.Linear(dim, num_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(data["train"][1]) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    gen = torch.Generator().manual_seed(seed)
    best, best_state = None, None
    for epoch in range(epochs):
        x, y = data["train"]
        for idx in torch.randperm(len(y), generator=gen).split(batch_size):
            loss = F.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        m = _evaluate(head, *data["val"])
        key = m.auc if m.auc is not None else -m.loss
        if best is None or key > best[0]:
            best, best_state = (key, epoch), {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    test = _evaluate(head, *data["test"], ci=True)
    lpm_params = _lpm_params(store)
    params = ParamCount(
        sum(p.numel() for p in head.parameters()), lpm_params + sum(p.numel() for p in head.parameters())
    )
    results = {
        "method": "linear probing (stored, un-augmented pooled features)",
        "seed": seed,
        "best_epoch": best[1] + 1,
        "params": {"trainable": params.trainable, "total": params.total, "percent": params.percent},
        "val": _evaluate(head, *data["val"]).to_dict(),
        "test": test.to_dict(),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    with torch.no_grad():
        probs = head(data["test"][0]).softmax(-1).numpy()
    names = [store.samples[i]["path"] for i in store.usable("test")]
    write_prediction_rows(out / "predictions_test.csv", names, data["test"][1].numpy(), probs, store.classes)
    log(f"  linear probe, best epoch {best[1] + 1}: test {test.summary()}")
    return results


def _evaluate(head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ci: bool = False):
    with torch.no_grad():
        logits = head(x)
    return compute_metrics(y.numpy(), logits.softmax(-1).numpy(), F.cross_entropy(logits, y).item(), ci=ci)


def _lpm_params(store: FeatureStore) -> int:
    from ..backbones import lpm_spec

    fp = store.fingerprint
    return lpm_spec(fp["backbone"], tuple(fp["lpm_size"]), fp.get("backbone_kwargs", {})).num_params
