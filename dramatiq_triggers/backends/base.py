"""The interface every coordination backend implements."""

from __future__ import annotations

import abc
from collections.abc import Sequence


class Backend(abc.ABC):
    """Shared state that keeps queues from flooding and cron ticks single.

    Three kinds of records live here, each under a *key* that names a
    trigger (its worker or scheduler actor name):

    * in-flight marks, one per message that is queued, delayed, retrying
      or running, named by an *item* (the record's primary key and the
      action arguments) and owned by the message's id, so that only that
      message removes it; they expire after a time to live, so a lost
      message cannot block its record for ever;
    * done marks of ``trigger_once`` triggers, one per primary key;
    * cron tick claims, one per tick of each cron job.

    Nothing in here is needed for correctness: the worker's row lock and
    re-check are.  A lost mark only means a duplicate message, which the
    worker cancels.
    """

    @abc.abstractmethod
    def claim(
        self,
        key: str,
        items: Sequence[str],
        *,
        ttl: int,
        done: Sequence[str] | None = None,
        owners: Sequence[str] | None = None,
    ) -> list[bool]:
        """Mark each item in flight unless it already is, in one round trip.

        Parameters:
          key: the trigger's key.
          items: the marks to take.
          ttl: milliseconds before a mark expires on its own.
          done: when given, one done-mark name per item; an item whose
            done mark exists is not claimed.
          owners: one owner per item (the id of the message that will
            carry it); without owners, a mark belongs to anyone.

        Returns:
          one boolean per item, True where the mark was taken.
        """

    @abc.abstractmethod
    def release(self, key: str, items: Sequence[str], owners: Sequence[str] | None = None) -> None:
        """Remove in-flight marks; missing marks are ignored.

        With ``owners`` (one per item), a mark is removed only if it is still
        the one that owner took: a message that ends late does not remove
        the mark of a newer message for the same record.
        """

    @abc.abstractmethod
    def touch(self, key: str, item: str, owner: str, *, ttl: int) -> None:
        """Give the owner's mark ``ttl`` milliseconds more to live (a retry or
        snooze waits); nothing happens if the mark is not the owner's."""

    @abc.abstractmethod
    def in_flight(self, key: str, item: str) -> bool:
        """Whether an in-flight mark exists for the item."""

    @abc.abstractmethod
    def mark_done(self, key: str, item: str) -> None:
        """Record that the item was processed successfully (``trigger_once``)."""

    @abc.abstractmethod
    def is_done(self, key: str, item: str) -> bool:
        """Whether ``mark_done`` was called for the item."""

    @abc.abstractmethod
    def claim_tick(self, job_id: str, tick: str, *, ttl: int) -> bool:
        """Claim one tick of one cron job; True for the first caller only.

        Parameters:
          job_id: the cron job's id.
          tick: the tick's scheduled time, as text.
          ttl: milliseconds the claim is kept (longer than any clock skew
            between hosts).
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections, if the backend holds any of its own."""
