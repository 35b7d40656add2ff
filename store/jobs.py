"""Background jobs (training, ...): one row per job, visible to every session, tab and process.

The row is the job's public face: a dashboard tab opened later, a browser refresh or a second server
reads status and progress from here, not from the memory of the process that runs it. ``pid`` and
``host`` let a process that starts later tell a job whose runner died ('running' forever) from a live
one, so it can be shown as interrupted instead of spinning for ever.
"""
from __future__ import annotations

import duckdb

from mmae_core.errors import NotFoundError, StoreError

from .common import dumps, loads, one, utcnow

STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled", "interrupted")
COLUMNS = ("id", "dataset", "kind", "status", "config", "progress", "message", "model", "pid", "host",
           "created_at", "updated_at", "finished_at")


def _check_status(status: str) -> str:
    if status not in STATUSES:
        raise StoreError(f"'{status}' is not a job status; use one of {', '.join(STATUSES)}.")
    return status


def _record(row: tuple) -> dict:
    d = dict(zip(COLUMNS, row))
    d["config"] = loads(d["config"], {})
    d["progress"] = loads(d["progress"], {})
    return d


def add(con: duckdb.DuckDBPyConnection, dataset: str, kind: str, config: dict, pid: int, host: str,
        status: str = "queued", message: str | None = None) -> int:
    job_id = int(one(con, "SELECT nextval('job_ids')")[0])
    now = utcnow()
    con.execute(
        "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, NULL)",
        [job_id, str(dataset), str(kind), _check_status(status), dumps(config or {}), dumps({}), message,
         int(pid), str(host), now, now],
    )
    return job_id


def update(con: duckdb.DuckDBPyConnection, job_id: int, status: str | None, progress: dict | None,
           message: str | None, model: str | None) -> None:
    """Change the given fields (None = leave as is); a final status also stamps ``finished_at``."""
    if one(con, "SELECT 1 FROM jobs WHERE id = ?", [int(job_id)]) is None:
        raise NotFoundError(f"There is no job with id {job_id} in the store; list the jobs to find its id.")
    sets, params = ["updated_at = ?"], [utcnow()]
    if status is not None:
        sets.append("status = ?")
        params.append(_check_status(status))
        if status in FINAL:
            sets.append("finished_at = ?")
            params.append(utcnow())
    if progress is not None:
        sets.append("progress = ?")
        params.append(dumps(progress))
    if message is not None:
        sets.append("message = ?")
        params.append(message)
    if model is not None:
        sets.append("model = ?")
        params.append(model)
    con.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", [*params, int(job_id)])


def get(con: duckdb.DuckDBPyConnection, job_id: int) -> dict:
    row = one(con, f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id = ?", [int(job_id)])
    if row is None:
        raise NotFoundError(f"There is no job with id {job_id} in the store; list the jobs to find its id.")
    return _record(row)


def listing(con: duckdb.DuckDBPyConnection, dataset: str | None, statuses: tuple[str, ...] | None,
            limit: int) -> list[dict]:
    """Newest first, with config and progress decoded."""
    where, params = [], []
    if dataset is not None:
        where.append("dataset = ?")
        params.append(dataset)
    if statuses:
        for s in statuses:
            _check_status(s)
        where.append(f"status IN ({', '.join('?' for _ in statuses)})")
        params.extend(statuses)
    sql = f"SELECT {', '.join(COLUMNS)} FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    rows = con.execute(sql, [*params, max(1, int(limit))]).fetchall()
    return [_record(r) for r in rows]


def interrupt(con: duckdb.DuckDBPyConnection, job_ids: list[int], message: str) -> int:
    """Mark still-active jobs as interrupted (their runner is gone); returns how many changed."""
    n = 0
    now = utcnow()
    for jid in job_ids:
        row = one(con, "SELECT status FROM jobs WHERE id = ?", [int(jid)])
        if row is None or row[0] not in ACTIVE:
            continue
        con.execute(
            "UPDATE jobs SET status = 'interrupted', message = ?, updated_at = ?, finished_at = ? WHERE id = ?",
            [message, now, now, int(jid)],
        )
        n += 1
    return n
