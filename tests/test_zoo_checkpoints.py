import dataclasses

import pytest

from simclrv2.zoo import checkpoints as ck


def test_counts_match_the_release():
    v2 = ck.list_checkpoints(version=2)
    # 13 architectures x 5 stages (README: "total 65 pretrained models") + distilled.
    main = [c for c in v2 if c.stage in ck.SIMCLRV2_STAGES]
    assert len(main) == 65
    assert {c.architecture for c in main} == set(ck.SIMCLRV2_ARCHITECTURES)
    assert len(ck.SIMCLRV2_ARCHITECTURES) == 13
    distilled = [c for c in v2 if c.stage in ck.DISTILL_STAGES]
    assert {c.architecture for c in distilled} == {"r50_1x_sk0", "r50_2x_sk1", "r152_3x_sk1"}
    v1 = ck.list_checkpoints(version=1)
    assert len(v1) == 9
    assert {(c.width, c.stage) for c in v1} == {
        (w, s) for w in (1, 2, 4) for s in ("pretrained", "finetuned_10pct", "finetuned_100pct")}


def test_paths_follow_the_bucket_layout():
    c = ck.get_checkpoint("r152_3x_sk1", "finetuned_10pct")
    assert c.gs_url == "gs://simclr-checkpoints-tf2/simclrv2/finetuned_10pct/r152_3x_sk1/saved_model"
    assert c.url == ("https://storage.googleapis.com/simclr-checkpoints-tf2/"
                     "simclrv2/finetuned_10pct/r152_3x_sk1/saved_model")
    v1 = ck.get_checkpoint("simclrv1_r50_2x", "finetuned_100pct")
    assert v1.gs_url == "gs://simclr-checkpoints-tf2/simclrv1/finetune_100pct/2x/saved_model"
    urls = v1.file_urls("http://127.0.0.1:1/b/")
    assert urls["variables/variables.index"] == (
        "http://127.0.0.1:1/b/simclrv1/finetune_100pct/2x/saved_model/variables/variables.index")
    assert set(urls) == set(ck.SAVED_MODEL_FILES)


def test_architecture_fields_agree_with_the_name():
    for c in ck.list_checkpoints():
        assert ck.parse_architecture(c.architecture) == (c.depth, c.width, c.sk)
        assert c.num_classes == 1000
        assert c.has_supervised_head
        assert c.bucket_path.endswith("/saved_model")
    assert ck.get_checkpoint("r101_2x_sk1", "supervised").sk_ratio == 0.0625
    assert ck.get_checkpoint("r101_2x_sk0", "supervised").sk_ratio == 0.0


@pytest.mark.parametrize("name,stage,top1", [
    # Spot checks against README Table 1, one per column, and the SimCLRv1 table.
    ("r50_1x_sk0", "finetuned_1pct", 57.9),
    ("r50_2x_sk1", "finetuned_10pct", 77.0),
    ("r152_3x_sk1", "finetuned_100pct", 83.1),
    ("r101_1x_sk1", "pretrained", 76.3),
    ("r152_2x_sk0", "supervised", 79.1),
    ("simclrv1_r50_1x", "pretrained", 69.1),
    ("simclrv1_r50_4x", "pretrained", 76.6),
    ("r50_1x_sk0", "distill_1pct", 73.9),
    ("r50_1x_sk0", "distill_10pct", 77.5),
])
def test_published_top1(name, stage, top1):
    assert ck.get_checkpoint(name, stage).top1 == top1


def test_top1_is_none_where_unpublished_and_colab_is_close_to_paper():
    assert ck.get_checkpoint("simclrv1_r50_1x", "finetuned_10pct").top1 is None
    assert ck.get_checkpoint("simclrv1_r50_1x", "finetuned_10pct").top1_colab == 65.8
    for c in ck.list_checkpoints(version=2):
        if c.top1 is not None and c.top1_colab is not None:
            # The colab says GPU evals differ from the paper's TPU ones by <= 0.1% (+ rounding).
            assert abs(c.top1 - c.top1_colab) <= 0.25, c


def test_projection_head_flags():
    assert all(c.has_projection_head is False for c in ck.list_checkpoints(version=1))
    assert all(c.has_projection_head for c in ck.list_checkpoints(stage="pretrained", version=2))


def test_filters_and_aliases():
    assert len(ck.list_checkpoints(stage="pretrained")) == 13 + 3
    assert [c.stage for c in ck.list_checkpoints(architecture="r152_3x_sk1")] == [
        "pretrained", "finetuned_1pct", "finetuned_10pct", "finetuned_100pct", "supervised",
        "distill_1pct", "distill_10pct"]
    assert ck.get_checkpoint("simclrv1_r50_1x", "pretrain").stage == "pretrained"
    assert ck.get_checkpoint("simclrv1_r50_1x", "finetune_10pct").stage == "finetuned_10pct"


def test_unknown_name_or_stage_lists_valid_choices():
    with pytest.raises(ValueError, match=r"unknown checkpoint name 'r50_3x_sk0'.*r50_1x_sk0"):
        ck.get_checkpoint("r50_3x_sk0", "pretrained")
    with pytest.raises(ValueError, match=r"no stage 'distill_1pct'.*finetuned_1pct"):
        ck.get_checkpoint("r101_1x_sk0", "distill_1pct")
    with pytest.raises(ValueError, match=r"unknown stage 'linear'.*finetuned_100pct"):
        ck.list_checkpoints(stage="linear")
    with pytest.raises(ValueError, match=r"r18_1x_sk0.*r50_1x_sk0"):
        ck.list_checkpoints(architecture="r18_1x_sk0")
    with pytest.raises(ValueError, match="expected r<depth>_<width>x_sk<0|1>"):
        ck.parse_architecture("resnet50")


def test_entries_are_frozen():
    c = ck.get_checkpoint("r50_1x_sk0", "pretrained")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.top1 = 99.0
    assert c.to_dict()["url"] == c.url
