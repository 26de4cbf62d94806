"""Tasks v1: task lists and tasks, listed by `updatedMin`; deleted tasks stay as `deleted`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from concord_google_emulator.core import (
    Call,
    Sequence,
    bad_request,
    merge_patch,
    new_id,
    not_found,
    page,
    parse_rfc3339,
    rfc3339,
)

__all__ = ["TasksStore"]

_WRITABLE = {"title", "notes", "status", "due", "completed", "links", "parent", "deleted"}


@dataclass
class TaskList:
    id: str
    title: str
    etag: str
    updated: str
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)


class TasksStore:
    def __init__(self, seq: Sequence) -> None:
        self.seq = seq
        self.users: dict[str, dict[str, TaskList]] = {}

    def add_user(self, user: str) -> None:
        if user not in self.users:
            default = TaskList(new_id(22), "My Tasks", f'"{self.seq.take()}"', rfc3339())
            self.users[user] = {default.id: default}

    def _list(self, call: Call) -> TaskList:
        lists = self.users[call.user]
        wanted = str(call.params["tasklist"])
        if wanted == "@default":
            return next(iter(lists.values()))
        found = lists.get(wanted)
        if found is None:
            raise not_found("Task list not found.")
        return found

    def _public_list(self, task_list: TaskList, call: Call) -> dict[str, Any]:
        return {
            "kind": "tasks#taskList",
            "id": task_list.id,
            "etag": task_list.etag,
            "title": task_list.title,
            "updated": task_list.updated,
            "selfLink": f"{call.base_url}tasks/v1/users/@me/lists/{task_list.id}",
        }

    def lists(self, call: Call) -> dict[str, Any]:
        items = [self._public_list(t, call) for t in self.users[call.user].values()]
        return {"kind": "tasks#taskLists", "etag": f'"{self.seq.current}"', "items": items}

    def list_insert(self, call: Call) -> dict[str, Any]:
        title = str((call.body or {}).get("title") or "")
        if not title:
            raise bad_request("Missing title.")
        task_list = TaskList(new_id(22), title, f'"{self.seq.take()}"', rfc3339())
        self.users[call.user][task_list.id] = task_list
        return self._public_list(task_list, call)

    def _stamp(self, task_list: TaskList, task: dict[str, Any]) -> dict[str, Any]:
        seq = self.seq.take()
        task["etag"] = f'"{seq}"'
        task["updated"] = rfc3339()
        task["_seq"] = seq
        task_list.tasks[task["id"]] = task
        return {k: v for k, v in task.items() if not k.startswith("_")}

    def insert(self, call: Call) -> dict[str, Any]:
        task_list = self._list(call)
        body = {k: v for k, v in (call.body or {}).items() if k in _WRITABLE}
        task_id = new_id(22)
        task = {
            "kind": "tasks#task",
            "id": task_id,
            "title": "",
            "status": "needsAction",
            "position": f"{len(task_list.tasks):020d}",
            "selfLink": f"{call.base_url}tasks/v1/lists/{task_list.id}/tasks/{task_id}",
        } | body
        _check(task)
        return self._stamp(task_list, task)

    def _task(self, call: Call) -> tuple[TaskList, dict[str, Any]]:
        task_list = self._list(call)
        task = task_list.tasks.get(str(call.params["task"]))
        if task is None or task.get("deleted"):
            raise not_found("Task not found.")
        return task_list, task

    def get(self, call: Call) -> dict[str, Any]:
        _, task = self._task(call)
        return {k: v for k, v in task.items() if not k.startswith("_")}

    def modify(self, call: Call, *, replace: bool) -> dict[str, Any]:
        task_list, task = self._task(call)
        body = {k: v for k, v in (call.body or {}).items() if k in _WRITABLE}
        if replace:
            updated = {k: v for k, v in task.items() if k not in _WRITABLE} | body
        else:
            updated = merge_patch(task, body)
        if updated.get("status") == "completed":
            updated.setdefault("completed", rfc3339())
        else:
            updated.pop("completed", None)
        _check(updated)
        return self._stamp(task_list, updated)

    def delete(self, call: Call) -> None:
        task_list, task = self._task(call)
        # Google keeps deleted tasks for a while: listed with showDeleted, they tell a syncing
        # client what went away since its updatedMin.
        self._stamp(task_list, task | {"deleted": True})

    def purge(self, user: str) -> int:
        """Admin: deleted tasks disappear for good, as Google eventually drops them."""
        purged = 0
        for task_list in self.users[user].values():
            for task_id in [i for i, t in task_list.tasks.items() if t.get("deleted")]:
                del task_list.tasks[task_id]
                purged += 1
        return purged

    def list(self, call: Call) -> dict[str, Any]:
        task_list = self._list(call)
        params = call.params
        updated_min = None
        if params.get("updatedMin"):
            try:
                updated_min = parse_rfc3339(str(params["updatedMin"]))
            except ValueError:
                raise bad_request("Invalid updatedMin.") from None
        chosen = []
        for task in sorted(task_list.tasks.values(), key=lambda t: t["_seq"]):
            if task.get("deleted") and not params.get("showDeleted"):
                continue
            if task.get("hidden") and not params.get("showHidden"):
                continue
            if task.get("status") == "completed" and params.get("showCompleted") is False:
                continue
            if updated_min is not None and parse_rfc3339(task["updated"]) < updated_min:
                continue
            chosen.append({k: v for k, v in task.items() if not k.startswith("_")})
        size = min(int(params.get("maxResults", 20)), 100)
        items, token = page(chosen, params.get("pageToken"), size)
        answer: dict[str, Any] = {"kind": "tasks#tasks", "etag": f'"{self.seq.current}"'}
        if items:
            answer["items"] = items
        if token:
            answer["nextPageToken"] = token
        return answer


def _check(task: dict[str, Any]) -> None:
    if task.get("status") not in {"needsAction", "completed"}:
        raise bad_request("Invalid task status.")
    if task.get("due"):
        try:
            parse_rfc3339(str(task["due"]))
        except ValueError:
            raise bad_request("Invalid value for: due") from None
