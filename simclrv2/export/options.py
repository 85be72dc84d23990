"""What one export is asked for, checked once: `ExportOptions`, and the defaults that
`export_model`, `simclrv2 export` and the int8 quantization share."""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any, Optional

from simclrv2.export.errors import ExportError

FORMATS = ("savedmodel", "onnx", "keras")  # the default set
# Written only when named: each needs its runtime's package and adds minutes for a large model.
OPTIONAL_FORMATS = ("openvino", "tflite")
KNOWN_FORMATS = FORMATS + OPTIONAL_FORMATS
QUANTIZATIONS = ("int8",)
QUANTIZABLE_FORMATS = ("onnx", "openvino", "tflite")  # each gets its own int8 model
# (format, quantized or not) -> the modules it needs and the PyPI package that has them.
RUNTIME_PACKAGES = {("openvino", False): (("openvino", "openvino"),),
                    ("openvino", True): (("openvino", "openvino"), ("nncf", "nncf")),
                    ("tflite", False): (("ai_edge_litert", "ai-edge-litert"),),
                    ("tflite", True): (("ai_edge_litert", "ai-edge-litert"),)}
MIN_IMAGE_SIZE = 8
DEFAULT_TEMPERATURE = 1.0
CALIBRATION_EXAMPLES = 300  # onnxruntime's MinMax calibration settles within a few hundred
CHECK_EXAMPLES = 1000
MAX_INT8_DROP = 1.0  # points of top-1
# OpenVINO's default precision (bfloat16 where the CPU has it) is held to top-1 agreement with
# the Keras model on the check images; 200 images make one disagreement in 200 the most allowed.
MIN_RUNTIME_AGREEMENT = 0.995
RUNTIME_CHECK_EXAMPLES = 200


def parse_formats(formats):
    """A tuple of known formats, in the order given, from a list or a comma-separated string."""
    if isinstance(formats, str):
        formats = [f for f in formats.split(",") if f.strip()]
    formats = tuple(dict.fromkeys(f.strip().lower() for f in formats))
    unknown = [f for f in formats if f not in KNOWN_FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown export format(s) {unknown or formats}; valid: "
                          f"{','.join(KNOWN_FORMATS)}")
    return formats


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """export_model's keyword arguments (see its docstring), refused with ExportError when they
    make no sense; `formats` comes out a tuple of known formats."""

    formats: Any = FORMATS
    image_size: Optional[int] = None
    stage: Optional[str] = None
    provenance: Optional[dict] = None
    overwrite: bool = False
    temperature: float = DEFAULT_TEMPERATURE
    quantize: Optional[str] = None
    calibration: Any = None
    calibration_examples: int = CALIBRATION_EXAMPLES
    check_examples: int = CHECK_EXAMPLES
    max_int8_drop: float = MAX_INT8_DROP
    data_dir: Optional[str] = None

    def __post_init__(self):
        object.__setattr__(self, "formats", parse_formats(self.formats))
        if not float(self.temperature) > 0:
            raise ExportError(f"temperature must be > 0, got {self.temperature}")
        size = self.image_size
        if size is not None and (int(size) != size or size < MIN_IMAGE_SIZE):
            raise ExportError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {size!r}")
        if self.provenance is not None and not isinstance(self.provenance, dict):
            raise ExportError("provenance must be a dict of JSON-serialisable fields")
        if self.quantize is not None:
            self._check_quantization()
        self._check_packages()

    def _check_packages(self):
        for fmt in self.formats:
            for module, package in RUNTIME_PACKAGES.get((fmt, self.quantize is not None), ()):
                if importlib.util.find_spec(module) is None:
                    raise ExportError(f"the {fmt} format needs the {package} package, which is "
                                      f"not installed: pip install {package} (or the package's "
                                      f"runtimes extra, which make test installs)")

    def _check_quantization(self):
        if self.quantize not in QUANTIZATIONS:
            raise ExportError(f"unknown quantization {self.quantize!r}; valid: "
                              f"{', '.join(QUANTIZATIONS)}")
        if not set(QUANTIZABLE_FORMATS) & set(self.formats):
            raise ExportError("quantize='int8' quantizes model.onnx, the OpenVINO model or "
                              "model.tflite: add onnx to the formats (--formats ...,onnx), or "
                              "openvino or tflite")
        if self.calibration is None:
            raise ExportError("quantize='int8' needs calibration images: a dataset name "
                              "(--calibration fashion_mnist), an image folder or an array")
        if not float(self.max_int8_drop) >= 0:
            raise ExportError(f"max_int8_drop must be >= 0 points, got {self.max_int8_drop}")
