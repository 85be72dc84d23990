"""Every registered architecture, and the parameter counts the paper publishes for them."""

from simclrv2.zoo.config import DEPTHS, WIDTHS, model_name

# Table 1 of the SimCLRv2 paper / upstream README: backbone parameters in millions (rounded),
# for the 13 released SimCLRv2 architectures and the SimCLRv1 ResNet-50s.
OFFICIAL_PARAMS_M = {
    "r50_1x_sk0": 24, "r50_1x_sk1": 35, "r50_2x_sk0": 94, "r50_2x_sk1": 140,
    "r101_1x_sk0": 43, "r101_1x_sk1": 65, "r101_2x_sk0": 170, "r101_2x_sk1": 257,
    "r152_1x_sk0": 58, "r152_1x_sk1": 89, "r152_2x_sk0": 233, "r152_2x_sk1": 354,
    "r152_3x_sk1": 795,
}
SIMCLRV1_PARAMS_M = {"r50_1x_sk0": 24, "r50_2x_sk0": 94, "r50_4x_sk0": 375}

# Exact backbone counts from the official format notes (tests/data/official_format/FORMAT.md).
OFFICIAL_EXACT_BACKBONE = {
    ("r18_1x_sk0", "cifar"): 11_173_056,
    ("r50_1x_sk0", "imagenet"): 23_508_032,
    ("r50_1x_sk1", "imagenet"): 35_215_584,
}

RELEASED_SIMCLRV2 = tuple(OFFICIAL_PARAMS_M)


def list_models(released_only=False):
    """Names of every buildable architecture (`r{depth}_{width}x_sk{0|1}`), or only released ones."""
    if released_only:
        return list(RELEASED_SIMCLRV2)
    return [model_name(depth, width, sk) for depth in DEPTHS for width in WIDTHS for sk in (False, True)]
