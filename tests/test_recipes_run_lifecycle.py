"""simclrv2/recipes/run_lifecycle.py: a run directory's config.json, label subset file and
result.json / model.keras."""

import json
import time

import pytest

from simclrv2.recipes import config as C
from simclrv2.recipes import run_lifecycle

TINY = dict(dataset="synthetic", image_size=8, model="r18_0.25x_sk0", global_batch_size=8,
            progress_bar=False)


def test_record_run_refuses_a_model_dir_of_another_model_or_stage(tmp_path):
    import simclrv2.zoo as zoo

    config = C.from_dict("pretrain", dict(TINY, model_dir=str(tmp_path)))
    small = run_lifecycle.model_config_dict(zoo.build("r18_0.125x_sk0", input_shape=(8, 8, 3)))
    run_lifecycle.record_run(tmp_path, "pretrain", config, small, chief=True)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["stage"] == "pretrain" and written["model_config"] == small
    assert written["config"]["model_dir"] == str(tmp_path)
    run_lifecycle.record_run(tmp_path, "pretrain", config, small, chief=True)  # a resume
    other = dict(small, depth=50)
    with pytest.raises(C.ConfigError, match=r"holds a pretrain run of another model \(18-layer\); "
                                            r"use a new model_dir"):
        run_lifecycle.record_run(tmp_path, "pretrain", config, other, chief=True)
    with pytest.raises(C.ConfigError, match="holds a pretrain run"):
        run_lifecycle.record_run(tmp_path, "finetune", config, small, chief=True)
    # A worker that is not the chief checks but never writes.
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    run_lifecycle.record_run(elsewhere, "pretrain", config, small, chief=False)
    assert not (elsewhere / "config.json").exists()


def test_subset_file_names_fraction_seed_and_held_out_images(tmp_path):
    def path(**values):
        return run_lifecycle.subset_file(C.from_dict("finetune", dict(TINY, **values)), tmp_path)

    assert path(label_fraction=1.0) is None
    assert path(label_fraction=0.1, label_seed=3) == str(tmp_path / "label_subset_0.1_seed3.txt")
    assert path(label_fraction=0.01, eval_split="validation", validation_examples=500) == str(
        tmp_path / "label_subset_0.01_seed0_val500.txt")


def test_final_model_save_never_leaves_a_broken_model_keras(tmp_path):
    import zipfile

    import simclrv2.zoo as zoo
    from simclrv2.recipes import run_lifecycle

    class Killed(BaseException):
        """Stands in for a SIGKILL arriving while the zip is being written."""

    class KilledMidSave:
        def save(self, path):
            with open(path, "wb") as f:
                f.write(b"PK\x03\x04 the first bytes of a zip")
            raise Killed

    config = C.from_dict("pretrain", dict(TINY, model_dir=str(tmp_path)))
    with pytest.raises(Killed):
        run_lifecycle.finish(config, tmp_path, "pretrain", {"status": "done"}, KilledMidSave(), True,
                       time.time())
    assert not (tmp_path / "model.keras").exists() and list(tmp_path.iterdir()) == []
    model = zoo.build("r18_0.125x_sk0", num_classes=2, input_shape=(16, 16, 3))
    result = run_lifecycle.finish(config, tmp_path, "pretrain", {"status": "done"}, model, True,
                            time.time())
    assert zipfile.is_zipfile(result["keras_path"])
    before = (tmp_path / "model.keras").read_bytes()
    with pytest.raises(Killed):
        run_lifecycle.finish(config, tmp_path, "pretrain", {"status": "done"}, KilledMidSave(), True,
                       time.time())
    assert (tmp_path / "model.keras").read_bytes() == before  # the earlier one stays whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "result.json"]
