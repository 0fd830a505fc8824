"""GPU presets: dense peak FLOP/s, memory and HBM bandwidth.

Peaks are **dense** tensor-core rates (no 2:4 sparsity), as MFU is defined against them
(REFERENCE.md). fp8 is twice bf16 on Hopper and Blackwell; the A100 has no fp8 tensor
cores (its entry keeps the bf16 rate, and says so).

Sources:

- A100 SXM 80GB: NVIDIA A100 Tensor Core GPU datasheet (2021): BF16 312 TFLOP/s dense
  (624 with sparsity), 80 GB HBM2e, 2,039 GB/s.
- H100 SXM: NVIDIA H100 Tensor Core GPU datasheet (2023): BF16 1,979 TFLOP/s *with
  sparsity*, so 989 dense; FP8 3,958 with sparsity, 1,979 dense; 80 GB HBM3, 3.35 TB/s.
- H200 SXM: NVIDIA H200 datasheet (2024): the same tensor cores as H100 SXM (989 / 1,979
  dense), 141 GB HBM3e, 4.8 TB/s.
- B200: NVIDIA DGX B200 / HGX B200 datasheet (2024): FP8 72 PFLOP/s and FP16/BF16 36
  PFLOP/s for 8 GPUs with sparsity -> 2,250 TFLOP/s dense BF16 and 4,500 dense FP8 a
  GPU; 192 GB HBM3e (180 GB usable in DGX B200), 8 TB/s.
"""

from __future__ import annotations

from dataclasses import dataclass

from commsim.errors import unknown


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_tflops: float      # dense
    fp8_tflops: float       # dense (= bf16 where the GPU has no fp8 tensor cores)
    memory_gb: float        # 1e9 bytes
    hbm_tbps: float         # TB/s, 1e12 bytes/s
    source: str

    def peak(self, dtype: str = "bf16") -> float:
        """Dense peak in FLOP/s for ``dtype`` (``bf16`` or ``fp8``)."""
        if dtype == "bf16":
            return self.bf16_tflops * 1e12
        if dtype == "fp8":
            return self.fp8_tflops * 1e12
        raise unknown("dtype", dtype, DTYPES)

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9


DTYPES = ("bf16", "fp8")

GPUS: dict[str, GPU] = {g.name: g for g in [
    GPU("A100", 312.0, 312.0, 80.0, 2.039,
        "NVIDIA A100 datasheet: 312 TFLOP/s dense BF16, 80 GB HBM2e, 2.0 TB/s (no FP8)"),
    GPU("H100", 989.0, 1979.0, 80.0, 3.35,
        "NVIDIA H100 SXM datasheet: 989 dense BF16 (1,979 sparse), FP8 1,979 dense, "
        "80 GB HBM3, 3.35 TB/s"),
    GPU("H200", 989.0, 1979.0, 141.0, 4.8,
        "NVIDIA H200 SXM datasheet: H100's tensor cores, 141 GB HBM3e, 4.8 TB/s"),
    GPU("B200", 2250.0, 4500.0, 192.0, 8.0,
        "NVIDIA HGX/DGX B200 datasheet: 36 PFLOP/s sparse BF16 per 8 GPUs = 2,250 dense "
        "a GPU, FP8 4,500 dense, 192 GB HBM3e, 8 TB/s"),
]}
_ALIASES = {"a100-80gb": "A100", "a100-sxm": "A100", "h100-sxm": "H100", "h100sxm": "H100",
            "h200-sxm": "H200", "b200-sxm": "B200"}


def get(name: str) -> GPU:
    """A GPU preset by name, case-insensitive (``h100``, ``H100-SXM``)."""
    text = str(name).strip()
    for key, gpu in GPUS.items():
        if key.lower() == text.lower():
            return gpu
    if text.lower() in _ALIASES:
        return GPUS[_ALIASES[text.lower()]]
    raise unknown("gpu", text, GPUS)


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise unknown("--dtype", dtype, DTYPES)
    return dtype


def default_for(topology_name: str) -> GPU:
    """The GPU a topology name suggests (``dgx-a100-*`` -> A100), else H100."""
    low = str(topology_name).lower()
    for key in ("b200", "h200", "a100", "h100"):
        if key in low:
            return GPUS[key.upper()]
    return GPUS["H100"]
