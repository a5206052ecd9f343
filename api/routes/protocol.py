"""What client and server agree on, as the dashboard reads it: the states of jobs, sweeps and trials."""

from __future__ import annotations

from fastapi import APIRouter

from api.schemas.protocol import ProtocolPublic
from api.strict_json import StrictJsonRoute
from gradserve.protocol.catalogue import LOSS_FIELDS, MODULE_FIELDS
from gradserve.protocol.states import public_states

router = APIRouter(tags=["operations"], route_class=StrictJsonRoute)


@router.get("/protocol", response_model=ProtocolPublic)
async def protocol() -> ProtocolPublic:
    """Every state of a job, sweep and trial with the ones that end it, and the catalogue's layer and loss
    types (``gradserve.protocol``). The same for every caller, so outside ``/v1``: no API key is needed."""
    return ProtocolPublic.model_validate(
        {"states": public_states(), "layers": sorted(MODULE_FIELDS), "losses": sorted(LOSS_FIELDS)}
    )
