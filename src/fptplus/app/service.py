"""What the app's page asks for, without HTTP: load a run once, predict uploaded images, render the selected tokens
and prompt attention at any layer / head / prompt, browse a split's predictions, hand out the run's plots.

Nothing here writes a file: uploads live in memory (the last `keep` of them), pictures are encoded on the fly.
"""

from __future__ import annotations

import base64
import csv
import io
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.decode import DecodeError, decode_bytes
from ..errors import ConfigError, FPTPlusError
from ..files import display

PLOTS = ("roc_test.png", "confusion_test.png", "curves.png", "reliability_test.png", "roc_val.png")


class AppError(Exception):
    """A message for the page (status: the HTTP status the server answers with)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def png_data_url(array: np.ndarray, max_side: int = 768) -> str:
    """An (H, W, 3) uint8 picture as a data: URL (downscaled so its longer side is at most `max_side`)."""
    img = Image.fromarray(array)
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass
class _Upload:
    name: str
    details: Any  # viz.explain.Details
    image: str = ""  # its input view as a data: URL, encoded once for every re-rendering


class AppService:
    """One trained run, loaded once.

    Args:
        run: a run folder (the --out of `fptplus train`; one seed or fold of it).
        checkpoint: "best" or "last".
        seed: which seed of a multi-seed run.
        keep: how many uploaded images stay available for re-rendering.
        decision: "threshold" (two classes: the positive class from the threshold chosen on validation, when the
            run has one; else the most probable class) or "argmax" (always the most probable class).
    """

    def __init__(self, run: str | Path, checkpoint: str = "best", seed: int | None = None, keep: int = 64,
                 decision: str = "threshold") -> None:  # fmt: skip
        from ..trainer.checkpoint import CheckpointError, read_calibration
        from ..viz.explain import Explainer

        self.ex = Explainer(run, checkpoint, seed, require_fpt=False)
        self.lock = threading.Lock()  # one forward at a time: torch already uses every core
        self.uploads: OrderedDict[str, _Upload] = OrderedDict()
        self.keep = keep
        if decision not in ("threshold", "argmax"):
            raise ConfigError(f"decision must be 'threshold' or 'argmax', got {decision!r}")
        self.threshold = None
        if decision == "threshold" and len(self.ex.classes) == 2 and not self.ex.multilabel and checkpoint == "best":
            try:
                self.threshold = float(read_calibration(self.ex.run_dir, checkpoint)["threshold"]["value"])
            except (CheckpointError, KeyError, TypeError):
                self.threshold = None  # older runs: argmax
        self._index = None

    # -- the run -------------------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        ex = self.ex
        spec = ex.model.spec
        results = {}
        path = ex.run_dir / "results.json"
        if path.exists():
            import json

            try:
                r = json.loads(path.read_text(encoding="utf-8"))
                results = {k: (r.get("test") or {}).get(k) for k in ("auc", "accuracy", "balanced_accuracy")}
            except (OSError, ValueError, AttributeError):
                results = {}  # a damaged results.json: the page shows the run without its test AUC
        return {
            "run": str(ex.run_dir),
            "method": ex.cfg.method,
            "classes": ex.classes,
            "multilabel": ex.multilabel,
            "threshold": self.threshold,
            "layers": ex.layers,
            "heads": spec.num_heads if ex.fpt else 0,
            "prompts": ex.cfg.model.num_prompts if ex.fpt else 0,
            "explains": ex.fpt,
            "splits": [s for s in ("test", "val") if (ex.run_dir / f"predictions_{s}.csv").exists()],
            "plots": [p for p in PLOTS if (ex.run_dir / p).is_file()],
            "test": results,
        }

    def plot(self, name: str) -> bytes:
        """One of the run's own plots (a fixed list: nothing else of the disk is served)."""
        if name not in PLOTS or not (self.ex.run_dir / name).is_file():
            raise AppError(f"no plot {name!r} in this run", 404)
        return (self.ex.run_dir / name).read_bytes()

    # -- predictions ---------------------------------------------------------------------------------------------
    def decision(self, probs: np.ndarray) -> str:
        if self.threshold is not None:
            return self.ex.classes[int(probs[1] >= self.threshold)]
        return self.ex.prediction(probs)

    def predict_bytes(self, data: bytes, name: str) -> dict[str, Any]:
        """Decodes an uploaded image (any format the data layer reads), predicts it and keeps it for `explain`."""
        try:
            image = decode_bytes(data, Path(name).suffix, name, self.ex.cfg.data.max_image_pixels or None)
        except DecodeError as err:
            raise AppError(str(err)) from None
        return self._predict(image, name)

    def _predict(self, image, name: str) -> dict[str, Any]:
        with self.lock:
            details = self.ex.forward(image)
        uid = uuid.uuid4().hex[:12]
        self.uploads[uid] = _Upload(name, details)
        while len(self.uploads) > self.keep:
            self.uploads.popitem(last=False)
        probs = details.probs
        out = {"id": uid, "name": name, "prediction": self.decision(probs),
               "probabilities": dict(zip(self.ex.classes, map(float, probs), strict=True)),
               "threshold": self.threshold}  # fmt: skip
        if self.ex.fpt:
            out["explain"] = self.explain(uid)
        else:
            out["image"] = self._image(self.uploads[uid])
        return out

    def _image(self, upload: _Upload) -> str:
        if not upload.image:
            upload.image = png_data_url(upload.details.base)
        return upload.image

    def explain(self, uid: str, layer: int | None = None, head: int | None = None,
                prompt: int | None = None) -> dict[str, Any]:  # fmt: skip
        """The overlays of a predicted image at one layer / head / prompt (no new forward pass)."""
        if not self.ex.fpt:
            raise AppError(f"{self.ex.cfg.method} runs have no selected tokens or prompts to show")
        upload = self.uploads.get(uid)
        if upload is None:
            raise AppError("that image is no longer in memory; upload it again", 404)
        try:
            r = self.ex.render(upload.details, layer, head, prompt)
        except ConfigError as err:
            raise AppError(str(err)) from None
        return {**r.info, "tokens": png_data_url(r.outlined), "attention": png_data_url(r.heat),
                "image": self._image(upload)}  # fmt: skip

    # -- a split's predictions -----------------------------------------------------------------------------------
    def split(self, name: str, show: str = "all") -> dict[str, Any]:
        """The split's predictions (predictions_SPLIT.csv of training), most confident first; `show`: all, errors,
        fp or fn (binary: false positives / negatives of the positive class, the second one)."""
        if name not in ("test", "val"):
            raise AppError(f"split must be test or val, got {name!r}")
        if show not in ("all", "errors", "fp", "fn"):
            raise AppError(f"show must be all, errors, fp or fn, got {show!r}")
        path = self.ex.run_dir / f"predictions_{name}.csv"
        if not path.exists():
            raise AppError(f"this run has no {path.name}", 404)
        classes = self.ex.classes
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        out = []
        for r in rows:
            probs = np.array([float(r[f"p_{c}"]) for c in classes])
            pred = self.decision(probs)
            row = {"path": r["path"], "label": r["label"], "prediction": pred, "confidence": float(probs.max()),
                   "probabilities": dict(zip(classes, map(float, probs), strict=True))}  # fmt: skip
            if self.ex.multilabel:
                row["confidence"] = float(np.abs(probs - 0.5).max() + 0.5)
            wrong = pred != r["label"]
            positive = classes[-1]
            keep = {"all": True, "errors": wrong, "fp": wrong and pred == positive,
                    "fn": wrong and r["label"] == positive}[show]  # fmt: skip
            if keep:
                out.append(row)
        out.sort(key=lambda x: -x["confidence"])
        return {"split": name, "show": show, "total": len(rows), "rows": out}

    def sample(self, split: str, path: str) -> dict[str, Any]:
        """Predicts (and explains) one image of the run's dataset, named as in the split's predictions."""
        index = self._run_index()
        match = [s for s in index.samples if s.path == path and s.split == split]
        if not match:
            raise AppError(f"{path!r} is not a {split} image of this run's dataset", 404)
        try:
            data, _ = index.reader.read(match[0].path)
        except OSError as err:
            raise AppError(f"{index.name(match[0].path)}: cannot read ({err.strerror or err})") from None
        out = self.predict_bytes(data, match[0].path)
        out["label"] = index.label_text(match[0].label)
        return out

    def _run_index(self):
        if self._index is None:
            from ..trainer.evaluate import run_index

            try:
                self._index = run_index(self.ex.root, self.ex.cfg)
            except FPTPlusError as err:
                raise AppError(f"the run's dataset cannot be read ({err}); the split browser needs it at "
                               f"{display(self.ex.cfg.data.data)}", 404) from None  # fmt: skip
        return self._index
