"""The test writer reproduces the official SimCLRv2 TF2 SavedModel format key for key."""

import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(1)

from official_format_writer import write_official_saved_model  # noqa: E402
from simclrv2.zoo import official_format  # noqa: E402

FORMAT_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "official-format"


def _tsv_rows(name):
    path = FORMAT_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: the official key maps live in <repo>/../shared/"
                    "official-format (see docs/development.md, 'Tests')")
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, struct, _keras_name, shape, trainable = line.split("\t")
        shape = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
        rows.append((key, struct, shape, trainable == "True"))
    return rows


CASES = {
    "r18_1x_sk0_cifar_pretrained.key_map.tsv":
        dict(depth=18, width=1, sk=False, cifar_stem=True, num_classes=10, head="pretrained"),
    "r50_1x_sk0_pretrained.key_map.tsv":
        dict(depth=50, width=1, sk=False, cifar_stem=False, num_classes=1000, head="pretrained"),
    "r50_1x_sk1_finetuned_ftsel1.key_map.tsv":
        dict(depth=50, width=1, sk=True, cifar_stem=False, num_classes=1000, head="finetuned",
             ft_proj_selector=1),
}


@pytest.mark.parametrize("tsv", sorted(CASES))
def test_written_keys_equal_official_key_map(tsv, tmp_path):
    expected = _tsv_rows(tsv)
    # The key map doesn't depend on traced functions: skip tracing to keep the test fast.
    d = write_official_saved_model(tmp_path / "sm", traced=(), **CASES[tsv])
    got = [(r.key, r.path, r.shape, r.trainable)
           for r in sorted(official_format.read_variable_records(d),
                           key=official_format._key_sort)]
    expected_sorted = sorted(expected, key=lambda r: official_format._key_sort(
        official_format.VariableRecord(r[0], "", (), False, "")))
    for e, g in zip(expected_sorted, got):
        assert g == e, f"first differing row: expected {e}, wrote {g}"
    assert len(got) == len(expected)
    # No stray variables either: the checkpoint holds exactly these keys (+ the object graph).
    ckpt_keys = {k for k, _ in tf.train.list_variables(os.path.join(d, "variables", "variables"))}
    assert ckpt_keys == {e[0] + "/.ATTRIBUTES/VARIABLE_VALUE" for e in expected} | {
        "_CHECKPOINTABLE_OBJECT_GRAPH"}


def test_written_model_behaves_like_official(tmp_path):
    d = write_official_saved_model(tmp_path / "sm", depth=18, width=0.25, sk=False,
                                   cifar_stem=True, num_classes=10)
    loaded = tf.saved_model.load(d)
    assert len(loaded.signatures) == 0
    x = tf.random.uniform([2, 32, 32, 3], seed=1)
    out = loaded(x, trainable=False)
    assert set(out) == {"initial_conv", "initial_max_pool", "block_group1", "block_group2",
                        "block_group3", "block_group4", "final_avg_pool", "proj_head_input",
                        "proj_head_output", "logits_sup"}
    assert out["block_group4"].shape == (2, 4, 4, 128)
    assert out["proj_head_output"].shape == (2, 128)
    assert out["logits_sup"].shape == (2, 10)
    np.testing.assert_array_equal(out["proj_head_input"], out["final_avg_pool"])
    # Inference is deterministic; trainable=True uses batch statistics, so it differs.
    np.testing.assert_array_equal(out["logits_sup"], loaded(x, trainable=False)["logits_sup"])
    assert not np.allclose(out["block_group1"], loaded(x, trainable=True)["block_group1"])


def test_refuses_non_empty_target(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        write_official_saved_model(tmp_path / "sm", 18, 1, False, True, 10)
