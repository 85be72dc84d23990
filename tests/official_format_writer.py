"""Writes SavedModels in the official SimCLRv2 TF2 format, with random weights, for tests.

The released checkpoints can't be downloaded in tests, so this module rebuilds their object
graph with plain trackables and `tf.nn` ops: same structural paths, same checkpoint keys
(`trainable_variables_list/<i>`, `model/resnet_model/variables/<j>`,
`model/_projection_head/variables/<j>`), same call convention
(`loaded(images, trainable=False)` -> dict of endpoints, no signatures) and the same
computation as google-research/simclr tf2/ (post-activation ResNet v1, fixed padding,
ResNet-D shortcut and stem with SK, SK convs, BN-after-dense projection head).

The facts come from tests/data/official_format (FORMAT.md and the *.key_map.tsv files);
tests/test_official_writer.py checks the written keys against those files row by row.
"""

from __future__ import annotations

import os
import shutil
import uuid

import numpy as np
import tensorflow as tf

AutoTrackable = tf.__internal__.tracking.AutoTrackable

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
SK_RATIO = 0.0625
SK_MIN_DIM = 32
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
          152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}
BOTTLENECK_DEPTHS = (50, 101, 152, 200)


class _Ctx:
    """Random numbers plus the two variable lists in the order upstream Keras gives them."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.trainable = []
        self.non_trainable = []

    def var(self, value, trainable):
        v = tf.Variable(np.asarray(value, np.float32), trainable=trainable)
        (self.trainable if trainable else self.non_trainable).append(v)
        return v


def _untracked(obj, **attrs):
    # Config values must not become trackable children (lists, dicts and tuples would be
    # wrapped and saved as extra objects): bypass AutoTrackable's attribute tracking.
    for name, value in attrs.items():
        object.__setattr__(obj, name, value)


class _Placeholder(AutoTrackable):
    """A weightless upstream layer (identity, pooling, padding, dropblock): it keeps list
    indices, and so the structural paths of the layers after it, as upstream has them."""

    def __init__(self, fn=None):
        _untracked(self, _fn=fn)

    def __call__(self, x, training):
        return x if self._fn is None else self._fn(x)


class _Conv(AutoTrackable):
    """Keras Conv2D without bias: a `kernel`."""

    def __init__(self, ctx, k, cin, cout, strides=1, padding="SAME"):
        fan_in = k * k * cin
        self.kernel = ctx.var(ctx.rng.normal(0.0, np.sqrt(2.0 / fan_in), (k, k, cin, cout)), True)
        self._strides = strides
        self._padding = padding

    def __call__(self, x, training):
        return tf.nn.conv2d(x, self.kernel, self._strides, self._padding)


def _fixed_pad(x, k):
    total = k - 1
    beg = total // 2
    return tf.pad(x, [[0, 0], [beg, total - beg], [beg, total - beg], [0, 0]])


class _ConvFixedPadding(AutoTrackable):
    """Upstream Conv2dFixedPadding: explicit padding + VALID when strided, SAME otherwise."""

    def __init__(self, ctx, k, cin, cout, strides):
        self._k = k
        self._strides = strides
        self.conv2d = _Conv(ctx, k, cin, cout, strides, "SAME" if strides == 1 else "VALID")

    def __call__(self, x, training):
        if self._strides > 1:
            x = _fixed_pad(x, self._k)
        return self.conv2d(x, training)


class _BN(AutoTrackable):
    """Keras BatchNormalization: gamma, beta (trainable), moving_mean, moving_variance."""

    def __init__(self, ctx, c, center=True, gamma_range=(0.5, 1.5)):
        rng = ctx.rng
        self.gamma = ctx.var(rng.uniform(*gamma_range, c), True)
        self.beta = ctx.var(rng.normal(0.0, 0.2, c), True) if center else None
        _untracked(self, _stats_ctx=(ctx, c, rng))
        self.moving_mean = None
        self.moving_variance = None

    def make_stats(self):
        # Called after the whole network's trainables exist: moving statistics come after all
        # trainable variables in upstream's `variables` lists, in the same layer order.
        ctx, c, rng = self._stats_ctx
        self.moving_mean = ctx.var(rng.normal(0.0, 0.2, c), False)
        self.moving_variance = ctx.var(rng.uniform(0.5, 2.0, c), False)

    def __call__(self, x, training):
        if training:
            axes = list(range(len(x.shape) - 1))
            mean, var = tf.nn.moments(x, axes)
            self.moving_mean.assign(self.moving_mean * BN_MOMENTUM + mean * (1 - BN_MOMENTUM))
            self.moving_variance.assign(
                self.moving_variance * BN_MOMENTUM + var * (1 - BN_MOMENTUM))
        else:
            mean, var = self.moving_mean, self.moving_variance
        return tf.nn.batch_normalization(x, mean, var, self.beta, self.gamma, BN_EPSILON)


class _BNRelu(AutoTrackable):
    """Upstream BatchNormRelu: attribute `bn`."""

    def __init__(self, ctx, c, relu=True, center=True, gamma_range=(0.5, 1.5)):
        self._relu = relu
        self.bn = _BN(ctx, c, center, gamma_range)

    def __call__(self, x, training):
        x = self.bn(x, training)
        return tf.nn.relu(x) if self._relu else x


class _SKConv(AutoTrackable):
    """Upstream SK_Conv2D: two 3x3 streams (one conv, 2f outputs) mixed by a softmax."""

    def __init__(self, ctx, cin, f, strides):
        mid = max(int(f * SK_RATIO), SK_MIN_DIM)
        self.conv2d_fixed_padding = _ConvFixedPadding(ctx, 3, cin, 2 * f, strides)
        self.batch_norm_relu = _BNRelu(ctx, 2 * f)
        self.conv2d_0 = _Conv(ctx, 1, f, mid)
        self.batch_norm_relu_1 = _BNRelu(ctx, mid)
        self.conv2d_1 = _Conv(ctx, 1, mid, 2 * f)

    def __call__(self, x, training):
        x = self.conv2d_fixed_padding(x, training)
        x = self.batch_norm_relu(x, training)
        streams = tf.stack(tf.split(x, 2, axis=3))
        g = tf.reduce_mean(tf.reduce_sum(streams, axis=0), [1, 2], keepdims=True)
        g = self.batch_norm_relu_1(self.conv2d_0(g, training), training)
        mixing = tf.nn.softmax(tf.stack(tf.split(self.conv2d_1(g, training), 2, axis=3)), axis=0)
        return tf.reduce_sum(streams * mixing, axis=0)


def _shortcut_layers(ctx, cin, cout, strides, sk):
    layers = []
    if sk:  # ResNet-D: average pool then 1x1 conv.
        if strides > 1:
            layers.append(_Placeholder(lambda x: _fixed_pad(x, 2)))
        pad = "SAME" if strides == 1 else "VALID"
        layers.append(_Placeholder(
            lambda x, s=strides, p=pad: tf.nn.avg_pool2d(x, 2, s, p)))
        layers.append(_ConvFixedPadding(ctx, 1, cin, cout, 1))
    else:
        layers.append(_ConvFixedPadding(ctx, 1, cin, cout, strides))
    layers.append(_BNRelu(ctx, cout, relu=False))
    return layers


def _run(layers, x, training):
    for layer in layers:
        x = layer(x, training)
    return x


class _ResidualBlock(AutoTrackable):
    def __init__(self, ctx, cin, f, strides, projection, sk):
        # Upstream assigns conv2d_bn_layers before shortcut_layers: Keras orders the
        # trainable variables that way (the r18 key map confirms it).
        self.conv2d_bn_layers = [
            _ConvFixedPadding(ctx, 3, cin, f, strides), _BNRelu(ctx, f),
            _ConvFixedPadding(ctx, 3, f, f, 1), _BNRelu(ctx, f, relu=False, gamma_range=(0.2, 0.6))]
        self.shortcut_layers = _shortcut_layers(ctx, cin, f, strides, sk) if projection else []

    def __call__(self, x, training):
        return tf.nn.relu(_run(self.conv2d_bn_layers, x, training)
                          + _run(self.shortcut_layers, x, training))


class _BottleneckBlock(AutoTrackable):
    def __init__(self, ctx, cin, f, strides, projection, sk):
        self.projection_layers = (
            _shortcut_layers(ctx, cin, 4 * f, strides, sk) if projection else [])
        self.shortcut_dropblock = _Placeholder()
        layers = [_ConvFixedPadding(ctx, 1, cin, f, 1), _BNRelu(ctx, f), _Placeholder()]
        if sk:
            layers += [_SKConv(ctx, f, f, strides)]
        else:
            layers += [_ConvFixedPadding(ctx, 3, f, f, strides), _BNRelu(ctx, f)]
        layers += [_Placeholder(), _ConvFixedPadding(ctx, 1, f, 4 * f, 1),
                   _BNRelu(ctx, 4 * f, relu=False, gamma_range=(0.2, 0.6)), _Placeholder()]
        self.conv_relu_dropblock_layers = layers

    def __call__(self, x, training):
        return tf.nn.relu(_run(self.conv_relu_dropblock_layers, x, training)
                          + _run(self.projection_layers, x, training))


class _BlockGroup(AutoTrackable):
    def __init__(self, ctx, block_cls, cin, f, blocks, strides, sk):
        expansion = 4 if block_cls is _BottleneckBlock else 1
        self.layers = [block_cls(ctx, cin, f, strides, True, sk)]
        for _ in range(1, blocks):
            self.layers.append(block_cls(ctx, f * expansion, f, 1, False, sk))
        self.out_channels = f * expansion

    def __call__(self, x, training):
        return _run(self.layers, x, training)


class _ResNet(AutoTrackable):
    def __init__(self, ctx, depth, width, sk, cifar_stem):
        c64 = int(64 * width)
        stem = []
        if cifar_stem:
            stem = [_ConvFixedPadding(ctx, 3, 3, c64, 1), _Placeholder(), _BNRelu(ctx, c64),
                    _Placeholder()]
            endpoints = {1: "initial_conv", 3: "initial_max_pool"}
        else:
            if sk:
                half = c64 // 2
                stem = [_ConvFixedPadding(ctx, 3, 3, half, 2), _BNRelu(ctx, half),
                        _ConvFixedPadding(ctx, 3, half, half, 1), _BNRelu(ctx, half),
                        _ConvFixedPadding(ctx, 3, half, c64, 1)]
            else:
                stem = [_ConvFixedPadding(ctx, 7, 3, c64, 2)]
            n = len(stem)
            stem += [_Placeholder(), _BNRelu(ctx, c64),
                     _Placeholder(lambda x: tf.nn.max_pool2d(x, 3, 2, "SAME")), _Placeholder()]
            endpoints = {n: "initial_conv", n + 3: "initial_max_pool"}
        _untracked(self, _endpoints=endpoints)
        self.initial_conv_relu_max_pool = stem
        block_cls = _BottleneckBlock if depth in BOTTLENECK_DEPTHS else _ResidualBlock
        self.block_groups = []
        cin = c64
        for i, (blocks, strides) in enumerate(zip(BLOCKS[depth], (1, 2, 2, 2))):
            group = _BlockGroup(ctx, block_cls, cin, int(64 * width) * 2 ** i, blocks, strides, sk)
            self.block_groups.append(group)
            cin = group.out_channels
        self.out_channels = cin

    def __call__(self, x, training, out):
        for i, layer in enumerate(self.initial_conv_relu_max_pool):
            x = layer(x, training)
            if i in self._endpoints:
                out[self._endpoints[i]] = x
        for i, group in enumerate(self.block_groups):
            x = group(x, training)
            out["block_group%d" % (i + 1)] = x
        x = tf.reduce_mean(x, [1, 2])
        out["final_avg_pool"] = x
        return x


class _Dense(AutoTrackable):
    def __init__(self, ctx, cin, cout, use_bias):
        self.kernel = ctx.var(ctx.rng.normal(0.0, 1.0 / np.sqrt(cin), (cin, cout)), True)
        self.bias = ctx.var(ctx.rng.normal(0.0, 0.5, cout), True) if use_bias else None

    def __call__(self, x):
        y = tf.matmul(x, self.kernel)
        return y + self.bias if self.bias is not None else y


class _LinearLayer(AutoTrackable):
    def __init__(self, ctx, cin, cout, use_bias, use_bn):
        # Key maps: the BN's gamma/beta precede the dense kernel in the trainable list.
        if use_bn:
            self.bn_relu = _BNRelu(ctx, cout, relu=False, center=use_bias)
        self.dense = _Dense(ctx, cin, cout, use_bias and not use_bn)
        self._use_bn = use_bn

    def __call__(self, x, training):
        x = self.dense(x)
        return self.bn_relu(x, training) if self._use_bn else x


class _ProjectionHead(AutoTrackable):
    def __init__(self, ctx, cin, num_layers, out_dim):
        self.linear_layers = [
            _LinearLayer(ctx, cin, cin if j < num_layers - 1 else out_dim,
                         use_bias=j < num_layers - 1, use_bn=True)
            for j in range(num_layers)]

    def __call__(self, x, training):
        hiddens = [x]
        for j, layer in enumerate(self.linear_layers):
            h = layer(hiddens[-1], training)
            if j < len(self.linear_layers) - 1:
                h = tf.nn.relu(h)
            hiddens.append(h)
        return hiddens


class _SupervisedHead(AutoTrackable):
    def __init__(self, ctx, cin, num_classes):
        self.linear_layer = _LinearLayer(ctx, cin, num_classes, use_bias=True, use_bn=False)


class _Model(AutoTrackable):
    pass


def _bn_layers(obj, seen=None):
    """Every _BN below obj, in attribute order (= upstream's variable order)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, _BN):
        return [obj]
    found = []
    children = obj if isinstance(obj, (list, tuple)) else [
        v for k, v in vars(obj).items() if not k.startswith("_")]
    for child in children:
        if isinstance(child, (AutoTrackable, list, tuple)):
            found += _bn_layers(child, seen)
    return found


class OfficialFormatModule(tf.Module):
    """Root object, like upstream run.py's SimCLRModel."""

    def __init__(self, model, trainable_variables, ft_proj_selector, include_projection_head):
        super().__init__()
        self.model = model
        # Named like upstream: `trainable_variables` is a tf.Module property.
        self.trainable_variables_list = trainable_variables
        self._selector = ft_proj_selector
        self._include_projection_head = include_projection_head

    @tf.function
    def __call__(self, inputs, trainable):
        out = {}
        hidden = self.model.resnet_model(inputs, trainable, out)
        hiddens = self.model._projection_head(hidden, trainable)
        if self._include_projection_head:
            out["proj_head_input"] = hiddens[0]
            out["proj_head_output"] = hiddens[-1]
        out["logits_sup"] = self.model.supervised_head.linear_layer(
            hiddens[self._selector], trainable)
        return out


def build_official_module(depth, width, sk, cifar_stem, num_classes, head="pretrained",
                          ft_proj_selector=None, include_projection_head=True, seed=0,
                          num_proj_layers=3, proj_out_dim=128):
    """Builds (without saving) the root module; see write_official_saved_model."""
    if depth not in BLOCKS:
        raise ValueError(f"depth={depth!r}: the official format has depths {sorted(BLOCKS)}")
    if head not in ("pretrained", "finetuned"):
        raise ValueError(f"head={head!r}: use 'pretrained' or 'finetuned'")
    if ft_proj_selector is None:
        # Upstream: linear eval during pretraining reads the backbone (flag default 0); the
        # released fine-tuned models read projection layer 0's output (selector 1).
        ft_proj_selector = 0 if head == "pretrained" else 1
    if not 0 <= ft_proj_selector <= num_proj_layers:
        raise ValueError(f"ft_proj_selector={ft_proj_selector} outside 0..{num_proj_layers}")
    ctx = _Ctx(seed)
    model = _Model()
    resnet = _ResNet(ctx, depth, width, sk, cifar_stem)
    n_resnet = len(ctx.trainable)
    proj = _ProjectionHead(ctx, resnet.out_channels, num_proj_layers, proj_out_dim)
    n_proj = len(ctx.trainable) - n_resnet
    sel_dim = resnet.out_channels if ft_proj_selector < num_proj_layers else proj_out_dim
    sup = _SupervisedHead(ctx, sel_dim, num_classes)
    trainable = list(ctx.trainable)

    for bn in _bn_layers(resnet):
        bn.make_stats()
    resnet_stats = list(ctx.non_trainable)
    for bn in _bn_layers(proj):
        bn.make_stats()
    proj_stats = ctx.non_trainable[len(resnet_stats):]

    # Keras 2 serialises a `variables` list on each layer (trainable, then non-trainable);
    # checkpoint keys are shortest paths, so moving statistics get keyed through these lists.
    resnet.variables = trainable[:n_resnet] + resnet_stats
    proj.variables = trainable[n_resnet:n_resnet + n_proj] + proj_stats
    model.resnet_model = resnet
    model._projection_head = proj
    model.supervised_head = sup
    return OfficialFormatModule(model, trainable, ft_proj_selector, include_projection_head)


def write_official_saved_model(path, depth, width, sk, cifar_stem, num_classes,
                               head="pretrained", ft_proj_selector=None,
                               include_projection_head=True, seed=0, traced=(True, False)):
    """Writes a random-weight SavedModel in the official SimCLRv2 TF2 format to `path`.

    head: "pretrained" or "finetuned" (same variables; the default selector differs).
    ft_proj_selector: which projection hidden feeds the supervised head (0 = backbone output,
      i = ReLU output of projection layer i-1); None = 0 for pretrained, 1 for finetuned.
    include_projection_head: whether the endpoints include proj_head_input/proj_head_output
      (some released models omit them; the variables are there either way).
    traced: the `trainable` values to trace, as upstream does for (True, False); tests that
      only read variables or run inference trace fewer, which saves most of the write time.
    Returns `path`. Written to a temporary sibling first, then renamed.
    """
    path = os.fspath(path)
    if os.path.exists(path) and os.listdir(path):
        raise FileExistsError(f"{path} exists and is not empty; pick a new directory")
    module = build_official_module(depth, width, sk, cifar_stem, num_classes, head,
                                   ft_proj_selector, include_projection_head, seed)
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    for trainable in traced:
        module.__call__.get_concrete_function(spec, trainable=bool(trainable))
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tf.saved_model.save(module, tmp, signatures={})
        if os.path.exists(path):
            os.rmdir(path)
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
