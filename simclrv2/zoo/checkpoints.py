"""Registry of the checkpoints released by the SimCLR authors as TF2 SavedModels.

Sources (reference facts only):
- google-research/simclr, README.md, "Pre-trained models for SimCLRv2": the 65 models
  (13 architectures x 5 stages) and their ImageNet top-1 from Table 1 of arXiv:2006.10029
  (columns F-T 1%, F-T 10%, F-T 100%, Linear eval, Supervised).
- google-research/simclr, tf2/README.md: bucket gs://simclr-checkpoints-tf2, the stage
  folders, distill_1pct/distill_10pct, and the SimCLRv1 top-1 table (ResNet-50 1x/2x/4x:
  69.1/74.2/76.6, linear eval) and the note that SimCLRv1 models have no projection head.
- google-research/simclr, tf2/colabs/imagenet_results.ipynb: the exact bucket paths of
  every SimCLRv2 and SimCLRv1 SavedModel, and the top-1 the authors re-measured on GPU for
  each ("may differ from the paper by up to 0.1%"); kept as `top1_colab` so that an
  imported model can be checked against what the authors measured on the same files.
- Distilled models: the tf2 README lists the two folders but not their content. The
  ResNet-50 (1x) students are the models of the paper's abstract (73.9% with 1% of labels,
  77.5% with 10%); the self-distilled r152_3x_sk1 is confirmed by the authors in
  google-research/simclr issue #130. The ResNet-50 (2x+SK) students follow Table 3 of the
  paper. Their folder names could not be listed from here; see docs/pretrained_models.md,
  "Known gaps".
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from simclrv2.zoo.config import split_name

BUCKET = "simclr-checkpoints-tf2"
GS_ROOT = f"gs://{BUCKET}"
HTTPS_ROOT = f"https://storage.googleapis.com/{BUCKET}"

# Every SimCLRv2 SavedModel directory holds these files (tf.saved_model.save output of the
# TF2 conversion; `fingerprint.pb` only exists for SavedModels written by TF >= 2.12).
SAVED_MODEL_FILES = (
    "saved_model.pb",
    "variables/variables.index",
    "variables/variables.data-00000-of-00001",
)

SIMCLRV2_ARCHITECTURES = (
    "r50_1x_sk0", "r50_1x_sk1", "r50_2x_sk0", "r50_2x_sk1",
    "r101_1x_sk0", "r101_1x_sk1", "r101_2x_sk0", "r101_2x_sk1",
    "r152_1x_sk0", "r152_1x_sk1", "r152_2x_sk0", "r152_2x_sk1",
    "r152_3x_sk1",
)

SIMCLRV2_STAGES = ("pretrained", "finetuned_1pct", "finetuned_10pct", "finetuned_100pct",
                   "supervised")
DISTILL_STAGES = ("distill_1pct", "distill_10pct")
SIMCLRV1_STAGES = ("pretrained", "finetuned_10pct", "finetuned_100pct")
STAGES = SIMCLRV2_STAGES + DISTILL_STAGES

# SimCLRv1 folders are spelled differently in the bucket; the registry uses one stage
# vocabulary for both versions and accepts the bucket spelling as an alias.
_V1_BUCKET_STAGE = {"pretrained": "pretrain", "finetuned_10pct": "finetune_10pct",
                    "finetuned_100pct": "finetune_100pct"}
STAGE_ALIASES = {"pretrain": "pretrained", "finetune_1pct": "finetuned_1pct",
                 "finetune_10pct": "finetuned_10pct", "finetune_100pct": "finetuned_100pct",
                 "linear_eval": "pretrained"}

# Table 1 of arXiv:2006.10029 as printed in google-research/simclr README.md.
# architecture: (F-T 1%, F-T 10%, F-T 100%, linear eval, supervised)
_TABLE1 = {
    "r50_1x_sk0": (57.9, 68.4, 76.3, 71.7, 76.6),
    "r50_1x_sk1": (64.5, 72.1, 78.7, 74.6, 78.5),
    "r50_2x_sk0": (66.3, 73.9, 79.1, 75.6, 77.8),
    "r50_2x_sk1": (70.6, 77.0, 81.3, 77.7, 79.3),
    "r101_1x_sk0": (62.1, 71.4, 78.2, 73.6, 78.0),
    "r101_1x_sk1": (68.3, 75.1, 80.6, 76.3, 79.6),
    "r101_2x_sk0": (69.1, 75.8, 80.7, 77.0, 78.9),
    "r101_2x_sk1": (73.2, 78.8, 82.4, 79.0, 80.1),
    "r152_1x_sk0": (64.0, 73.0, 79.3, 74.5, 78.3),
    "r152_1x_sk1": (70.0, 76.5, 81.3, 77.2, 79.9),
    "r152_2x_sk0": (70.2, 76.6, 81.1, 77.4, 79.1),
    "r152_2x_sk1": (74.2, 79.4, 82.9, 79.4, 80.4),
    "r152_3x_sk1": (74.9, 80.1, 83.1, 79.8, 80.5),
}
_TABLE1_COLUMN = {"finetuned_1pct": 0, "finetuned_10pct": 1, "finetuned_100pct": 2,
                  "pretrained": 3, "supervised": 4}

# Outputs of tf2/colabs/imagenet_results.ipynb (authors' GPU re-evaluation of the bucket).
# architecture: (finetuned_1pct, finetuned_10pct, finetuned_100pct, pretrained, supervised)
_COLAB_V2 = {
    "r50_1x_sk0": (58.0, 68.4, 76.3, 71.7, 76.6),
    "r50_1x_sk1": (64.5, 72.0, 78.6, 74.6, 78.5),
    "r50_2x_sk0": (66.2, 73.9, 79.1, 75.4, 77.8),
    "r50_2x_sk1": (70.7, 77.0, 81.3, 77.8, 79.3),
    "r101_1x_sk0": (62.1, 71.5, 78.2, 73.7, 78.0),
    "r101_1x_sk1": (68.3, 75.1, 80.7, 76.3, 79.6),
    "r101_2x_sk0": (69.1, 75.9, 80.8, 77.0, 78.8),
    "r101_2x_sk1": (73.3, 78.8, 82.4, 79.1, 80.1),
    "r152_1x_sk0": (64.1, 73.0, 79.3, 74.6, 78.2),
    "r152_1x_sk1": (70.0, 76.4, 81.3, 77.3, 80.0),
    "r152_2x_sk0": (70.1, 76.6, 81.1, 77.4, 79.1),
    "r152_2x_sk1": (74.2, 79.4, 82.9, 79.3, 80.4),
    "r152_3x_sk1": (74.9, 80.1, 83.1, 79.9, 80.5),
}

# SimCLRv1 ResNet-50 (sk0) by width multiplier. Paper figure: only the linear-eval top-1
# is printed in the tf2 README; the fine-tuned ones come from the colab alone.
_V1_TOP1 = {1: {"pretrained": 69.1}, 2: {"pretrained": 74.2}, 4: {"pretrained": 76.6}}
_V1_COLAB = {
    1: {"pretrained": 69.0, "finetuned_10pct": 65.8, "finetuned_100pct": 75.6},
    2: {"pretrained": 74.2, "finetuned_10pct": 71.6, "finetuned_100pct": 79.2},
    4: {"pretrained": 76.6, "finetuned_10pct": 74.5, "finetuned_100pct": 80.8},
}

# Distilled students: architecture -> {stage: paper top-1 or None}. ResNet-50 (1x) figures
# are from the abstract of arXiv:2006.10029; the others are left None here because the
# paper text could not be re-read while writing this registry (Table 3 has them).
_DISTILLED = {
    "r50_1x_sk0": {"distill_1pct": 73.9, "distill_10pct": 77.5},
    "r50_2x_sk1": {"distill_1pct": None, "distill_10pct": None},
    "r152_3x_sk1": {"distill_1pct": None, "distill_10pct": None},
}

@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One released SavedModel.

    `name` is unique within a stage: the zoo architecture name for SimCLRv2 models
    (`r50_1x_sk0`), `simclrv1_r50_{1,2,4}x` for SimCLRv1. `top1` is the paper's ImageNet
    top-1 (%) for this stage (None where none was published); `top1_colab` is what the
    authors measured on this exact SavedModel in tf2/colabs/imagenet_results.ipynb.
    `has_projection_head` is None where the release notes don't say.
    """

    name: str
    stage: str
    version: int
    architecture: str
    depth: int
    width: int
    sk: bool
    bucket_path: str
    num_classes: int = 1000
    has_projection_head: Optional[bool] = None
    has_supervised_head: bool = True
    top1: Optional[float] = None
    top1_colab: Optional[float] = None
    notes: str = ""

    @property
    def gs_url(self) -> str:
        """gs:// address of the saved_model directory (for gsutil)."""
        return f"{GS_ROOT}/{self.bucket_path}"

    @property
    def url(self) -> str:
        """HTTPS address of the saved_model directory (append a file name to fetch it)."""
        return f"{HTTPS_ROOT}/{self.bucket_path}"

    @property
    def sk_ratio(self) -> float:
        return 0.0625 if self.sk else 0.0

    def file_urls(self, base_url: Optional[str] = None) -> dict:
        """{relative file path: HTTPS URL} of the files making up the SavedModel."""
        base = (base_url or HTTPS_ROOT).rstrip("/")
        return {f: f"{base}/{self.bucket_path}/{f}" for f in SAVED_MODEL_FILES}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(gs_url=self.gs_url, url=self.url)
        return d


def parse_architecture(architecture: str) -> tuple:
    """`r152_3x_sk1` -> (152, 3, True)."""
    return split_name(architecture)


def _build_registry() -> tuple:
    entries = []
    for arch in SIMCLRV2_ARCHITECTURES:
        depth, width, sk = parse_architecture(arch)
        for stage in SIMCLRV2_STAGES:
            column = _TABLE1_COLUMN[stage]
            if stage == "pretrained":
                # Pretrained models ship the contrastive head and the linear-eval head.
                proj, notes = True, "contrastive pretraining + linear-eval head (logits_sup)"
            elif stage.startswith("finetuned"):
                # Fine-tuned from projection layer 1 (ft_proj_selector=1), so at least that
                # projection layer is kept; `proj_head_output` may be absent.
                proj, notes = True, "fine-tuned from the first projection layer"
            else:
                proj, notes = None, "supervised baseline with the same architecture"
            entries.append(Checkpoint(
                name=arch, stage=stage, version=2, architecture=arch, depth=depth,
                width=width, sk=sk, bucket_path=f"simclrv2/{stage}/{arch}/saved_model",
                has_projection_head=proj, top1=_TABLE1[arch][column],
                top1_colab=_COLAB_V2[arch][column], notes=notes))
    for arch, by_stage in _DISTILLED.items():
        depth, width, sk = parse_architecture(arch)
        for stage in DISTILL_STAGES:
            teacher = "self-distilled" if arch == "r152_3x_sk1" else "distilled from r152_3x_sk1"
            entries.append(Checkpoint(
                name=arch, stage=stage, version=2, architecture=arch, depth=depth,
                width=width, sk=sk, bucket_path=f"simclrv2/{stage}/{arch}/saved_model",
                has_projection_head=None, top1=by_stage[stage],
                notes=f"{teacher}; folder name not verified against a bucket listing"))
    for width in (1, 2, 4):
        arch = f"r50_{width}x_sk0"
        for stage in SIMCLRV1_STAGES:
            entries.append(Checkpoint(
                name=f"simclrv1_r50_{width}x", stage=stage, version=1, architecture=arch,
                depth=50, width=width, sk=False,
                bucket_path=f"simclrv1/{_V1_BUCKET_STAGE[stage]}/{width}x/saved_model",
                # tf2/README.md: "for these SimCLRv1 checkpoints, the projection head is not
                # available".
                has_projection_head=False, top1=_V1_TOP1[width].get(stage),
                top1_colab=_V1_COLAB[width][stage],
                notes="SimCLRv1 (weights ~16.8x larger in norm than SimCLRv2's)"))
    return tuple(entries)


_REGISTRY = _build_registry()
_BY_KEY = {(c.name, c.stage): c for c in _REGISTRY}
assert len(_BY_KEY) == len(_REGISTRY), "duplicate (name, stage) in the registry"


def canonical_stage(stage: str) -> str:
    """Maps bucket spellings (`pretrain`, `finetune_10pct`) to registry stages."""
    stage = stage.strip().lower()
    return STAGE_ALIASES.get(stage, stage)


def list_checkpoints(stage: Optional[str] = None, architecture: Optional[str] = None,
                     version: Optional[int] = None) -> list:
    """Released checkpoints, optionally filtered; unknown filter values raise ValueError."""
    if stage is not None:
        stage = canonical_stage(stage)
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")
    if architecture is not None:
        valid = sorted({c.architecture for c in _REGISTRY}, key=_arch_sort_key)
        if architecture not in valid:
            raise ValueError(f"no released checkpoint has architecture {architecture!r}; "
                             f"released architectures: {', '.join(valid)}")
    if version is not None and version not in (1, 2):
        raise ValueError(f"unknown SimCLR version {version!r}; valid versions: 1, 2")
    return [c for c in _REGISTRY
            if (stage is None or c.stage == stage)
            and (architecture is None or c.architecture == architecture)
            and (version is None or c.version == version)]


def checkpoint_names() -> list:
    """Every distinct checkpoint name, SimCLRv2 first."""
    seen = []
    for c in _REGISTRY:
        if c.name not in seen:
            seen.append(c.name)
    return seen


def get_checkpoint(name: str, stage: str) -> Checkpoint:
    """The checkpoint `name` at `stage`; ValueError listing the valid choices otherwise."""
    stage_c = canonical_stage(stage)
    found = _BY_KEY.get((name, stage_c))
    if found is not None:
        return found
    names = checkpoint_names()
    if name not in names:
        raise ValueError(f"unknown checkpoint name {name!r}; valid names: {', '.join(names)}")
    stages = [c.stage for c in _REGISTRY if c.name == name]
    raise ValueError(f"checkpoint {name!r} has no stage {stage!r}; "
                     f"its released stages: {', '.join(stages)}")


def _arch_sort_key(arch: str):
    depth, width, sk = parse_architecture(arch)
    return depth, width, sk
