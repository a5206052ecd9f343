"""Job and dataset resource schemas (requests are models.spec.job.JobCreate; states: gradserve.protocol)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from gradserve.protocol.states import JobStatus as JobStatus

Number = float  # non-finite values are null, with the reason in ``non_finite`` (api.finite)


class JobSubmitted(BaseModel):
    id: str
    status: JobStatus


class ParentLink(BaseModel):
    id: str
    step: int = Field(description="The parent's checkpoint this job was forked from (the steps it had taken).")
    session: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,  # a plain fork's link stays {id, step}
        description="Set on a session continued as a job: the session, opened at the parent's step + 1.",
    )


class JobPublic(BaseModel):
    id: str
    name: str | None = None
    tags: list[str] = Field(default_factory=list)
    parent: ParentLink | None = Field(default=None, description="Set on a fork: the job and step it started from.")
    sweep: str | None = Field(default=None, description="Set on a sweep's trial: the sweep's id.")
    status: JobStatus
    cancel_requested: bool | None = Field(default=None, description="True while a running job winds down.")
    step: int = Field(description="Steps done (and recorded); for a failed job, the step it failed at.")
    total_steps: int | None
    epoch: int | None = Field(description="The epoch of the last step, from 1.")
    loss: Number | None
    accuracy: Number | None = Field(description="Of the last batch, for class-index losses.")
    val_loss: Number | None = None
    val_accuracy: Number | None = Field(default=None, description="On the held-out split, at epoch ends.")
    samples_per_s: Number | None = Field(
        default=None, description="Samples a second over the last second or so of training (at least one step)."
    )
    overall_samples_per_s: Number | None = Field(
        default=None, description="Samples a second over the whole run on its worker, from its start."
    )
    error: str | None
    created_at: float = Field(description="Unix time (seconds); so are the other *_at fields.")
    started_at: float | None
    first_step_at: float | None = None
    finished_at: float | None
    device: str = Field(description="As requested: auto, cpu or cuda.")
    device_used: str | None = None
    threads: int | None = Field(default=None, description="PyTorch threads the worker (each rank) computes with.")
    queue: str | None = None
    queue_position: int | None = Field(
        default=None, description="While queued: 1 means the next job a free worker of its queue takes."
    )
    worker: str | None = None
    attempt: int | None = Field(default=None, description="Above 1 after a worker was lost and the job resumed.")
    resent: int = Field(
        default=0, description="Times its message was sent again, lost with a worker killed before it claimed the job."
    )
    checkpoint_step: int | None = None
    resumed_from: int | None = None
    network_id: str | None = None
    batch_size: int | None = Field(default=None, description="Samples a step over all processes (per micro-batch).")
    world_size: int | None = Field(
        default=None, description="Processes training the job together (resources: nodes x processes_per_node)."
    )
    breakpoint: BreakpointPublic | None = Field(
        default=None, description="The breakpoint that paused the job last: which rule, at which step, on what."
    )
    training: dict[str, Any] | None = Field(
        default=None, description="How each step runs: precision, accumulation, compile, channels-last, clipping."
    )
    non_finite: dict[str, str] = Field(
        default_factory=dict, description="Fields above that are null because the value was nan, inf or -inf."
    )
    request: dict[str, Any] | None = None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int = Field(description="Items on this page.")
    total: int = Field(description="Items matching the filters, on all pages.")
    next_offset: int | None = Field(description="Pass as offset for the next page; null on the last.")


class BreakpointPublic(BaseModel):
    rule: Literal["nonfinite", "grad_norm_above", "loss_above", "loss_spike"]
    step: int = Field(description="The step that paused: its update was not applied.")
    value: float | str = Field(description="What the rule saw: the loss, the gradient norm, or 'nan'/'inf'.")
    parameter: str | None = Field(
        default=None, description="nonfinite: the first parameter, in backward order, whose gradient is not finite."
    )


class ResumePublic(BaseModel):
    id: str
    status: JobStatus
    changes: dict[str, Any]


class CancelPublic(BaseModel):
    id: str
    status: JobStatus = Field(description="cancelled (it was queued), or running until its worker stops.")
    cancel_requested: bool


class CheckpointPublic(BaseModel):
    step: int
    epoch: int
    time: float = Field(description="Unix time (seconds) it was written.")
    bytes: int = Field(description="Size of the full training state kept for resuming and forking.")


class CheckpointsPublic(BaseModel):
    data: list[CheckpointPublic]
    count: int
    total: int


class MetricsPublic(BaseModel):
    """Columns of equal length, one entry per step (``accuracy`` only for class-index losses);
    ``eval`` holds the held-out evaluations, made at epoch ends and at the last step."""

    step: list[int]
    epoch: list[int]
    loss: list[Number | None]
    lr: list[float]
    samples_per_s: list[Number | None]
    t: list[float]
    accuracy: list[Number | None] | None = None
    eval: dict[str, list[Any]] = Field(default_factory=dict)
    non_finite: list[dict[str, Any]] = Field(
        default_factory=list, description="Entries that are null because they were nan/inf: {step, column, value}."
    )
    count: int
    last_step: int


class GradientStat(BaseModel):
    shape: list[int]
    norm: Number | None
    mean: Number | None
    std: Number | None
    min: Number | None
    max: Number | None
    non_finite: dict[str, str] = Field(default_factory=dict)


class GradientsPublic(BaseModel):
    step: int | None
    steps: list[int] = Field(description="Every step with a snapshot.")
    parameters: dict[str, GradientStat]


class DatasetArray(BaseModel):
    shape: list[int]
    dtype: str
    integral: bool | None = Field(default=None, description="Whether every value is a whole number.")
    min: int | None = Field(default=None, description="The smallest value, when integral.")
    max: int | None = Field(default=None, description="The largest value, when integral.")


class DatasetPublic(BaseModel):
    id: str
    format: Literal["safetensors", "npz", "image_folder", "webdataset", "parquet"]
    num_samples: int
    bytes: int
    arrays: dict[str, DatasetArray]
    created_at: float | None = None
    # Image folders and tables (stored as received): what the upload's check found.
    archive: Literal["tar", "zip"] | None = Field(default=None, description="The image folder's container.")
    shape: list[int] | None = Field(default=None, description="One sample's input shape: [3, H, W] or [features].")
    classes: list[str] | None = Field(
        default=None, description="Class names by index: the sorted class folders, or a string label's values."
    )
    label: str | None = Field(default=None, description="The table's label column.")
    features: list[str] | None = Field(default=None, description="The table's feature columns, in vector order.")
    source: Literal["url"] | None = Field(default=None, description="'url': registered by reference, not copied.")
    url: str | None = Field(default=None, description="Where a dataset by reference is read from.")
    sha256: str | None = Field(default=None, description="A dataset by reference's sha256 when it was registered.")


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int
    total: int
    next_offset: int | None = None


class SeriesPublic(MetricsPublic):
    """``/metrics``'s columns at most ``points`` long: the steps kept are each bucket's extremes of the loss."""

    id: str
    count: int = Field(description="Records in the whole series.")
    points: int = Field(description="Records kept here.")


class GradientColumns(BaseModel):
    shape: list[int]
    norm: list[Number | None]
    mean: list[Number | None]
    std: list[Number | None]
    min: list[Number | None]
    max: list[Number | None]


class GradientHistoryPublic(BaseModel):
    steps: list[int] = Field(description="Every step with a snapshot; each column has one entry per step.")
    parameters: dict[str, GradientColumns]
