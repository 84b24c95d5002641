"""The dataset browser: a dataset in full (lineage, the runs that used it, quality counts),
its rows searched and paged, rename, delete and download."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.tables import Dataset, Run
from app.data import datasets

if TYPE_CHECKING:
    from app.core.workbench import Workbench

MAX_PER_PAGE = 200


def _runs_using(wb: Workbench, dataset_id: int) -> list[Run]:
    with wb.session() as s:
        return [r for r in s.exec(select(Run)) if dataset_id in (r.dataset_ids or [])]


def _quality_counts(wb: Workbench, dataset_id: int) -> dict[str, Any] | None:
    """The numbers of the newest finished quality report, if any."""
    from app.data.quality_jobs import latest_quality_report

    try:
        report = latest_quality_report(wb, dataset_id).get("report")
    except NotFound:
        return None
    if not report:
        return None
    return {k: v for k, v in report.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def dataset_view(wb: Workbench, dataset_id: int) -> dict[str, Any]:
    ds = datasets.get_dataset(wb, dataset_id)
    everything = datasets.list_datasets(wb)
    by_id = {d.id: d for d in everything}
    chain, parent = [], (ds.meta or {}).get("parent_id")
    while parent is not None and len(chain) < 50:
        found = by_id.get(parent)
        chain.append({"id": parent, "name": found.name if found else (ds.meta or {}).get("parent_name"),
                      "present": found is not None})
        parent = (found.meta or {}).get("parent_id") if found else None
    children = [{"id": d.id, "name": d.name} for d in everything if (d.meta or {}).get("parent_id") == ds.id]
    runs = [{"id": r.id, "name": r.name, "stage": r.stage, "status": r.status}
            for r in _runs_using(wb, dataset_id)]
    return {"id": ds.id, "name": ds.name, "kind": ds.kind, "format": ds.format, "rows": ds.num_rows,
            "source": ds.source, "sha256": ds.sha256, "created_at": ds.created_at.isoformat(),
            "meta": ds.meta or {}, "parents": chain, "children": children, "runs": runs,
            "quality": _quality_counts(wb, dataset_id)}


def browse_rows(wb: Workbench, dataset_id: int, query: str = "", page: int = 1, per_page: int = 20
                ) -> dict[str, Any]:
    """One page of the rows whose text contains ``query`` (any case), with their row numbers."""
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidInput(f"per_page must be between 1 and {MAX_PER_PAGE}")
    if page < 1:
        raise InvalidInput("page numbers start at 1")
    ds = datasets.get_dataset(wb, dataset_id)
    rows = datasets.read_rows(Path(ds.path))
    needle = query.strip().lower()
    hits = [(i + 1, r) for i, r in enumerate(rows)
            if not needle or needle in json.dumps(r, ensure_ascii=False).lower()]
    pages = max(1, math.ceil(len(hits) / per_page))
    start = (page - 1) * per_page
    return {"dataset_id": ds.id, "query": query, "total": len(hits), "of": len(rows), "page": page,
            "pages": pages, "rows": [{"row": n, "data": r} for n, r in hits[start:start + per_page]]}


def rename_dataset(wb: Workbench, dataset_id: int, new_name: str) -> Dataset:
    """Rename a dataset: its row, its file and its LLaMA-Factory entry together."""
    new_name = (new_name or "").strip()
    datasets.check_name(new_name)
    ds = datasets.get_dataset(wb, dataset_id)
    if new_name == ds.name:
        return ds
    if any(d.name.lower() == new_name.lower() and d.id != ds.id for d in datasets.list_datasets(wb)):
        raise Conflict(f"a dataset named {new_name!r} already exists")
    old_path = Path(ds.path)
    new_path = old_path.with_name(f"{new_name}{old_path.suffix}")
    with wb.files_lock:
        info = json.loads(datasets.info_path(wb).read_text()) if datasets.info_path(wb).exists() else {}
        entry = info.get(ds.name)
        old_path.rename(new_path)
        try:
            with wb.session() as s:
                row = s.get(Dataset, ds.id)
                row.name, row.path = new_name, str(new_path)
                s.add(row)
                s.commit()
                s.refresh(row)
        except Exception:
            new_path.rename(old_path)  # the row did not change: nor does the file
            raise
        if entry is not None:
            entry = {**entry, "file_name": new_path.name}
            datasets.update_info(wb, ds.name, None)
            datasets.update_info(wb, new_name, entry)
    return row


def delete_dataset(wb: Workbench, dataset_id: int) -> None:
    """Delete a dataset no run trained on (a run's lineage names its datasets)."""
    ds = datasets.get_dataset(wb, dataset_id)
    used = _runs_using(wb, dataset_id)
    if used:
        names = ", ".join(r.name for r in used[:3]) + ("…" if len(used) > 3 else "")
        raise Conflict(f"dataset {ds.name!r} is used by {len(used)} run(s) ({names}): delete those runs "
                       "first")
    with wb.files_lock:
        with wb.session() as s:
            s.delete(s.get(Dataset, ds.id))
            s.commit()
        datasets.update_info(wb, ds.name, None)
        Path(ds.path).unlink(missing_ok=True)


def dataset_file(wb: Workbench, dataset_id: int) -> Path:
    """The dataset's file, for download (JSON Lines, as stored)."""
    path = Path(datasets.get_dataset(wb, dataset_id).path)
    if not path.is_file():
        raise NotFound(f"the file of dataset {dataset_id} is missing")
    return path
