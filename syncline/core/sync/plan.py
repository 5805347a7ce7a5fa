"""Which queued entries the next push sends, in which order (docs/sync.md, "Order").

The queue is read in commit order (``seq``) and cut into groups, one per mutation:

- a record's changes go in commit order: an entry is never planned while an earlier entry of
  the same record stays behind (held, refused a place, or already sent in another group);
- one mutation per record per batch: the next one's base version is known only once the
  server has answered the previous one;
- a command goes after every record write committed before it and after earlier commands
  (``after=`` at enqueue time narrows that to named records, or to none); while it waits,
  the writes committed after it wait too (those of its ``after=`` records only, for a
  narrowed one): what the command meets on the server is what was committed before it;
- a write whose foreign key names a record with queued changes left behind waits for them,
  and a delete waits while a change of a record of a child table is left behind;
- unsent changes of one record coalesce (create+update is a create, create+delete nothing),
  never across a command queued between them, never into a group already sent;
- a group that failed alone before (a poison suspect) is sent alone.

Every group depends only on groups before it, so any prefix of the plan is a valid batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from syncline.core.sync.outbox import OutboxEntry

#: a record: (table name, record id)
Rec = tuple[str, str]


@attrs.define
class Plan:
    groups: list[list[OutboxEntry]] = attrs.Factory(list)
    #: the last group is a poison suspect sent alone: nothing may join this batch
    alone: bool = False


@attrs.define
class Planner:
    """Cuts the queue into groups; feed it entries in ``seq`` order until :attr:`full`."""

    max_groups: int
    #: records whose entries may not be sent now (manual conflict, waiting after a failure)
    held: set[Rec]
    #: table -> [(foreign key column, parent table)] for keys naming the parent's primary key
    parents: Mapping[str, list[tuple[str, str]]]
    #: command entry id -> the records it waits for (absent: every earlier write)
    after: Mapping[str, tuple[Rec, ...]]
    #: the entries of a group sent before, by group id
    sent_group: Callable[[str], list[OutboxEntry]]
    #: entries waiting after a failure (their records are in ``held`` too)
    held_ids: set[str] = attrs.Factory(set)
    plan: Plan = attrs.Factory(Plan)
    _blocked: set[Rec] = attrs.Factory(set)
    _closed: set[Rec] = attrs.Factory(set)
    _open: dict[Rec, list[OutboxEntry]] = attrs.Factory(dict)
    _seen_groups: set[str] = attrs.Factory(set)
    _writes_behind: bool = False
    _commands_behind: bool = False
    #: a command waiting for every earlier write was left behind: nothing after it goes
    _barrier: bool = False
    #: tables with a child record's change left behind: their deletes wait
    _children_behind: set[str] = attrs.Factory(set)

    @property
    def full(self) -> bool:
        return self.plan.alone or len(self.plan.groups) >= self.max_groups

    def feed(self, entries: Iterable[OutboxEntry]) -> None:
        for e in entries:
            if self.plan.alone:
                return
            if e.action == "command":
                self._command(e)
            else:
                self._write(e)

    def _command(self, e: OutboxEntry) -> None:
        # No coalescing across a command: what it sees on the server is what came before it.
        self._closed.update(self._open)
        self._open.clear()
        if e.group_id is not None and e.group_id in self._seen_groups:
            return
        deps = self.after.get(e.id)
        if e.id in self.held_ids:
            ready = False
        elif deps is None:
            ready = not self._writes_behind and not self._commands_behind
        else:
            ready = not any(r in self._blocked or r in self.held for r in deps)
        if ready and not self.full and self._take([e]):
            return
        self._commands_behind = True
        if deps is None:
            self._barrier = True  # what it may see on the server must not change before it
        else:
            self._blocked.update(deps)

    def _write(self, e: OutboxEntry) -> None:
        rec: Rec = (e.entity, e.record_id or "")
        if e.group_id is not None and e.group_id in self._seen_groups:
            return  # a member of a sent group already planned (or left behind) whole
        if self._barrier or (e.action == "delete" and e.entity in self._children_behind):
            self._leave(rec, e)  # (a parent's delete waits for its children's changes)
            return
        group = self._open.get(rec)
        if group is not None and e.group_id is None and e.coalesce \
                and group[-1].action != "delete" and not self._waits_for_parent(e):
            group.append(e)
            return
        if (group is None and rec not in self._closed and rec not in self._blocked
                and rec not in self.held and not self._waits_for_parent(e) and not self.full):
            if e.group_id is not None:
                self._seen_groups.add(e.group_id)
                members = self.sent_group(e.group_id) or [e]
                if self._take(members):
                    self._closed.add(rec)
                    return
            else:
                members = [e]
                if self._take(members):
                    if e.coalesce:
                        self._open[rec] = members
                    else:
                        self._closed.add(rec)
                    return
        self._leave(rec, e)

    def _take(self, group: list[OutboxEntry]) -> bool:
        if any(m.retry_count > 0 for m in group):  # failed alone before: alone again
            if self.plan.groups:
                return False
            self.plan.alone = True
        self.plan.groups.append(group)
        return True

    def _leave(self, rec: Rec, e: OutboxEntry) -> None:
        """``e`` stays in the queue: what comes after it and depends on it stays too."""
        if e.group_id is not None:
            self._seen_groups.add(e.group_id)
        group = self._open.pop(rec, None)
        if group is not None:
            self._closed.add(rec)
        self._blocked.add(rec)
        self._writes_behind = True
        for _, parent in self.parents.get(e.entity, ()):
            self._children_behind.add(parent)

    def _waits_for_parent(self, e: OutboxEntry) -> bool:
        if e.payload is None:
            return False
        for column, parent in self.parents.get(e.entity, ()):
            value = e.payload.get(column)
            if value is None:
                continue
            key = (parent, str(value))
            if key in self._blocked or key in self.held:
                return True
        return False
