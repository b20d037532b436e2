"""The derived ``series_label`` table, kept up to date incrementally: by a scheduled job
(:mod:`node.query.scheduled`) and before each query, for what arrived since.

Only series without a label are read and normalized, so the cost of a query does not grow
with the store, only with what arrived since the last labelling.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from node.catalogue.service import manufacturer
from node.query.models import SeriesLabel
from node.store.db import lock_for_writing
from node.store.models import Series, Study
from ontology.normalize import SeriesText, normalize

logger = logging.getLogger(__name__)

_BATCH = 2_000

_COLUMNS = (
    Series.id,
    Series.modality,
    Series.body_part,
    Series.description,
    Series.protocol_name,
    Series.manufacturer,
    Series.contrast_agent,
    Series.scanning_sequence,
    Series.sequence_variant,
    Series.repetition_time,
    Series.echo_time,
    Series.inversion_time,
    Study.description,
)


@functools.lru_cache(maxsize=65_536)
def _labels(text: SeriesText) -> tuple[str, bool, str]:
    result = normalize(text)
    body = result.body_part.term if result.body_part is not None else ""
    return result.sequence_type.value, result.contrast, body


def _label(row: tuple[Any, ...]) -> dict[str, Any]:
    (series_id, modality, body_part, description, protocol, maker, agent) = row[:7]
    (scanning, variant, tr, te, ti, study_description) = row[7:]
    text = SeriesText(
        modality=modality.upper(),
        series_description=description,
        protocol_name=protocol,
        study_description=study_description,
        body_part_examined=body_part,
        scanning_sequence=tuple(v for v in scanning.split("\\") if v),
        sequence_variant=tuple(v for v in variant.split("\\") if v),
        repetition_time=tr,
        echo_time=te,
        inversion_time=ti,
        contrast_bolus_agent=agent,
    )
    kind, contrast, body = _labels(text)
    return {
        "series_id": series_id,
        "sequence_type": kind,
        "contrast": contrast,
        "body_part": body,
        "manufacturer": manufacturer(maker),
    }


def all_labelled(session: Session) -> bool:
    """Whether every series has its label: as many labels as series, since a label belongs
    to one series and goes with it (a foreign key that cascades). Two counts of an index,
    instead of looking for unlabelled series before each query."""
    series = session.scalar(select(func.count()).select_from(Series))
    labels = session.scalar(select(func.count()).select_from(SeriesLabel))
    return series == labels


def label_new_series(*, session: Session) -> int:
    """Label every series that has no label yet; how many were labelled."""
    if all_labelled(session):
        return 0
    # Two labellers (a query and the scheduled job) must not label the same series.
    lock_for_writing(session)
    statement = (
        select(*_COLUMNS)
        .join(Study, Series.study_id == Study.id)
        .outerjoin(SeriesLabel, SeriesLabel.series_id == Series.id)
        .where(SeriesLabel.series_id.is_(None))
        .order_by(Series.id)
    )
    rows = [tuple(row) for row in session.execute(statement)]
    for start in range(0, len(rows), _BATCH):
        # A core insert of plain rows: the ORM's unit of work costs more than the labels.
        session.execute(insert(SeriesLabel), [_label(row) for row in rows[start : start + _BATCH]])
    if rows:
        logger.info("labelled %d new series", len(rows))
    return len(rows)
