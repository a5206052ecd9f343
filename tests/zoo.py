"""A zoo of small, real-architecture models for end-to-end training tests.

Each case is a well-known architecture at toy size, hand-written the way torchvision writes it (the PyPI
torchvision wheel does not import here) or built from a transformers/peft config, so the service is exercised on
the module shapes people actually send: BatchNorm with running stats, in-place ReLU, depthwise convs,
squeeze-excite, nn.TransformerEncoder, nn.LSTM, ModelOutput-returning Hugging Face models and a LoRA wrap with
frozen base weights. Sizes are tiny so three CPU training steps take well under a second.

Every builder draws its initial weights from torch's global RNG: seed it before ``case.make()``. Dropout
(mobilenet, transformer, bert, gpt2) draws from the same RNG during training, so seed it again before training
when two runs must match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

BATCH = 4


@dataclass(frozen=True)
class ZooCase:
    name: str
    make: Callable[[], nn.Module]
    # Keyword inputs for a batch of BATCH, named exactly as the model's forward parameters.
    inputs: Callable[[torch.Generator], dict[str, torch.Tensor]]
    targets: Callable[[torch.Generator], torch.Tensor]
    criterion: str  # a torch.nn loss class name
    output: str | None = None  # key of the tensor the loss uses when forward returns a dict/ModelOutput
    frozen: tuple[str, ...] = ()  # parameter names expected to have requires_grad False


# ---------------------------------------------------------------------------------------------------------------
# ResNet (torchvision.models.resnet, ResNet-18 layout at two narrow stages)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        # One in-place ReLU module used twice, as torchvision does: hooks and export must cope with reuse.
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, layers: tuple[int, ...] = (2, 2), widths: tuple[int, ...] = (8, 16), num_classes: int = 10):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (blocks, planes) in enumerate(zip(layers, widths, strict=True)):
            setattr(self, f"layer{i + 1}", self._make_layer(planes, blocks, stride=1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        self.num_stages = len(layers)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------------------------------------------------------
# MobileNetV3 (torchvision.models.mobilenetv3, a few blocks of the small variant)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNActivation(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: type | None = None):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=0.001, momentum=0.01),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, expanded: int, cout: int, stride: int, use_se: bool, act: type) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(ConvBNActivation(cin, expanded, act=act))
        layers.append(ConvBNActivation(expanded, expanded, 3, stride, groups=expanded, act=act))  # depthwise
        if use_se:
            layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4)))
        layers.append(ConvBNActivation(expanded, cout))  # linear bottleneck: no activation
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNetV3(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBNActivation(3, 16, 3, stride=2, act=nn.Hardswish),
            InvertedResidual(16, 16, 16, 1, use_se=True, act=nn.ReLU),  # expansion 1: no expand conv
            InvertedResidual(16, 64, 24, 2, use_se=False, act=nn.ReLU),
            InvertedResidual(24, 72, 24, 1, use_se=True, act=nn.Hardswish),  # residual
            ConvBNActivation(24, 96, act=nn.Hardswish),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(96, 64), nn.Hardswish(inplace=True), nn.Dropout(p=0.2, inplace=True), nn.Linear(64, num_classes)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---------------------------------------------------------------------------------------------------------------
# Sequence models in plain torch.nn


class TransformerClassifier(nn.Module):
    def __init__(self, vocab: int = 50, d_model: int = 32, num_classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 4, 64, dropout=0.1, batch_first=True)
        # No nested-tensor fast path: it only applies in eval with a padding mask and warns otherwise.
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


class LSTMRegressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])  # the last time step's hidden state


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face models, built from configs only (no hub access)


def bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
    )
    return BertForSequenceClassification(config)


def gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    # GPT-2's bos/eos id (50256) lies outside the toy vocabulary; transformers warns unless they fit in it.
    config = GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=64, use_cache=False, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config)


# ---------------------------------------------------------------------------------------------------------------
# LoRA (peft) over a small MLP


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


def lora() -> nn.Module:
    from peft import LoraConfig, get_peft_model

    return get_peft_model(MLP(), LoraConfig(r=4, lora_alpha=8, target_modules=["fc1", "fc2"]))


def frozen_names(model: nn.Module) -> tuple[str, ...]:
    """The base model's parameters inside a peft wrap: everything that is not a LoRA adapter weight."""
    return tuple(name for name, _ in model.named_parameters() if "lora_" not in name)


def _lora_frozen() -> tuple[str, ...]:
    # Built once at import for its parameter names; fork_rng keeps the import from moving the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        return frozen_names(lora())


# ---------------------------------------------------------------------------------------------------------------
# The zoo


def _images(g: torch.Generator) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(BATCH, 3, 16, 16, generator=g)}


def _ids(seq: int, vocab: int = 100) -> Callable[[torch.Generator], dict[str, torch.Tensor]]:
    def inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, vocab, (BATCH, seq), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones(BATCH, seq, dtype=torch.int64)}

    return inputs


def _classes(n: int) -> Callable[[torch.Generator], torch.Tensor]:
    return lambda g: torch.randint(0, n, (BATCH,), generator=g)


def _values(*shape: int) -> Callable[[torch.Generator], torch.Tensor]:
    return lambda g: torch.randn(BATCH, *shape, generator=g)


ZOO: list[ZooCase] = [
    ZooCase("resnet", ResNet, _images, _classes(10), "CrossEntropyLoss"),
    ZooCase("mobilenet", MobileNetV3, _images, _classes(10), "CrossEntropyLoss"),
    ZooCase(
        "transformer",
        TransformerClassifier,
        lambda g: {"x": torch.randint(0, 50, (BATCH, 12), generator=g)},
        _classes(5),
        "CrossEntropyLoss",
    ),
    ZooCase("lstm", LSTMRegressor, lambda g: {"x": torch.randn(BATCH, 10, 8, generator=g)}, _values(3), "MSELoss"),
    ZooCase("bert", bert, _ids(10), _classes(3), "CrossEntropyLoss", output="logits"),
    # The service's criterion takes the output and the target as given, and next-token cross-entropy would need the
    # logits shifted against the ids; regressing the logits onto a float target keeps the loss a plain nn loss.
    ZooCase("gpt2", gpt2, _ids(8), _values(8, 100), "MSELoss", output="logits"),
    ZooCase(
        "lora", lora, lambda g: {"x": torch.randn(BATCH, 16, generator=g)}, _values(4), "MSELoss", frozen=_lora_frozen()
    ),
]

CASES = {case.name: case for case in ZOO}


def train_locally(
    case: ZooCase, model: nn.Module, steps: int = 3, lr: float = 0.01, seed: int = 0
) -> tuple[list[float], dict[str, torch.Tensor]]:
    """The reference loop: SGD with momentum over the trainable parameters, batch i drawn from seed + i.

    The model trains in the mode it is in (a fresh module is in train mode; an exported one cannot switch), and
    dropout draws from torch's global RNG: both are left to the caller."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    criterion = getattr(nn, case.criterion)()
    losses = []
    for step in range(steps):
        g = torch.Generator().manual_seed(seed + step)  # inputs first, then targets, from the same stream
        inputs, target = case.inputs(g), case.targets(g)
        opt.zero_grad()
        out = model(**inputs)
        if case.output is not None:
            out = out[case.output]
        loss = criterion(out, target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}
