"""A trial's job request: the template with the trial's parameters written at their dotted paths.

Two rules keep a changed request consistent:
- a new ``optimizer.type`` keeps only the optimizer fields the chosen class accepts (``momentum`` is
  dropped for Adam), so one space can range over optimizers;
- a new ``network.layers.N.out_features`` is also written into the ``in_features`` of the next layer
  after N that has one (the Linear it feeds), so widths can be searched without hand-made pairs.
"""

from __future__ import annotations

import copy
from typing import Any, get_args

from pydantic import ValidationError

from models.errors import InvalidInput
from models.spec.job import JobCreate
from models.spec.optimizers import OPTIMIZER_TYPES
from models.spec.sweep import CategoricalParam, FloatParam, IntParam, SweepCreate

# Each optimizer class by its ``type`` tag (the Literal's one value).
_OPTIMIZERS = {get_args(c.model_fields["type"].annotation)[0]: c for c in OPTIMIZER_TYPES}


def _step(node: Any, part: str) -> tuple[Any, str | int]:
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise KeyError(f"'{part}' is not an index of a list of {len(node)}")
        return node, int(part)
    if isinstance(node, dict):
        return node, part
    raise KeyError(f"'{part}' goes into a {type(node).__name__}")


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Write ``value`` at ``path``; the parent must exist (a missing last key is added)."""
    parts = path.split(".")
    node: Any = doc
    for part in parts[:-1]:
        parent, key = _step(node, part)
        if isinstance(parent, dict) and key not in parent:
            raise KeyError(f"'{key}' is not in the template")
        node = parent[key]
    parent, key = _step(node, parts[-1])
    parent[key] = value


def apply_params(template: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The template (a JobCreate as JSON) with ``params`` written in, following the module's two rules."""
    doc = copy.deepcopy(template)
    for path, value in params.items():
        set_path(doc, path, value)
        parts = path.split(".")
        if len(parts) == 4 and parts[0] == "network" and parts[1] == "layers" and parts[3] == "out_features":
            layers = doc["network"]["layers"]
            for later in layers[int(parts[2]) + 1 :]:
                if isinstance(later, dict) and "in_features" in later:
                    later["in_features"] = value
                    break
    if "optimizer.type" in params:
        chosen = _OPTIMIZERS.get(doc["optimizer"].get("type"))
        if chosen is not None:
            doc["optimizer"] = {k: v for k, v in doc["optimizer"].items() if k in chosen.model_fields}
    return doc


def corners(sweep: SweepCreate) -> list[dict[str, Any]]:
    """Parameter sets that reach every bound and choice of the space (the rest at their lowest)."""
    lowest = {path: _values(p)[0] for path, p in sweep.space.items()}
    out = [lowest]
    for path, p in sweep.space.items():
        out += [{**lowest, path: v} for v in _values(p)[1:]]
    return out


def _values(p: FloatParam | IntParam | CategoricalParam) -> list[Any]:
    if isinstance(p, CategoricalParam):
        return list(p.choices)
    kind = float if isinstance(p, FloatParam) else int
    return [kind(p.low), kind(p.high)]


def trial_template(sweep: SweepCreate) -> dict[str, Any]:
    """What each trial's request starts from: the template as written, plus the defaults of the sections
    the space reaches into (``optimizer.momentum`` works on a template that left momentum out)."""
    doc = sweep.template.model_dump(mode="json", exclude_unset=True)
    full = sweep.template.model_dump(mode="json")
    for path in sweep.space:
        top = path.split(".")[0]
        if top not in doc and top in full:
            doc[top] = copy.deepcopy(full[top])
    return doc


def check_space(sweep: SweepCreate) -> list[JobCreate]:
    """Every corner of the space as a valid job request; otherwise a 422 naming the path and the reason."""
    return [req for _, req in corner_requests(sweep)]


def corner_requests(sweep: SweepCreate) -> list[tuple[dict[str, Any], JobCreate]]:
    """``check_space``, keeping each corner's parameters beside its request."""
    template = trial_template(sweep)
    for path in sweep.space:
        try:
            set_path(copy.deepcopy(template), path, None)
        except KeyError as exc:
            msg = f"space path '{path}' does not lead into the template: {exc.args[0]}"
            raise InvalidInput(msg, ("body", "space", path)) from None
    out = []
    for params in corners(sweep):
        try:
            out.append((params, JobCreate.model_validate(apply_params(template, params))))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            if err["type"] == "extra_forbidden":
                path = blame(sweep, params, tuple(err["loc"])) or next(iter(params))
                msg = f"space path '{path}' does not lead into the template: {where} is not a field there"
                raise InvalidInput(msg, ("body", "space", path)) from None
            msg = f"the space makes an invalid job with {params}: {where}: {err['msg']}"
            path = blame(sweep, params, tuple(err["loc"])) or next(iter(params))
            raise InvalidInput(msg, ("body", "space", path)) from None
    return out


def blame(sweep: SweepCreate, params: dict[str, Any], loc: tuple[Any, ...]) -> str | None:
    """The space path behind an error at ``loc`` (a path into the job request) for the corner ``params``:
    the path that leads there, else the one this corner moved off its lowest value; None when neither
    (the lowest corner failed somewhere the space does not reach: the template's own fault)."""
    where = ".".join(str(x) for x in loc)
    for path in sweep.space:
        if where == path or where.startswith(f"{path}.") or path.startswith(f"{where}.") or _within(path, loc):
            return path
    lowest = corners(sweep)[0]
    moved = [path for path in params if params[path] != lowest[path]]
    return moved[0] if moved else None


def _within(path: str, loc: tuple[Any, ...]) -> bool:
    """Whether ``loc`` runs through ``path`` with extra steps between, as pydantic's locations of a tagged
    union do (``optimizer.SGD.lrr`` for the path ``optimizer.lrr``): same first and last step, in order."""
    steps, seen = [str(x) for x in loc], iter(str(x) for x in loc)
    segs = path.split(".")
    return bool(steps) and steps[0] == segs[0] and steps[-1] == segs[-1] and all(seg in seen for seg in segs)
