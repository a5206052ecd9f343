"""The job request: a network, a dataset (a union on ``source``), a loss, an optimizer and a length.

Pydantic checks each field alone; what needs the network (shapes, counts against limits) is checked
by ``models.nn.job_plan.plan_job``, so the worker receives only requests that can run.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.spec.losses import LossSpec
from models.spec.network import NetworkSpec
from models.spec.optimizers import OptimizerSpec
from models.spec.schedulers import SchedulerSpec
from models.spec.transforms import TransformSpec
from models.spec.types import Device, Fraction, Pos, PosFloat, Seed
from models.wire.tensors import TensorIn


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RandomDataset(_Req):
    """Seeded noise: ``x = torch.randn((n, *input_shape), generator=g)``, then ``y`` from the same ``g``:
    ``torch.randint(num_classes, (n,), generator=g)`` for classes, else ``torch.randn((n, *target_shape))``."""

    source: Literal["random"]
    num_samples: Pos = 256
    input_shape: list[Pos] | None = Field(default=None, description="Default: the network's input shape.")
    target_shape: list[Pos] | None = Field(default=None, description="Regression targets; default: the output shape.")
    num_classes: Pos | None = Field(default=None, description="Class labels instead of regression targets.")
    seed: Seed = 0

    @model_validator(mode="after")
    def _one_kind_of_target(self) -> RandomDataset:
        if self.target_shape is not None and self.num_classes is not None:
            raise ValueError("give target_shape (regression) or num_classes (classification), not both")
        return self


class DigitsDataset(_Req):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 samples, 10 classes), pixels scaled to [0, 1]."""

    source: Literal["digits"]
    image_size: Literal[8, 32] = Field(default=8, description="32 resizes bilinearly, for LeNet's [1, 32, 32].")
    test_fraction: Fraction = Field(default=0.2, description="Held out (stratified, seeded) for accuracy.")
    split_seed: Seed = 0
    normalize: StrictBool = Field(
        default=True,
        description="Standardise pixels with the training split's mean and std, as torchvision's Normalize would.",
    )


class InlineDataset(_Req):
    """Small tensors in the request itself (``max_tensor_elements`` each)."""

    source: Literal["inline"]
    inputs: TensorIn
    targets: TensorIn


class UploadDataset(_Req):
    """A file stored with ``POST /v1/datasets`` (arrays ``inputs``, ``targets``, optionally ``test_*``)."""

    source: Literal["upload"]
    id: Annotated[str, Field(min_length=1, max_length=100)]
    transforms: Annotated[list[TransformSpec], Field(max_length=32)] = Field(
        default_factory=list,
        description="Image transforms in order (resize, center_crop, random_crop, random_horizontal_flip, "
        "normalize), as torchvision's; random ones are seeded from the job's seed and the batch's place in the "
        "data order, so a resume is exact.",
    )


DatasetSpec = Annotated[RandomDataset | DigitsDataset | InlineDataset | UploadDataset, Field(discriminator="source")]


class CaptureSpec(_Req):
    gradients_every: Annotated[StrictInt, Field(ge=0)] = Field(
        default=0, description="Snapshot every parameter's gradient every k steps; 0 means never."
    )
    graph: StrictBool = Field(default=True, description="Dump the autograd graph of the first step.")
    checkpoint_every: Annotated[StrictInt, Field(ge=0)] = Field(
        default=0, description="Checkpoint every k steps (0: only at the end); a restarted job resumes from it."
    )


class LossSpike(_Req):
    factor: Annotated[StrictFloat, Field(gt=1.0)] = Field(description="Pause when a loss exceeds this many times...")
    window: Annotated[StrictInt, Field(ge=1, le=10_000)] = Field(
        default=20, description="...the mean of the last this-many steps' losses."
    )


class Breakpoints(_Req):
    """Rules checked after each step's backward, before its update: the first that holds pauses the job there.

    Each rule reads the step's loss or gradients back from the device, one sync a step."""

    nonfinite: StrictBool = Field(
        default=False, description="A non-finite loss or gradient; names the first parameter, in backward order."
    )
    grad_norm_above: PosFloat | None = Field(
        default=None, description="The gradients' total 2-norm (before any clipping) above this."
    )
    loss_above: StrictFloat | None = Field(default=None, description="The step's loss above this.")
    loss_spike: LossSpike | None = None

    def any(self) -> bool:
        return self.nonfinite or any(v is not None for v in (self.grad_norm_above, self.loss_above, self.loss_spike))


MAX_PROCESSES_PER_NODE = 64
MAX_RESTARTS = 100
MAX_COLLECTIVE_TIMEOUT_S = 86_400.0


class Resources(_Req):
    """The processes a job trains on: one per rank of a torch.distributed group (one GPU each on CUDA)."""

    nodes: Annotated[StrictInt, Field(ge=1)] = Field(default=1, description="Machines; only 1 for now.")
    processes_per_node: Annotated[StrictInt, Field(ge=1, le=MAX_PROCESSES_PER_NODE)] = Field(
        default=1, description="Ranks on the machine; above 1 the job runs data-parallel under torch.distributed."
    )
    max_restarts: Annotated[StrictInt, Field(ge=0, le=MAX_RESTARTS)] | None = Field(
        default=None,
        description="Times a group whose rank failed restarts from the last checkpoint before the job fails "
        "(default: the service's GRADSERVE_JOB_MAX_RESTARTS).",
    )
    collective_timeout_s: Annotated[float, Field(gt=0, le=MAX_COLLECTIVE_TIMEOUT_S)] | None = Field(
        default=None,
        description="A collective (the step's all-reduce) waiting longer than this fails the group's attempt, "
        "naming the rank that stopped answering (default: the service's GRADSERVE_JOB_COLLECTIVE_TIMEOUT_S).",
    )

    @field_validator("nodes")
    @classmethod
    def _one_node(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"multi-node jobs are not supported yet (nodes={value}): use nodes 1")
        return value


JobName = Annotated[str, Field(min_length=1, max_length=200)]
Precision = Literal["32", "bf16-mixed", "16-mixed"]
MAX_ACCUMULATE = 1024
Tag = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:=/+-]{1,64}$")]


class JobCreate(_Req):
    name: JobName | None = Field(default=None, description="Free text, for people; filter lists with ?name=.")
    tags: Annotated[list[Tag], Field(max_length=32)] = Field(
        default_factory=list, description="Labels such as 'baseline' or 'lr=0.1'; filter lists with ?tag=."
    )
    network: NetworkSpec | None = None
    network_id: str | None = None
    dataset: DatasetSpec
    criterion: LossSpec
    optimizer: OptimizerSpec
    lr_scheduler: SchedulerSpec | None = None
    clip_grad_norm: PosFloat | None = Field(
        default=None,
        validation_alias=AliasChoices("clip_grad_norm", "gradient_clip_norm"),
        description="Clip the gradients' total norm to this before each step (clip_grad_norm_); "
        "also accepted as gradient_clip_norm.",
    )
    batch_size: Pos = Field(
        description="Samples per forward pass (per micro-batch when accumulating), over all processes: each of "
        "resources.processes_per_node ranks takes batch_size / processes_per_node of them."
    )
    accumulate_grad_batches: Annotated[StrictInt, Field(ge=1, le=MAX_ACCUMULATE)] = Field(
        default=1,
        description="Micro-batches per optimizer step: each step takes this many consecutive batches of the "
        "data order (fewer at an epoch's end) and averages their gradients; steps and metrics count "
        "optimizer steps.",
    )
    precision: Precision = Field(
        default="32",
        description="'bf16-mixed' and '16-mixed' run forward and loss under torch.autocast; "
        "'16-mixed' also scales the loss (torch.amp.GradScaler).",
    )
    compile: StrictBool = Field(default=False, description="Run the forward pass through torch.compile.")
    channels_last: StrictBool = Field(
        default=False, description="Keep 4-D weights and inputs in channels-last memory format."
    )
    epochs: Pos | None = None
    steps: Pos | None = None
    seed: Seed = 0
    shuffle: StrictBool = Field(default=True, description="Reshuffle every epoch with a generator seeded by seed.")
    device: Device = "auto"
    capture: CaptureSpec = CaptureSpec()
    stop_on_nan: StrictBool = Field(default=True, description="Fail the job at the first non-finite loss.")
    breakpoints: Breakpoints | None = Field(
        default=None, description="Pause instead of going on (or failing) when a rule holds; resume or cancel."
    )
    resources: Resources = Resources()
    strategy: Literal["ddp", "fsdp"] = Field(
        default="ddp", description="How ranks share the work: 'ddp' (DistributedDataParallel); 'fsdp' not yet."
    )

    @property
    def world_size(self) -> int:
        return self.resources.nodes * self.resources.processes_per_node

    @field_validator("strategy")
    @classmethod
    def _strategy_ready(cls, value: str) -> str:
        if value != "ddp":
            raise ValueError(f"strategy {value!r} is not supported yet: use 'ddp'")
        return value

    def training_settings(self) -> dict[str, object]:
        """How each step runs, as the job's record and the dashboard show it beside the metrics."""
        return {
            "precision": self.precision,
            "accumulate_grad_batches": self.accumulate_grad_batches,
            "compile": self.compile,
            "channels_last": self.channels_last,
            "clip_grad_norm": self.clip_grad_norm,
        }

    @model_validator(mode="after")
    def _exactly_one(self) -> JobCreate:
        if (self.network is None) == (self.network_id is None):
            raise ValueError("give exactly one of network (a spec) or network_id")
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one of epochs or steps")
        ranks = self.world_size
        if self.batch_size % ranks:
            raise ValueError(
                f"batch_size {self.batch_size} is the batch over all {ranks} processes "
                f"(resources.processes_per_node): it must be a multiple of {ranks}"
            )
        if ranks > 1 and self.breakpoints is not None and self.breakpoints.any():
            raise ValueError(f"breakpoints are not supported yet on a job of {ranks} processes: leave them out")
        return self


class ForkChanges(_Req):
    """What a fork changes; everything left out is the parent's."""

    optimizer: OptimizerSpec | None = None
    lr: PosFloat | None = Field(default=None, description="Shorthand: the parent's optimizer with this lr.")
    lr_scheduler: SchedulerSpec | None = Field(default=None, description="null removes the parent's scheduler.")
    clip_grad_norm: PosFloat | None = None
    epochs: Pos | None = None
    steps: Pos | None = None
    dataset: DatasetSpec | None = None
    name: JobName | None = None
    tags: Annotated[list[Tag], Field(max_length=32)] | None = None
    resources: Resources | None = Field(
        default=None, description="Go on at another world size: a checkpoint resumes at any number of processes."
    )

    # null means "remove" only where the job can go without: a scheduler, clipping, a name.
    @field_validator("optimizer", "lr", "epochs", "steps", "dataset", "tags", "resources", mode="before")
    @classmethod
    def _not_null(cls, value: object, info: ValidationInfo) -> object:
        if value is None:
            raise ValueError(f"{info.field_name} cannot be null: leave it out to keep the parent's")
        return value

    @model_validator(mode="after")
    def _one_length(self) -> ForkChanges:
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give epochs or steps, not both")
        if self.optimizer is not None and self.lr is not None:
            raise ValueError("give optimizer (with its lr) or lr, not both")
        return self


class ForkCreate(_Req):
    step: Annotated[StrictInt, Field(ge=1)] = Field(description="A checkpoint the parent keeps.")
    changes: ForkChanges = ForkChanges()


class ResumeChanges(_Req):
    """What a paused job changes as it resumes; everything left out stays."""

    lr: PosFloat | None = Field(default=None, description="Every parameter group's learning rate from here on.")
    skip_batch: StrictBool = Field(
        default=False, description="Leave out the batches of the step that paused; the step is taken on the next."
    )
    breakpoints: Breakpoints | None = Field(
        default=None,
        description="The rules from here on, in place of the job's (null: none); left out, the job's stay.",
    )


class ResumeCreate(_Req):
    changes: ResumeChanges = ResumeChanges()


class SessionJobCreate(_Req):
    """A session opened at a job's step, continued as a job: a fork of the job from the session's state."""

    changes: ForkChanges = ForkChanges()


class JobSessionCreate(_Req):
    step: Annotated[StrictInt, Field(ge=1)] | None = Field(
        default=None, description="Open the job before this step; default: the step a breakpoint paused it on."
    )
    device: Device = "auto"
