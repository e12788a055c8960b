"""What a run needs before its first step: the checked dataset, the feature store (built, or a matching one
reused) or a decode pass over the images, and what the side network will read, said out loud."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import RunConfig
from ..data.copies import cross_split_copies
from ..data.scan import check_bad, resize_note, scan_images
from ..data.sources import DataIndex
from ..errors import ConfigError
from ..methods import get_method
from ..store import FeatureStore, PreloadOptions, preload
from ..store.format import MANIFEST, record_user


def load_data(cfg: RunConfig, log: Callable[[str], None]) -> DataIndex:
    """The run's dataset, checked (see `data.checks`), its warnings logged; sets the model's class count."""
    if not cfg.data.data:
        raise ConfigError("no dataset given: pass --data FOLDER_OR_CSV")
    index = cfg.data.load_index()
    if index.multilabel and cfg.data.ordinal:
        raise ConfigError("--ordinal (graded classes) and --label-columns (multi-label) exclude each other")
    log(index.describe())
    for warning in index.warnings:
        log(f"warning: {warning}")
    crossing = cross_split_copies(cfg.data.data, index)
    if crossing:
        (first, a), (second, b) = crossing["crossing"][0][:2]
        log(f"warning: the audit of this dataset ({crossing['report']}) found {len(crossing['crossing'])} group(s) of "
            f"copies that this split puts in two splits, e.g. {first} ({a}) and {second} ({b}): the test AUC counts "
            "images the model was trained on. Train on the audit's grouped.csv (next to its report) — its "
            "automatic split keeps each group in one split")  # fmt: skip
    if cfg.model.num_classes != len(index.classes):
        cfg.model.num_classes = len(index.classes)
    return index


def store_path(cfg: RunConfig, root: Path) -> Path | None:
    """Where this run's feature store lives (None when it trains online)."""
    if not (get_method(cfg.method).uses_store(cfg.model) and cfg.train.preload):
        return None
    return Path(cfg.data.store) if cfg.data.store else root / "store"


def prepare_inputs(
    cfg: RunConfig, root: Path, index: DataIndex, store_at: Path | None, log: Callable[[str], None]
) -> tuple[FeatureStore | None, list[int]]:
    """Builds or checks the feature store (FPT/FPT+, the probes), or decodes every image once (online).

    A probe reads any complete store that holds its features (e.g. an FPT+ run's); without one it builds FPT+'s
    default store for its backbone and resolution.
    """
    if store_at is not None:
        inputs = get_method(cfg.method).inputs
        if not (getattr(inputs, "reads_any_store", False) and (store_at / MANIFEST).exists()):
            options = PreloadOptions(
                dtype=cfg.data.store_dtype,
                batch_size=cfg.train.batch_size,
                num_workers=cfg.train.num_workers,
                skip_bad=cfg.data.skip_bad,
                resize=cfg.data.geometry,
                store_ratio=cfg.data.store_ratio if not getattr(inputs, "reads_any_store", False) else None,
                engine=cfg.train.engine,
                threads=cfg.train.threads,
            )  # a store shared by several runs (--store) is written by one of them; the others wait, then reuse it
            preload(index, inputs.store_config(cfg.model), store_at, options, log=log)
        store = FeatureStore(store_at)
        inputs.check_store(store, cfg.model, index, cfg.data.geometry)
        if store_at.resolve() not in root.resolve().parents:  # a shared store: it knows who reads it
            record_user(store_at, root)
        note = resize_note([tuple(s["hw"]) for s in store.samples if s.get("hw")], cfg.data.geometry)
        if note:
            log(f"note: {note}")
        return store, store.usable()
    log("checking that every image decodes (online training)")
    sizes: list[tuple[int, int]] = []
    usable = check_bad(index, scan_images(index, cfg.train.num_workers, sizes), cfg.data.skip_bad, root)
    note = resize_note(sizes, cfg.data.geometry)
    if note:
        log(f"note: {note}")
    return None, usable


MIN_SIDE_PATCHES = 4  # fewer patches per side and the side network sees a handful of tokens


def side_note(model, log) -> None:
    """Says what the side network reads (the default is easy to miss: 224 px → 56 px, 4 × 4 patches)."""
    (h, w), (ph, pw) = model.side.img_size, tuple(model.side.vit.patch_embed.patch_size)
    log(f"side network input: {h}x{w} px = {h // ph}x{w // pw} patches of {ph} px (--side-img-size; default: the "
        "patch multiple nearest a quarter of --img-size)")  # fmt: skip
    if min(h // ph, w // pw) < MIN_SIDE_PATCHES:
        log(f"warning: {h // ph}x{w // pw} patches are too few for the side network to see anything; pass "
            f"--side-img-size {MIN_SIDE_PATCHES * ph} or more")  # fmt: skip
