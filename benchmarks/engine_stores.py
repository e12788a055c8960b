"""Two feature stores of one fingerprint written by different engines (`--engine torch` vs `openvino`): what differs
in the stored features, and what that does to the same trained models (issue 29).

    python benchmarks/engine_stores.py runs/covid-eng/torch/store runs/covid-eng/openvino/store \\
        runs/covid-eng/torch/seed-* runs/covid-eng/openvino/seed-*

1. Every sample: the share of (layer, head) rows whose selected token set is identical, the share of equal tokens
   (each row's indices sorted), and on the identical rows the largest |K/V difference| relative to the row's scale.
2. Every run given (a seed folder trained from either store): its best checkpoint's test AUC computed from store A's
   features and from store B's, the largest probability difference, and the share of equal predictions. If the
   same model scores the same from both, a difference between models *trained* from them is training noise, not
   storage.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from int8_accuracy import test_probs  # the same evaluation over a store's test split

from fptplus.metrics import auc
from fptplus.store import FeatureStore
from fptplus.trainer.evaluate import load_trained


def compare_features(a: FeatureStore, b: FeatureStore) -> dict[str, float]:
    same_rows = same_tokens = rows = tokens = 0
    worst = 0.0
    for i in range(len(a)):
        fa, fb = a.features(i), b.features(i)
        ia, oa = fa["indices"].long().sort(-1)  # (L, H, k) token positions in ascending order
        ib, ob = fb["indices"].long().sort(-1)
        eq = ia == ib
        row_same = eq.all(-1)  # (L, H)
        same_rows, rows = same_rows + int(row_same.sum()), rows + row_same.numel()
        same_tokens, tokens = same_tokens + int(eq.sum()), tokens + eq.numel()
        for name in ("keys", "values"):
            xa = fa[name].float().gather(2, oa[..., None].expand(*oa.shape, fa[name].shape[-1]))[row_same]
            xb = fb[name].float().gather(2, ob[..., None].expand(*ob.shape, fb[name].shape[-1]))[row_same]
            if xa.numel():
                worst = max(worst, ((xa - xb).abs().amax(-1) / xa.abs().amax(-1).clamp_min(1e-6)).max().item())
    return {"identical_rows": same_rows / rows, "equal_tokens": same_tokens / tokens, "max_rel_kv_diff": worst}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store_a", type=Path)
    ap.add_argument("store_b", type=Path)
    ap.add_argument("runs", type=Path, nargs="*", help="seed folders of FPT+ runs trained from either store")
    args = ap.parse_args()
    a, b = FeatureStore(args.store_a), FeatureStore(args.store_b)
    if a.fingerprint != b.fingerprint:
        raise SystemExit("the two stores have different fingerprints: not the same features to compare")
    c = compare_features(a, b)
    print(f"{len(a)} samples: identical token sets in {100 * c['identical_rows']:.3f} % of (layer, head) rows, "
          f"{100 * c['equal_tokens']:.3f} % of tokens equal; K/V on identical rows within "
          f"{c['max_rel_kv_diff']:.2e} of the row's largest value\n")  # fmt: skip
    print(f"| run | test AUC from A ({args.store_a}) | from B ({args.store_b}) | max abs prob diff | "
          "same predictions |")  # fmt: skip
    print("|---|---|---|---|---|")
    with torch.no_grad():
        for run in args.runs:
            cfg, model, _ = load_trained(run, "best", "store")
            (pa, la), (pb, lb) = test_probs(model, cfg, a), test_probs(model, cfg, b)
            assert np.array_equal(la, lb)
            print(f"| {run} | {100 * auc(la, pa)[0]:.2f} | {100 * auc(lb, pb)[0]:.2f} | {np.abs(pa - pb).max():.4f} | "
                  f"{100 * (pa.argmax(1) == pb.argmax(1)).mean():.1f} % |")  # fmt: skip


if __name__ == "__main__":
    main()
