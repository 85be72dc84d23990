"""simclrv2/recipes/stages.py: every configured stage has its function, under the same name in
simclrv2.recipes."""

import inspect

import simclrv2.recipes as recipes
from simclrv2.recipes import config as C
from simclrv2.recipes import stages


def test_every_stage_of_the_config_has_a_function():
    assert sorted(stages.STAGE_FUNCTIONS) == sorted(C.STAGE_CONFIGS)
    for name, function in stages.STAGE_FUNCTIONS.items():
        assert list(inspect.signature(function).parameters) == ["config"], name


def test_the_package_runs_the_same_functions():
    by_name = {"pretrain": "pretrain", "finetune": "finetune", "lineareval": "linear_eval",
               "distill": "distill", "pixels": "pixels"}
    assert sorted(by_name) == sorted(stages.STAGE_FUNCTIONS)
    for stage, attribute in by_name.items():
        assert getattr(stages, attribute) is stages.STAGE_FUNCTIONS[stage]
        assert callable(getattr(recipes, attribute)), attribute
        assert attribute in recipes.__all__
