"""Trainable-parameter counts computed from layer shapes, without allocating a single weight.

The 795M-parameter r152_3x_sk1 can then be checked against the paper in CI; a test proves these
formulas equal the built model's count on the smaller configurations. `weight_bytes` adds the
batch-norm moving statistics: what a model's float32 weights occupy, known before any is loaded
(what the exporter decides a file layout from, and the memory figures in docs/ are ratios of).
"""

from simclrv2.zoo.config import ModelConfig, resolve_config, scaled_channels


def _conv(kernel, c_in, c_out):
    return kernel * kernel * c_in * c_out


def _bn(channels, center=True):
    return channels * (2 if center else 1)


def _bn_with_statistics(channels, center=True):
    return _bn(channels, center) + 2 * channels  # moving mean and variance


def _stem(config: ModelConfig, _bn=_bn):
    filters = scaled_channels(64, config.width)
    if config.cifar_stem:
        return _conv(3, 3, filters) + _bn(filters), filters
    if config.sk:
        half = scaled_channels(32, config.width)
        return (_conv(3, 3, half) + _bn(half) + _conv(3, half, half) + _bn(half)
                + _conv(3, half, filters) + _bn(filters)), filters
    return _conv(7, 3, filters) + _bn(filters), filters


def _block(config: ModelConfig, c_in, filters, projection, _bn=_bn):
    if config.block_kind == "basic":
        c_out = filters
        count = _conv(3, c_in, filters) + _bn(filters) + _conv(3, filters, filters) + _bn(filters)
    else:
        c_out = 4 * filters
        count = _conv(1, c_in, filters) + _bn(filters)
        if config.sk:
            mid = max(int(filters * config.sk_ratio), 32)
            count += (_conv(3, filters, 2 * filters) + _bn(2 * filters)
                      + _conv(1, filters, mid) + _bn(mid) + _conv(1, mid, 2 * filters))
        else:
            count += _conv(3, filters, filters) + _bn(filters)
        count += _conv(1, filters, c_out) + _bn(c_out)
    if projection:
        count += _conv(1, c_in, c_out) + _bn(c_out)
    return count, c_out


def count_parameters(name_or_config, **options) -> dict:
    """Trainable parameters: {'backbone', 'projection_head', 'supervised_head', 'total'}."""
    return _count(resolve_config(name_or_config, **options), _bn)


def weight_bytes(name_or_config, **options) -> int:
    """Bytes of the model's float32 weights, batch-norm moving statistics included."""
    return 4 * _count(resolve_config(name_or_config, **options), _bn_with_statistics)["total"]


def _count(config, _bn):
    backbone, channels = _stem(config, _bn)
    for filters, num_blocks in zip(config.group_filters, config.blocks_per_group):
        for index in range(num_blocks):
            count, channels = _block(config, channels, filters, projection=index == 0, _bn=_bn)
            backbone += count
    projection = 0
    hidden_widths = [channels]
    if config.include_projection_head:
        for index in range(config.num_proj_layers):
            last = index == config.num_proj_layers - 1
            width = config.proj_out_dim if last else channels
            projection += channels * width + _bn(width, center=not last)
            hidden_widths.append(width)
    supervised = 0
    if config.num_classes:
        head_in = hidden_widths[config.ft_proj_selector]
        supervised = head_in * config.num_classes + config.num_classes
    return {"backbone": backbone, "projection_head": projection, "supervised_head": supervised,
            "total": backbone + projection + supervised}
