"""Dataset REST routes: list, read one in full, page and search its rows, rename, delete,
download."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.params import Depends
from fastapi.responses import FileResponse
from pydantic import BaseModel

from app.core.errors import InvalidInput
from app.data import browse, datasets

if TYPE_CHECKING:
    from app.core.workbench import Workbench


class RenameBody(BaseModel):
    name: str


def datasets_router(wb: Workbench, dependencies: Sequence[Depends] = ()) -> APIRouter:
    r = APIRouter(prefix="/api", dependencies=list(dependencies))

    @r.get("/datasets")
    def all_datasets(kind: str | None = None):
        if kind is not None and kind not in datasets.KIND_FORMATS:
            raise InvalidInput(f"kind must be one of {', '.join(datasets.KIND_FORMATS)}, got {kind!r}")
        return [{"id": d.id, "name": d.name, "kind": d.kind, "format": d.format, "rows": d.num_rows,
                 "source": d.source} for d in datasets.list_datasets(wb, kind)]

    @r.get("/datasets/{dataset_id}")
    def one(dataset_id: int):
        return browse.dataset_view(wb, dataset_id)

    @r.get("/datasets/{dataset_id}/rows")
    def rows(dataset_id: int, q: str = "", page: int = 1, per_page: int = 20):
        return browse.browse_rows(wb, dataset_id, q, page, per_page)

    @r.patch("/datasets/{dataset_id}")
    def rename(dataset_id: int, body: RenameBody):
        return browse.dataset_view(wb, browse.rename_dataset(wb, dataset_id, body.name).id)

    @r.delete("/datasets/{dataset_id}", status_code=204)
    def delete(dataset_id: int):
        browse.delete_dataset(wb, dataset_id)

    @r.get("/datasets/{dataset_id}/download")
    def download(dataset_id: int):
        path = browse.dataset_file(wb, dataset_id)
        return FileResponse(path, media_type="application/jsonl", filename=path.name)

    return r
