"""int8 vs float16 feature stores: the same trained models evaluated on both (is anything lost in storage?).

    python benchmarks/int8_accuracy.py --fp16 runs/isic-uda1/store-fpt_plus-224 \\
        --int8 runs/isic-uda1/store-fpt_plus-224-int8 runs/isic-uda1/fpt_plus-224-lr0.002/seed-* \\
        runs/isic-uda1/fpt_plus_int8-224/seed-*

For every run (a seed folder trained from either store), the best checkpoint's test AUC from the float16 store's
K/V and from the int8 store's codes, the largest probability difference and the share of equal predictions. The
training comparison (3 seeds trained from each store) is in the plan's tables (rows fpt_plus_int8).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fptplus.data.views import Views
from fptplus.metrics import auc
from fptplus.store import FeatureStore
from fptplus.store.codecs import dequantize_int8
from fptplus.store.dataset import StoreDataset
from fptplus.store.plan import store_spec
from fptplus.trainer.evaluate import load_trained


def test_probs(model, cfg, store: FeatureStore) -> tuple[np.ndarray, np.ndarray]:
    spec = store_spec(cfg.model, tuple(store.fingerprint["side_source_size"]))
    ds = StoreDataset(store, store.usable("test"), Views(spec.views), train=False)
    probs, labels = [], []
    with torch.no_grad():
        for s in range(0, len(ds), 32):
            batch = torch.utils.data.default_collate([ds[j] for j in range(s, min(s + 32, len(ds)))])
            args, kwargs = model.batch_args(batch)
            probs.append(model(*args, **kwargs).softmax(-1))
            labels.append(batch["label"])
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def row_error(a: FeatureStore, b: FeatureStore, every: int = 20) -> tuple[float, float, float]:
    """Relative L2 error of the int8 store's K/V rows against the float16 store's (every `every`-th sample), and
    the share of samples whose selected tokens are identical."""
    errors, same, n = [], 0, 0
    for i in range(0, len(a), every):
        ra, rb = a.features(i), b.features(i)
        same, n = same + int(torch.equal(ra["indices"], rb["indices"])), n + 1
        for f in ("keys", "values"):
            x, y = ra[f].float(), dequantize_int8(rb[f], rb[f"{f}_scale"])
            errors.append(((x - y).norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-9)).flatten())
    e = torch.cat(errors)
    return e.mean().item(), e.quantile(0.99).item(), same / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp16", type=Path, required=True)
    ap.add_argument("--int8", type=Path, required=True)
    ap.add_argument("runs", type=Path, nargs="+", help="seed folders of trained FPT+ runs")
    args = ap.parse_args()
    stores = {"float16": FeatureStore(args.fp16), "int8": FeatureStore(args.int8)}
    mean, p99, same = row_error(stores["float16"], stores["int8"])
    print(f"K/V rows, int8 vs float16: relative L2 error mean {100 * mean:.2f} %, p99 {100 * p99:.2f} %; "
          f"identical selected tokens in {100 * same:.0f} % of the samples checked\n")  # fmt: skip
    print("| run | trained from | test AUC, float16 K/V | test AUC, int8 K/V | max abs prob diff | same predictions |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        cfg, model, _ = load_trained(run, "best", "store")
        (pa, la), (pb, lb) = (test_probs(model, cfg, s) for s in stores.values())
        assert np.array_equal(la, lb)
        trained = "int8" if cfg.data.store_dtype == "int8" else "float16"
        print(f"| {run} | {trained} | {100 * auc(la, pa)[0]:.2f} | {100 * auc(lb, pb)[0]:.2f} | "
              f"{np.abs(pa - pb).max():.4f} | {100 * (pa.argmax(1) == pb.argmax(1)).mean():.1f} % |")  # fmt: skip


if __name__ == "__main__":
    main()
