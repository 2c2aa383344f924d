"""``GET /v1/models`` wire models: the catalog in OpenAI's list format."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel

from darkroom.catalog import Catalog, ModelEntry

# Catalog entries carry no creation time; a fixed epoch keeps the listing stable.
_CREATED = 1767225600  # 2026-01-01T00:00:00Z


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = _CREATED
    owned_by: str = "darkroom"
    capabilities: list[str]
    description: str = ""
    # The date the provider retires the model (ISO 8601); from that day on requests naming it are refused.
    end_of_life: date | None = None
    # darkroom's extension: whether stream true sends the model's own partial images as it works (otherwise a
    # stream carries the final image only).
    partial_images: bool = False


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


def model_object(entry: ModelEntry) -> ModelObject:
    return ModelObject(
        id=entry.id,
        capabilities=sorted(entry.capabilities),
        description=entry.description,
        end_of_life=entry.end_of_life,
        partial_images=entry.streams_partials,
    )


def model_list(catalog: Catalog) -> ModelList:
    return ModelList(data=[model_object(catalog.models[k]) for k in sorted(catalog.models)])
