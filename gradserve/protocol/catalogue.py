"""The catalogue's names: every ``torch.nn`` module and loss a network spec may use, with the fields the spec
carries for each. The server's spec classes (``models/spec``) define the same types with their validation;
``tests/unit/test_protocol.py`` holds the two together, so a new layer or loss is added here and there at once."""

from __future__ import annotations

_CONV = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "bias",
    "padding_mode",
)
_CONV_T = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "output_padding", "groups", "bias")
_MAXPOOL = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
_AVGPOOL = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
_BN = ("num_features", "eps", "momentum", "affine", "track_running_stats")
_RNN = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")

# Catalogue module type -> its spec fields (the client reads them back from a module's attributes of the same name).
MODULE_FIELDS: dict[str, tuple[str, ...]] = {
    "Linear": ("in_features", "out_features", "bias"),
    "Conv1d": _CONV,
    "Conv2d": _CONV,
    "Conv3d": _CONV,
    "ConvTranspose1d": (*_CONV_T, "dilation"),
    "ConvTranspose2d": (*_CONV_T, "dilation"),
    "MaxPool1d": _MAXPOOL,
    "MaxPool2d": _MAXPOOL,
    "AvgPool1d": _AVGPOOL,
    "AvgPool2d": _AVGPOOL,
    "AdaptiveAvgPool1d": ("output_size",),
    "AdaptiveAvgPool2d": ("output_size",),
    "AdaptiveMaxPool2d": ("output_size",),
    "BatchNorm1d": _BN,
    "BatchNorm2d": _BN,
    "BatchNorm3d": _BN,
    "LayerNorm": ("normalized_shape", "eps", "elementwise_affine", "bias"),
    "GroupNorm": ("num_groups", "num_channels", "eps", "affine"),
    "Dropout": ("p",),
    "Dropout2d": ("p",),
    "Embedding": ("num_embeddings", "embedding_dim", "padding_idx"),
    "ReLU": (),
    "ReLU6": (),
    "LeakyReLU": ("negative_slope",),
    "ELU": ("alpha",),
    "GELU": ("approximate",),
    "SiLU": (),
    "Mish": (),
    "Tanh": (),
    "Sigmoid": (),
    "Softplus": ("beta", "threshold"),
    "Hardtanh": ("min_val", "max_val"),
    "PReLU": ("num_parameters", "init"),
    "Softmax": ("dim",),
    "LogSoftmax": ("dim",),
    "Flatten": ("start_dim", "end_dim"),
    "Unflatten": ("dim", "unflattened_size"),
    "Identity": (),
    "RNN": (*_RNN, "nonlinearity"),
    "LSTM": _RNN,
    "GRU": _RNN,
    "MultiheadAttention": ("embed_dim", "num_heads", "dropout", "bias", "kdim", "vdim", "batch_first"),
    "TransformerEncoderLayer": (
        "d_model",
        "nhead",
        "dim_feedforward",
        "dropout",
        "activation",
        "layer_norm_eps",
        "batch_first",
        "norm_first",
        "bias",
    ),
}
# Modules whose output is a tuple: the spec passes on element ``select``.
TUPLE_MODULES = frozenset({"RNN", "LSTM", "GRU", "MultiheadAttention"})

# Loss type -> the keyword arguments of its ``torch.nn.functional`` form that the spec carries.
LOSS_FIELDS: dict[str, tuple[str, ...]] = {
    "MSELoss": (),
    "L1Loss": (),
    "SmoothL1Loss": ("beta",),
    "HuberLoss": ("delta",),
    "CrossEntropyLoss": ("weight", "ignore_index", "label_smoothing"),
    "NLLLoss": ("weight", "ignore_index"),
    "BCELoss": ("weight",),
    "BCEWithLogitsLoss": ("weight", "pos_weight"),
    "KLDivLoss": ("log_target",),
    "SoftMarginLoss": (),
    "PoissonNLLLoss": ("log_input", "full", "eps"),
}
