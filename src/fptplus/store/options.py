"""How a store is built, as a plain dataclass (the command line makes its flags from it without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CodecName = Literal["float16", "float32", "int8"]  # every codec's name (config fields take these; tested vs CODECS)


@dataclass
class PreloadOptions:
    """How to build the store (none of these change the stored numbers except `dtype` and `batch_size`).

    Attributes:
        dtype: how K/V are stored (the codec): "float16" (half the authors' fp32 bytes), "float32", or "int8"
            (codes + one fp16 scale per token and head: 26 % of fp32 at head dim 64; see `store.codecs`).
        batch_size: images per LPM forward (recorded in the plan: a resumed run keeps the original value).
        num_workers: decoding processes.
        shard_mb: target size of one shard file set, in MiB.
        skip_bad: skip undecodable files (listed in skipped.csv) instead of failing.
        overwrite: replace an existing store at the same path.
        side_source_size: stored side image size (default: 2 × side size, capped at the LPM size).
        lock_wait: seconds to wait while another process writes the same store (None: until it is done;
            0: refuse at once).
        resize: how images reach the LPM resolution ("squash", "pad" or "foreground" = `--crop foreground`; part of
            the fingerprint; the command line sets it from --resize and --crop).
        engine: what runs the frozen model's pass: "auto" (default: on a CPU the pass exported to OpenVINO, else
            onnxruntime, when installed and verified against PyTorch on the first batch; torch on a GPU or when
            neither is), "torch", "openvino" or "onnxruntime"; see `fptplus.engines`; never in the fingerprint.
        store_ratio: the fraction of tokens kept per layer and head (None: the model's token_ratio). The store keeps
            them best first, so it serves training at any token_ratio up to this one from its first rows (e.g. 0.5
            to tune the ratio later without another preload).
        threads: the pass's threads on a CPU: None = auto (decoding placed by measuring the first batches, see
            `fptplus.threads.place_decoding`: workers beside the pass, or decoding between batches with the pass on
            every core), 0 = torch's default, N = N threads beside `num_workers` decode workers.
    """

    dtype: CodecName = "float16"
    batch_size: int = 16
    num_workers: int = 2
    shard_mb: float = 1024.0
    skip_bad: bool = False
    overwrite: bool = False
    side_source_size: int | tuple[int, int] | None = None
    lock_wait: float | None = None
    resize: Literal["squash", "pad", "foreground"] = "squash"
    store_ratio: float | None = None
    engine: Literal["auto", "torch", "openvino", "onnxruntime"] = "auto"
    threads: int | None = None

    @property
    def shard_bytes(self) -> int:
        return max(1, int(self.shard_mb * 2**20))
