"""The researcher's pages: the cohort builder, its federated query's answers, the project's
data requests and its exports.

The builder posts a ``cohort.count`` task (``hub.federation``) exactly as the API does; the
answer page reloads itself while an answer is awaited (a meta refresh: no script) and
shows each node's answer under the hub's own disclosure control — a withheld count is a
mark ("<10"), never a number. A data request for the cohort just counted asks the chosen
nodes to release it (``hub.release``); the exports page lists the accepted studies with
links to download them, served from the same functions as ``/api/v1/exports``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from common.schemas.cohort import COHORT_COUNT, CohortCountAnswer, CohortCountRequest, Count
from common.schemas.release import Selection
from common.web.charts import Bar, bar_chart
from hub.curation import service as curation
from hub.curation.models import StudyState
from hub.db import aware, transaction
from hub.exceptions import HubError
from hub.federation import service as federation
from hub.federation.models import TargetState, Task, TaskTarget
from hub.federation.schemas import TaskCreate
from hub.query import service as queries
from hub.query.combine import NetworkCount, total
from hub.query.schemas import NetworkFigure, QueryResult
from hub.release import service as releases
from hub.release.models import DataRequest
from hub.release.schemas import RequestCreate
from hub.users import service as users
from hub.users.models import Project, Role, User
from hub.web import cohort_form
from hub.web.base import page, problem, runtime, see_other, signed_in, storage
from hub.web.cohort_form import CohortForm, FormProblems

logger = logging.getLogger(__name__)

router = APIRouter()

ASKERS = (Role.RESEARCHER, Role.ADMIN)
READERS = (Role.RESEARCHER, Role.CURATOR, Role.ADMIN)
REFRESH_SECONDS = 2
QUERIES_SHOWN = 50


def _projects_of(session: Session, user: User) -> list[str]:
    query = select(Project.name).order_by(Project.name)
    if Role(user.role) is not Role.ADMIN:
        query = query.where(Project.id.in_(users.project_ids_of(session=session, user=user)))
    return list(session.execute(query).scalars())


# -- the cohort builder ------------------------------------------------------------------------


@router.get("/cohort", response_class=HTMLResponse)
def builder_page(request: Request) -> Response:
    """An empty builder; ``?from=TASK`` starts from an earlier query's definition."""
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *ASKERS)
        if isinstance(user, Response):
            return user
        form = CohortForm()
        earlier = request.query_params.get("from", "")
        if earlier.isdigit():
            form = _form_from_task(session, user, int(earlier))
        projects = _projects_of(session, user)
    if not form.project and len(projects) == 1:
        form.project = projects[0]
    return _builder(request, user, form, projects)


def _form_from_task(session: Session, user: User, task_id: int) -> CohortForm:
    try:
        task = federation.get_visible(session=session, user=user, task_id=task_id)
    except HubError:
        return CohortForm()
    asked = CohortCountRequest.model_validate(task.payload)
    return CohortForm(
        project=asked.project,
        rows=[],
        definition=cohort_form.pretty(asked.cohort.model_dump(mode="json", by_alias=True)),
    )


@router.post("/cohort", response_class=HTMLResponse)
async def builder_post(request: Request) -> Response:
    """Add a row, check the definition, or run the query (the button pressed says which)."""
    form_data = await request.form()
    form = CohortForm.from_form(form_data)
    action = str(form_data.get("action") or "check")
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *ASKERS)
        if isinstance(user, Response):
            return user
        projects = _projects_of(session, user)
        if action == "add":
            return _builder(request, user, form.with_another_row(), projects)
        try:
            payload = cohort_form.payload(form)
        except FormProblems as exc:
            return _builder(request, user, form, projects, problems=exc.problems, status_code=422)
        if action != "run":
            return _builder(request, user, form, projects, checked=cohort_form.pretty(payload))
        try:
            task = federation.create(
                session=session,
                user=user,
                request=TaskCreate(kind=COHORT_COUNT, payload=payload, project=form.project),
                default_ttl_seconds=hub.settings.default_task_ttl_seconds,
            )
        except HubError as exc:
            session.rollback()  # nothing of a refused action is kept
            return _builder(request, user, form, projects, problems=[str(exc)], status_code=422)
        task_id = task.id
    hub.signal.notify()  # after the commit, so the nodes' polls find the task
    return see_other(f"/ui/queries/{task_id}")


def _builder(
    request: Request,
    user: User,
    form: CohortForm,
    projects: list[str],
    *,
    problems: list[str] | None = None,
    checked: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    return page(
        request,
        "cohort.html",
        user,
        form=form,
        projects=projects,
        problems=problems or [],
        checked=checked,
        roles=cohort_form.ROLES,
        kinds=cohort_form.KINDS,
        sexes=cohort_form.SEXES,
        breakdowns=cohort_form.breakdown_names(),
        status_code=status_code,
    )


# -- queries and their answers ------------------------------------------------------------------


@router.get("/queries", response_class=HTMLResponse)
def queries_page(request: Request) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *ASKERS)
        if isinstance(user, Response):
            return user
        federation.expire_overdue(session=session)
        found = session.execute(
            select(Task)
            .where(Task.kind == COHORT_COUNT)
            .where(
                Task.project_id.in_(users.project_ids_of(session=session, user=user))
                if Role(user.role) is not Role.ADMIN
                else Task.id.is_not(None)
            )
            .order_by(Task.id.desc())
            .limit(QUERIES_SHOWN)
        ).scalars()
        offline_after = _offline_after(request)
        rows = [_query_row(session, task, offline_after) for task in found]
    return page(request, "queries.html", user, queries=rows)


def _offline_after(request: Request) -> dt.timedelta:
    return dt.timedelta(seconds=runtime(request).settings.node_offline_after_seconds)


def _query_row(session: Session, task: Task, offline_after: dt.timedelta) -> dict[str, Any]:
    summary = federation.summary(session=session, task=task, offline_after=offline_after)
    name = str(task.payload.get("cohort", {}).get("name", "") or "")
    return {
        "id": task.id,
        "name": name or f"query {task.id}",
        "project": summary.project or "",
        "by": summary.created_by,
        "at": summary.created_at.strftime("%Y-%m-%d %H:%M"),
        "states": ", ".join(f"{n} {state}" for state, n in summary.states.items()),
    }


@router.get("/queries/{task_id}", response_class=HTMLResponse)
def query_page(request: Request, task_id: int) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *ASKERS)
        if isinstance(user, Response):
            return user
        federation.expire_overdue(session=session)
        try:
            task = federation.get_visible(session=session, user=user, task_id=task_id)
        except HubError as exc:
            return problem(request, user, str(exc))
        if task.kind != COHORT_COUNT:
            return problem(request, user, f"task {task_id} is not a cohort query")
        view = _answers(session, task, _offline_after(request))
    awaited = not view["result"].complete
    return page(request, "query.html", user, refresh=REFRESH_SECONDS if awaited else 0, **view)


def _answers(session: Session, task: Task, offline_after: dt.timedelta) -> dict[str, Any]:
    """The query's answers; each node's status as users see it (pending, deferred — the node
    waits for local approval —, offline, answered, refused, expired, failed)."""
    asked = CohortCountRequest.model_validate(task.payload)
    result = queries.result(task, offline_after=offline_after)
    nodes = [
        _node_answer(target.node.name, result.nodes[target.node.name], target)
        for target in task.targets
    ]
    answered = [row for row in nodes if row["state"] == TargetState.ANSWERED.value]
    per_node = bar_chart(
        [Bar(row["node"], row["patients_value"], row["patients"]) for row in answered],
        title="Patients per node",
    )
    return {
        "task": federation.summary(session=session, task=task, offline_after=offline_after),
        "asked": asked,
        "definition": cohort_form.pretty(asked.cohort.model_dump(mode="json", by_alias=True)),
        "result": result,
        "nodes": nodes,
        "per_node": per_node if answered else "",
        "totals": {
            "patients": figure_text(result.patients),
            "studies": figure_text(result.studies),
            "series": figure_text(result.series),
        },
        "breakdowns": _breakdown_charts(result),
        "groups": _group_views(result, _presented(task)),
    }


def count_text(count: Count, min_cell: int) -> str:
    """A node's count as published: the number, or the suppression mark ("<10")."""
    return count.display(min_cell)


def figure_text(figure: NetworkFigure | NetworkCount) -> str:
    """A network figure: exact, a lower bound ("≥30"), or withheld everywhere."""
    if figure.at_least and figure.value == 0:
        return "withheld"
    return f"≥{figure.value}" if figure.at_least else str(figure.value)


def _node_answer(node: str, status: str, target: TaskTarget) -> dict[str, Any]:
    row: dict[str, Any] = {
        "node": node,
        "state": status,
        "reason": target.reason,
        "patients": "",
        "patients_value": 0,
        "studies": "",
        "series": "",
        "policy": "",
    }
    if TargetState(target.state) is not TargetState.ANSWERED or target.result is None:
        return row
    answer = CohortCountAnswer.model_validate(queries.present_answer(target.result))
    min_cell = max(queries.HUB_MIN_CELL, answer.min_cell)
    policy = f"cells under {min_cell} withheld"
    if answer.rounding > 1:
        policy += f", rounded to {answer.rounding}"
    if answer.noisy:
        policy += ", with noise"
    row.update(
        patients=count_text(answer.patients, min_cell),
        patients_value=answer.patients.value or 0,
        studies=count_text(answer.studies, min_cell),
        series=count_text(answer.series, min_cell),
        policy=policy,
    )
    return row


def _breakdown_charts(result: QueryResult) -> list[dict[str, str]]:
    charts = []
    for name, cells in result.breakdowns.items():
        title = f"Patients by {name.replace('_', ' ')}"
        bars = [
            Bar(value or "unknown", fig.value, figure_text(fig)) for value, fig in cells.items()
        ]
        charts.append({"title": title, "chart": bar_chart(bars, title=title)})
    return charts


def _bin_labels(edges: list[float]) -> list[str]:
    return [f"{low:g} to {high:g}" for low, high in itertools.pairwise(edges)]


def _presented(task: Task) -> list[CohortCountAnswer]:
    """The answers as the hub lets them be seen (its own threshold enforced again)."""
    return [
        CohortCountAnswer.model_validate(queries.present_answer(target.result))
        for target in task.targets
        if TargetState(target.state) is TargetState.ANSWERED and target.result is not None
    ]


def _bin_counts(answers: list[CohortCountAnswer], group: str, bins: int) -> list[NetworkCount]:
    """Per bin, the nodes' published counts added up, and how many withheld theirs."""
    per_bin: list[list[Count]] = [[] for _ in range(bins)]
    for answer in answers:
        if answer.statistic is None:
            continue
        for found in answer.statistic.groups:
            if found.group != group or found.withheld is not None:
                continue
            for index, count in enumerate(found.histogram[:bins]):
                per_bin[index].append(count)
    return [total(counts) for counts in per_bin]


def _group_views(result: QueryResult, answers: list[CohortCountAnswer]) -> list[dict[str, Any]]:
    labels = _bin_labels(result.bin_edges)
    views = []
    for group in result.groups:
        title = f"Group {group.group}: histogram"
        counts = _bin_counts(answers, group.group, len(labels))
        bars = [
            Bar(label, count.value, figure_text(count))
            for label, count in zip(labels, counts, strict=True)
        ]
        views.append(
            {
                "group": group,
                "title": title,
                "chart": bar_chart(bars, title=title) if bars else "",
            }
        )
    return views


# -- data requests ------------------------------------------------------------------------------


@router.get("/requests", response_class=HTMLResponse)
def requests_page(request: Request) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *READERS)
        if isinstance(user, Response):
            return user
        rows = [
            _request_row(session, found)
            for found in releases.visible(session=session, user=user, limit=100)
        ]
    filed = request.query_params.get("filed", "")
    return page(request, "requests.html", user, requests=rows, filed=filed)


def _request_row(session: Session, data_request: DataRequest) -> dict[str, Any]:
    read = releases.read(session=session, data_request=data_request)
    return {
        "id": read.id,
        "project": read.project,
        "by": read.created_by,
        "at": aware(data_request.created_at).strftime("%Y-%m-%d %H:%M"),
        "profile": read.profile,
        "selection": selection_text(data_request.selection),
        "targets": read.targets,
    }


def selection_text(selection: dict[str, Any]) -> str:
    """What a request asks for, in counts: the stage-1 UIDs it may name stay off the page."""
    parts = []
    cohort = selection.get("cohort")
    if cohort:
        name = cohort.get("name", "") if isinstance(cohort, dict) else ""
        parts.append(f"the cohort {name!r}" if name else "a cohort")
    for key, one, many in (
        ("study_uids", "study", "studies"),
        ("subject_keys", "patient", "patients"),
    ):
        if selection.get(key):
            count = len(selection[key])
            parts.append(f"{count} {one if count == 1 else many} by key")
    return ", ".join(parts) or "nothing"


@router.post("/requests", response_class=HTMLResponse)
async def file_request(request: Request) -> Response:
    """A data request for the cohort of a query the researcher ran (``task``)."""
    form = await request.form()
    task_id = str(form.get("task") or "")
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *ASKERS)
        if isinstance(user, Response):
            return user
        if not task_id.isdigit():
            return problem(request, user, "task: the query whose cohort to request", 422)
        try:
            task = federation.get_visible(session=session, user=user, task_id=int(task_id))
            asked = CohortCountRequest.model_validate(task.payload)
            body = RequestCreate(
                project=asked.project,
                selection=Selection.model_validate(
                    {"cohort": asked.cohort.model_dump(mode="json", by_alias=True)}
                ),
                profile=str(form.get("profile") or "anonymize").strip() or "anonymize",
                nodes=[str(name) for name in form.getlist("node")] or None,
            )
            created = releases.create(
                session=session,
                user=user,
                request=body,
                default_ttl_seconds=hub.settings.default_task_ttl_seconds,
            )
        except HubError as exc:
            session.rollback()  # nothing of a refused action is kept
            return problem(request, user, str(exc), 422)
        except ValidationError as exc:
            session.rollback()
            fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
            return problem(request, user, f"the request is not valid: {', '.join(fields)}", 422)
        request_id = created.id
    hub.signal.notify()
    return see_other(f"/ui/requests?filed={request_id}")


# -- exports ------------------------------------------------------------------------------------


@router.get("/exports", response_class=HTMLResponse)
def exports_page(request: Request) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *READERS)
        if isinstance(user, Response):
            return user
        if Role(user.role) is Role.RESEARCHER:
            names = _projects_of(session, user)
        else:
            names = list(session.execute(select(Project.name).order_by(Project.name)).scalars())
        projects = [_export_view(session, name) for name in names]
    return page(request, "exports.html", user, projects=projects)


def _export_view(session: Session, name: str) -> dict[str, Any]:
    project = users.require_project(session=session, name=name)
    studies = [
        {
            "id": study.id,
            "zip": curation.zip_name(study),
            "subject_key": study.subject_key,
            "study_uid": study.study_uid,
            "files": len(study.manifest.get("files", [])),
            "bytes": sum(int(entry["size"]) for entry in study.manifest.get("files", [])),
        }
        for study in curation.accepted(session=session, project=project)
    ]
    return {"name": name, "studies": studies}


@router.get("/exports/{project}/README.md")
def export_readme(request: Request, project: str) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *READERS)
        if isinstance(user, Response):
            return user
        try:
            found = curation.require_reader(session=session, user=user, project=project)
        except HubError as exc:
            return problem(request, user, str(exc))
        text = curation.readme(session=session, project=found)
    return PlainTextResponse(text)


@router.get("/exports/{project}/studies/{study_id}.zip")
def export_study(request: Request, project: str, study_id: int) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *READERS)
        if isinstance(user, Response):
            return user
        try:
            found = curation.require_reader(session=session, user=user, project=project)
            study = curation.require(session=session, study_id=study_id)
        except HubError as exc:
            return problem(request, user, str(exc))
        if study.project_id != found.id or StudyState(study.state) is not StudyState.ACCEPTED:
            return problem(request, user, f"no accepted study {study_id} in {project}")
        data = curation.study_zip(storage=storage(request), project=found, study=study)
        name = curation.zip_name(study)
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(data, media_type="application/zip", headers=headers)
