"""Hostile inputs: what a user sees for each odd, damaged or concurrent input — now, and (with --before) at an
older checkout of fptplus, run side by side on the same generated files.

    git worktree add /tmp/fptplus-09d9627 09d9627
    .venv/bin/python benchmarks/hostile/run.py --before /tmp/fptplus-09d9627/src --trials 10
    .venv/bin/python benchmarks/hostile/run.py --before /tmp/fptplus-513962f/src --trials 0 --round 2  # round two

Every case runs the real command line (`python -m fptplus.cli ...`) in a fresh process on a tiny random ViT and a
few generated images; "what the user sees" is the exit status and the last line on stderr (or, when a command
succeeds, what it silently did). Writes results.json and table.md next to this file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
TINY = {"depth": 2, "embed_dim": 32, "num_heads": 4}
MODEL = ["--img-size", "64", "--side-img-size", "32", "--backbone-kwargs", repr(TINY), "--side-depth", "2",
         "--reduction", "2", "--num-prompts", "4"]  # fmt: skip
RSS = (  # runs the command, then writes its peak resident memory (KiB) to argv[1]
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(r.returncode if r.returncode >= 0 else 128 - r.returncode)"
)
NO_DISK_CHECK = (  # as if another process filled the disk after the up-front check
    "import sys, fptplus.store.writer as w; w.check_disk = lambda *a: None; "
    "from fptplus.cli import main; sys.exit(main(sys.argv[1:]))"
)


@dataclass
class Result:
    rc: int
    out: str
    err: str
    rss_mb: float
    seconds: float

    def seen(self) -> str:
        """Exit status and what the user reads: fptplus's error (2 lines at most), or a traceback's last line."""
        status = f"rc {self.rc}" if self.rc >= 0 else f"killed by signal {-self.rc}"
        lines = [line.strip() for line in self.err.strip().splitlines() if line.strip()]
        if "Traceback" in self.err:
            return f"{status} (traceback): {lines[-1][:260]}"
        start = next((i for i, line in enumerate(lines) if ": error: " in line), None)
        if start is None:
            return f"{status}: {lines[-1][:260]}" if lines else status
        return f"{status}: {' / '.join(lines[start : start + 2])[:300]}"


class Fptplus:
    """Runs `python -m fptplus.cli` from one source tree (None: the installed package)."""

    def __init__(self, src: Path | None, weights: Path) -> None:
        self.src, self.weights = src, weights

    @staticmethod
    def stop(proc: subprocess.Popen) -> None:
        """Kills a command started with wait=False and everything under it (the RSS wrapper's child holds the
        pipes: killing the wrapper alone left `communicate()` waiting for a still-serving app)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, "PYTHONWARNINGS": "ignore", **(extra or {})}
        if self.src:
            env["PYTHONPATH"] = str(self.src)
        return env

    def __call__(self, *args: str, env=None, code: str | None = None, wait: bool = True, cwd: Path | None = None):
        rss_file = tempfile.mktemp()
        entry = ["-c", code] if code else ["-m", "fptplus.cli"]
        cmd = [sys.executable, "-c", RSS, rss_file, sys.executable, *entry, *map(str, args)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(  # its own process group: stop() ends the RSS wrapper *and* the command under it
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(env),
            cwd=cwd,
            start_new_session=True,
        )
        if not wait:
            return proc
        out, err = proc.communicate(timeout=900)
        rss = float(Path(rss_file).read_text()) / 1024 if Path(rss_file).exists() else 0.0
        Path(rss_file).unlink(missing_ok=True)
        rc = proc.returncode if proc.returncode < 128 else -(proc.returncode - 128)  # signal deaths via the wrapper
        return Result(rc, out, err, rss, time.perf_counter() - t0)

    def preload(self, data: Path, out: Path, *extra: str, **kw):  # kw: env, code, wait, cwd
        args = ["preload", "--data", data, "--out", out, *MODEL, "--weights", self.weights, "--batch-size", "2",
                "--workers", "0", *extra]  # fmt: skip
        return self(*args, **kw)

    def train(self, data: Path, out: Path, *extra: str, **kw):
        args = ["train", "--data", data, "--out", out, *MODEL, "--weights", self.weights, "--epochs", "1",
                "--batch-size", "4", "--num-workers", "0", "--bootstrap", "0", *extra]  # fmt: skip
        return self(*args, **kw)


# --- generated files -----------------------------------------------------------------------------------------


def image(path: Path, seed: int, size=(40, 56), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def dataset(root: Path, n: int = 6, ext: str = ".png") -> Path:
    for c, name in enumerate(("neg", "pos")):
        for i in range(n):
            image(root / name / f"img{i}{ext}", 100 * c + i)
    return root


def bomb_png(path: Path, side: int = 20_000) -> Path:
    """A valid 1-bit PNG: ~50 KB on disk, side² pixels once decoded."""
    import struct

    row = b"\0" + b"\xff" * (side // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def store_samples(store: Path) -> str:
    manifest = store / "manifest.json"
    if not manifest.exists():
        return "no complete store"
    samples = json.loads(manifest.read_text())["samples"]
    return f"store of {len(samples)} samples"


# --- the cases -----------------------------------------------------------------------------------------------

Case = Callable[[Fptplus, Path], str]
CASES: dict[str, tuple[str, str, Case]] = {}


def case(name: str, what: str, command: str):
    def register(fn: Case) -> Case:
        CASES[name] = (what, command, fn)
        return fn

    return register


@case("symlink-loop", "`neg/loop -> ..` inside a class folder", "preload --data D")
def symlink_loop(fp: Fptplus, w: Path) -> str:
    data = dataset(w / "data", 5)
    (data / "neg" / "loop").symlink_to("..")
    r = fp.preload(data, w / "store")
    if r.rc != 0:
        return r.seen()
    samples = json.loads((w / "store" / "manifest.json").read_text())["samples"]
    relabelled = sum(1 for s in samples if "/pos/" in s["path"] and s["label"] == 0)
    return f"rc 0, silently: {len(samples)} samples from 10 files, {relabelled} `pos` images labelled `neg`"


@case(
    "csv-same-file",
    "one image twice in labels.csv (relative and absolute path), two labels",
    "preload --data labels.csv (from its folder)",
)
def csv_same_file(fp: Fptplus, w: Path) -> str:
    data = dataset(w / "data", 5)
    rows = [f"{p.relative_to(data).as_posix()},{p.parent.name}" for p in sorted(data.rglob("*.png"))]
    rows.append(f"{(data / 'neg' / 'img0.png').resolve()},pos")
    (data / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    r = fp.preload(Path("labels.csv"), w / "store", cwd=data)
    return r.seen() if r.rc else f"rc 0, silently: {store_samples(w / 'store')}, neg/img0.png labelled neg and pos"


@case("dup-two-labels", "byte-identical copy of a `neg` image under `pos/`", "preload --data D")
def duplicate_two_labels(fp: Fptplus, w: Path) -> str:
    data = dataset(w / "data", 5)
    shutil.copy(data / "neg" / "img1.png", data / "pos" / "dup.png")
    r = fp.preload(data, w / "store")
    return r.seen() if r.rc else f"rc 0, silently: {store_samples(w / 'store')} (one image, two labels)"


@case("masks", "`img0_mask.png` … next to `img0.png` (a public-dataset layout)", "preload --data D")
def masks(fp: Fptplus, w: Path) -> str:
    data = dataset(w / "data", 5)
    for i in range(3):
        image(data / "neg" / f"img{i}_mask.png", 900 + i)
    r = fp.preload(data, w / "store")
    if r.rc:
        return r.seen()
    warn = [line for line in r.out.splitlines() if line.startswith("warning")]
    return f"rc 0: {store_samples(w / 'store')}" + (
        f"; prints: {warn[0][:200]}" if warn else ", masks trained as images"
    )


@case("non-utf8-name", "a Latin-1 file name (`caf\\xe9.png`) in a class folder", "preload --data D")
def non_utf8(fp: Fptplus, w: Path) -> str:
    data = dataset(w / "data", 5)
    os.rename(data / "neg" / "img0.png", data / "neg" / os.fsdecode(b"caf\xe9.png"))
    r = fp.preload(data, w / "store")
    state = "left unfinished" if (w / "store" / "plan.json").exists() else "not started"
    return f"{r.seen()} — after {r.seconds:.1f} s; store {state}"


@case("latin1-csv", "labels.csv saved in Latin-1 (`bénin`)", "preload --data labels.csv")
def latin1_csv(fp: Fptplus, w: Path) -> str:
    data = dataset(w / "data", 5)
    rows = [f"{p.relative_to(data).as_posix()},{p.parent.name}é" for p in sorted(data.rglob("*.png"))]
    (data / "labels.csv").write_bytes(("path,label\n" + "\n".join(rows) + "\n").encode("latin-1"))
    return fp.preload(data / "labels.csv", w / "store").seen()


@case("bomb", "a 20000×20000 PNG of 50 KB among the images", "preload --data D")
def bomb(fp: Fptplus, w: Path) -> str:
    data = dataset(w / "data", 5)
    plain = fp.preload(data, w / "plain")  # the same command without the bomb: the memory baseline
    bomb_png(data / "neg" / "bomb.png")
    r = fp.preload(data, w / "store")
    seen = r.seen() if r.rc else "rc 0, decoded and stored"
    return f"{seen}; peak RSS {r.rss_mb:,.0f} MB ({plain.rss_mb:,.0f} MB without the bomb), {r.seconds:.1f} s"


@case("stale-same-size", "a BMP edited in place (same size) after preloading", "train --store S (existing store)")
def stale(fp: Fptplus, w: Path) -> str:
    data = dataset(w / "data", 6, ext=".bmp")
    assert fp.preload(data, w / "store").rc == 0
    image(data / "pos" / "img2.bmp", 4242, fmt="BMP")
    r = fp.train(data, w / "run", "--store", w / "store")
    return r.seen() if r.rc else "rc 0, silently trained on the old image's features"


@case("disk-full", "the disk fills up during preload (96 KiB tmpfs; the up-front check passed)",
      "preload into a full disk, then again after freeing space")  # fmt: skip
def disk_full(fp: Fptplus, w: Path) -> str:
    if not shutil.which("unshare"):
        return "skipped (no unshare)"
    data, mnt, ref = dataset(w / "data", 6), w / "mnt", w / "ref"
    mnt.mkdir()
    assert fp.preload(data, ref, "--shard-mb", str(60_000 / 2**20)).rc == 0
    args = ["preload", "--data", data, "--out", mnt / "store", *MODEL, "--weights", fp.weights, "--batch-size", "2",
            "--workers", "0", "--shard-mb", str(60_000 / 2**20)]  # fmt: skip
    py = [sys.executable, "-c", NO_DISK_CHECK, *map(str, args)]
    script = (
        f"mount -t tmpfs -o size=96k tmpfs {mnt} || exit 99\n"
        f"{' '.join(map(repr, py))} 2> {w}/err1; echo $? > {w}/rc1\n"
        f"mount -o remount,size=4m {mnt}\n"
        f"{' '.join(map(repr, py))} 2> {w}/err2; echo $? > {w}/rc2\n"
        f"cp -a {mnt}/store {w}/copy 2>/dev/null\n"
    )
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=fp.env(), capture_output=True, text=True)
    if proc.returncode == 99:
        return "skipped (cannot mount a tmpfs here)"
    rc1, rc2 = int((w / "rc1").read_text()), int((w / "rc2").read_text())
    first = Result(rc1 if rc1 < 128 else -(rc1 - 128), "", (w / "err1").read_text(), 0, 0)
    same = (w / "copy").exists() and tree(w / "copy") == tree(ref)
    return f"{first.seen()}; rerun after freeing space: rc {rc2}, {'byte-identical' if same else 'DIFFERENT'} store"


@case("out-not-empty", "`--out` a folder holding the user's `log.txt` and `thesis.docx`", "train --out F")
def out_not_empty(fp: Fptplus, w: Path) -> str:
    data, out = dataset(w / "data", 6), w / "mine"
    out.mkdir()
    (out / "log.txt").write_text("my notes\n")
    (out / "thesis.docx").write_text("precious")
    r = fp.train(data, out)
    if r.rc:
        return r.seen()
    changed = (out / "log.txt").read_text() != "my notes\n"
    return f"rc 0: run written among the user's files{', log.txt rewritten' if changed else ''}"


@case("out-is-data", "`--out` the dataset folder itself", "train --out D --data D")
def out_is_data(fp: Fptplus, w: Path) -> str:
    data = dataset(w / "data", 6)
    r = fp.train(data, data)
    if r.rc:
        return r.seen()
    added = sorted(p.name for p in data.iterdir() if p.name not in ("neg", "pos"))
    again = fp.train(data, w / "run2")
    return f"rc 0: wrote {', '.join(added[:6])}… into the dataset; next run on it: {again.seen()}"


@case("flipped-checkpoint", "one flipped byte in `checkpoints/best/model.safetensors`", "evaluate RUN")
def flipped(fp: Fptplus, w: Path) -> str:
    data, run = dataset(w / "data", 6), w / "run"
    assert fp.train(data, run).rc == 0
    path = run / "checkpoints" / "best" / "model.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0x40  # an exponent bit of the last float
    path.write_bytes(bytes(blob))
    r = fp("evaluate", run, "--split", "val")
    return r.seen() if r.rc else f"rc 0: evaluated silently ({r.out.strip().splitlines()[-1][-60:]})"


@case("hardlink-two-classes", "a hard link of `neg/img0.png` as `pos/same.png`", "preload --data D")
def hardlink(fp: Fptplus, w: Path) -> str:
    data = dataset(w / "data", 5)
    os.link(data / "neg" / "img0.png", data / "pos" / "same.png")
    r = fp.preload(data, w / "store")
    return r.seen() if r.rc else f"rc 0, silently: {store_samples(w / 'store')}, one file under two labels"


@case("predict-non-utf8", "`predict --out p.csv` on a folder holding `r\\xf6ntgen.png`", "predict RUN new/ --out p.csv")
def predict_non_utf8(fp: Fptplus, w: Path) -> str:
    data, run = dataset(w / "data", 6), w / "run"
    assert fp.train(data, run).rc == 0
    image(w / "new" / os.fsdecode(b"r\xf6ntgen.png"), 7)
    r = fp("predict", run, w / "new", "--out", w / "p.csv")
    return f"{r.seen()}; {'p.csv written' if (w / 'p.csv').exists() and (w / 'p.csv').stat().st_size else 'no p.csv'}"


@case("killed-writer", "a preload killed (SIGKILL) after 2 batches, then the same command", "preload ×2")
def killed_writer(fp: Fptplus, w: Path) -> str:
    data, ref = dataset(w / "data", 6), w / "ref"
    shard = str(60_000 / 2**20)
    assert fp.preload(data, ref, "--shard-mb", shard).rc == 0
    first = fp.preload(data, w / "store", "--shard-mb", shard, env={"FPTPLUS_TEST_CRASH": "preload-committed:2"})
    again = fp.preload(data, w / "store", "--shard-mb", shard)
    said = [line for line in again.out.splitlines() if "taking over" in line]
    same = tree(w / "store") == tree(ref)
    text = f"first {Result(first.rc, '', '', 0, 0).seen()}; rerun rc {again.rc}, "
    text += f"{'byte-identical' if same else 'DIFFERENT'} store"
    return text + (f"; prints: {said[0][:200]}" if said else "")


def _killed_then(fp: Fptplus, w: Path, damage: Callable[[Path], None]) -> str:
    data, ref = dataset(w / "data", 6), w / "ref"
    shard = str(60_000 / 2**20)
    assert fp.preload(data, ref, "--shard-mb", shard).rc == 0
    fp.preload(data, w / "store", "--shard-mb", shard, env={"FPTPLUS_TEST_CRASH": "preload-committed:3"})
    damage(w / "store")
    r = fp.preload(data, w / "store", "--shard-mb", shard)
    if r.rc:
        return r.seen()
    return (
        f"rc 0, {'byte-identical to an uninterrupted store' if tree(w / 'store') == tree(ref) else 'DIFFERENT store'}"
    )


@case("plan-damaged", "an unfinished store whose `plan.json` holds garbage, then the same preload", "preload")
def plan_damaged(fp: Fptplus, w: Path) -> str:
    return _killed_then(fp, w, lambda store: (store / "plan.json").write_bytes(b"\xff\xfe garbage"))


@case("progress-damaged", "an unfinished store with a progress record cut short, then the same preload", "preload")
def progress_damaged(fp: Fptplus, w: Path) -> str:
    def cut(store: Path) -> None:
        first = sorted((store / "progress").glob("*.json"))[0]
        first.write_text(first.read_text()[:25])

    return _killed_then(fp, w, cut)


@case("yaml-syntax", "`train --config run.yaml` with a YAML syntax error", "train --config run.yaml")
def yaml_syntax(fp: Fptplus, w: Path) -> str:
    (w / "run.yaml").write_text("train:\n  epochs: [3\n")
    return fp("train", "--config", w / "run.yaml", "--data", dataset(w / "data", 6), "--out", w / "run").seen()


def _damaged(fp: Fptplus, w: Path, name: str, damage: Callable[[Path], None]) -> str:
    data, run = dataset(w / "data", 6), w / "run"
    assert fp.train(data, run).rc == 0
    damage(run / name)
    return fp("evaluate", run).seen()


DAMAGES = {
    "manifest-not-utf8": ("store/manifest.json", "a non-UTF-8 byte in the store's `manifest.json`",
                          lambda p: p.write_bytes(p.read_bytes().replace(b'"complete"', b'"compl\xe9te"'))),
    "manifest-no-fields": ("store/manifest.json", "`manifest.json` without its `fields` key",
                           lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items()
                                                              if k != "fields"}))),
    "meta-json": ("checkpoints/best/meta.json", "`checkpoints/best/meta.json` cut short",
                  lambda p: p.write_text(p.read_text()[:40])),
    "run-json": ("run.json", "`run.json` cut short", lambda p: p.write_text(p.read_text()[:5])),
    "classes-json": ("classes.json", "`classes.json` not UTF-8", lambda p: p.write_bytes(b"\xff\xfe")),
    "config-type": ("config.yaml", "`config.yaml` with `epochs: many`",
                    lambda p: p.write_text(p.read_text().replace("epochs: 1", "epochs: many"))),
}  # fmt: skip
for _name, (_file, _what, _damage) in DAMAGES.items():
    case(_name, _what, "evaluate RUN")(lambda fp, w, f=_file, d=_damage: _damaged(fp, w, f, d))


def concurrent(fp: Fptplus, w: Path, trials: int) -> dict[str, object]:
    """Two preloads started together into one store, `trials` times: byte-identical to a single writer's?"""
    data, ref = dataset(w / "data", 6), w / "ref"
    shard = str(60_000 / 2**20)
    assert fp.preload(data, ref, "--shard-mb", shard).rc == 0
    identical, outcomes = 0, []
    for t in range(trials):
        out = w / f"t{t}"
        procs = [fp.preload(data, out, "--shard-mb", shard, wait=False) for _ in range(2)]
        results = [p.communicate(timeout=600) for p in procs]
        rcs = [p.returncode for p in procs]
        complete = (out / "manifest.json").exists()
        same = complete and tree(out) == tree(ref)
        identical += same
        errs = [e.strip().splitlines()[-1][:160] for (_, e), rc in zip(results, rcs, strict=True) if rc and e.strip()]
        outcomes.append({"rcs": rcs, "identical": same, "complete": complete, "errors": errs})
    return {"trials": trials, "identical": identical, "outcomes": outcomes}


# --- driver ----------------------------------------------------------------------------------------------------


sys.path.insert(0, str(HERE))
from round2 import add_cases  # noqa: E402  (issues 30 and 32: registered after round one)

_round1 = set(CASES)
add_cases(case, dataset, image, Fptplus)
ROUND2 = set(CASES) - _round1


def tiny_weights(path: Path) -> Path:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, img_size=64, **TINY)
    save_file(vit.state_dict(), path)
    return path


def run_all(fp: Fptplus, names: list[str], trials: int, log) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                out[name] = CASES[name][2](fp, Path(tmp))
            except Exception as err:  # a harness failure is reported, not hidden
                out[name] = f"harness error: {type(err).__name__}: {err}"
        log(f"  {name}: {out[name]}")
    if trials:
        with tempfile.TemporaryDirectory() as tmp:
            out["concurrent-preload"] = concurrent(fp, Path(tmp), trials)
        log(f"  concurrent-preload: {out['concurrent-preload']['identical']}/{trials} identical")
    return out


def concurrent_text(c: dict) -> str:
    errors = sorted({e for o in c["outcomes"] for e in o["errors"]})
    bad = [o["rcs"] for o in c["outcomes"] if not o["identical"]]
    text = f"{c['identical']}/{c['trials']} stores byte-identical to a single writer's"
    corrupt = sum(1 for o in c["outcomes"] if o.get("complete") and not o["identical"])
    if corrupt:
        text += f"; {corrupt} marked complete with other bytes (silently corrupt)"
    if bad:
        text += f"; exit codes of the others {bad}"
    if errors:
        text += "; errors: " + " / ".join(errors[:3])
    return text


def table(results: dict[str, dict], trials: int, names: list[str] | None = None) -> str:
    before = "before" in results
    head = "| case | input | command | " + ("at the older checkout | " if before else "") + "now |"
    lines = [head, "|---|---|---|" + ("---|" if before else "") + "---|"]
    for name, (what, command, _) in CASES.items():
        if names is not None and name not in names:
            continue
        cells = [f"`{name}`", what, f"`{command}`"]
        cells += [
            str(results[k].get(name, "")).replace("|", "\\|") for k in (("before", "now") if before else ("now",))
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if trials:
        what = f"two `preload` of one dataset into one store, started together ({trials} trials)"
        cells = ["`concurrent-preload`", what, "`preload` ×2"]
        cells += [
            concurrent_text(results[k]["concurrent-preload"]) for k in (("before", "now") if before else ("now",))
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="src/ folder of an older fptplus checkout to compare with")
    ap.add_argument("--trials", type=int, default=10, help="concurrent-preload trials (0: skip)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these cases")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--round", type=int, choices=(1, 2), default=None, help="only round one's or round two's cases")
    args = ap.parse_args()
    names = args.only or [n for n in CASES if args.round is None or (n in ROUND2) == (args.round == 2)]
    with tempfile.TemporaryDirectory() as tmp:
        weights = tiny_weights(Path(tmp) / "tiny.safetensors")
        results = {}
        for label, src in (("before", args.before), ("now", None)):
            if label == "before" and src is None:
                continue
            print(f"{label}: {src or 'installed fptplus'}", flush=True)
            results[label] = run_all(Fptplus(src, weights), names, args.trials, lambda s: print(s, flush=True))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    suffix = "-round2" if args.round == 2 else ""
    record = {"machine": machine, "date": time.strftime("%Y-%m-%d"), "before": str(args.before), **results}
    (args.out / f"results{suffix}.json").write_text(json.dumps(record, indent=1))
    (args.out / f"table{suffix}.md").write_text(table(results, args.trials, names))
    print(table(results, args.trials, names))


if __name__ == "__main__":
    main()
