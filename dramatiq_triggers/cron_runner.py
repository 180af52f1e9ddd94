"""The cron: an APScheduler background scheduler that enqueues each trigger's
scheduler (and each scheduled action) on its crontab, once per tick across
every process and host.

Every worker process may run one.  When a job fires, the process names the
tick it fires for (the latest fire time of the crontab, so every process
computes the same one) and claims it in the coordination backend; only the
process that wins the claim enqueues.  A tick that no process fires within
``cron_misfire_grace`` seconds is skipped, so a cluster that was down does
not replay the ticks it missed.
"""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler

from .cron import latest_fire_time, parse_cron
from .declarations import ScheduledAction, Trigger, all_declarations

if TYPE_CHECKING:
    from .middleware import TriggersMiddleware

logger = logging.getLogger("dramatiq_triggers.cron")


def job_id(declaration: Trigger | ScheduledAction) -> str:
    """The cron job's id: the actor it enqueues, which is stable across renames."""
    if isinstance(declaration, Trigger):
        return declaration.scheduler_actor_name
    return declaration.actor_name


class CronRunner:
    """Runs the crontab of every active trigger and scheduled action."""

    def __init__(self, middleware: TriggersMiddleware) -> None:
        self.middleware = middleware
        self.scheduler = BackgroundScheduler(timezone=middleware.timezone)
        self._triggers: dict[str, object] = {}

    def start(self) -> None:
        for declaration in all_declarations():
            self.add(declaration)
        self.scheduler.start()
        logger.info("Cron started with %d job(s).", len(self._triggers))

    def stop(self) -> None:
        """Stop firing, after the fires in progress have enqueued.

        A fire that has claimed its tick must finish: no other process
        will enqueue that tick, and the broker closes right after this.
        """
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
            logger.info("Cron stopped.")

    def add(self, declaration: Trigger | ScheduledAction) -> None:
        """Register the declaration's crontab, unless it has none or is not active."""
        if declaration.cron is None or declaration.state != "active":
            return
        if declaration.broker is not self.middleware.broker:
            return
        identifier = job_id(declaration)
        if identifier in self._triggers:
            return
        trigger = parse_cron(declaration.cron, timezone=self.middleware.timezone)
        self._triggers[identifier] = trigger
        self.scheduler.add_job(
            self.fire,
            trigger=trigger,
            args=(declaration,),
            id=identifier,
            name=repr(declaration),
            coalesce=True,
            max_instances=1,
            misfire_grace_time=self.middleware.cron_misfire_grace,
            replace_existing=True,
        )

    def fire(self, declaration: Trigger | ScheduledAction) -> bool:
        """Claim the current tick of ``declaration``; enqueue it if the claim is ours."""
        from .enqueue import schedule

        identifier = job_id(declaration)
        trigger = self._triggers[identifier]
        now = datetime.datetime.now(datetime.timezone.utc)
        grace = datetime.timedelta(seconds=self.middleware.cron_misfire_grace)
        tick = latest_fire_time(trigger, now, within=grace)
        if tick is None:
            logger.debug("No tick of %r is due within the grace time.", declaration)
            return False
        stamp = tick.astimezone(datetime.timezone.utc).isoformat()
        ttl = max(2 * self.middleware.cron_misfire_grace, 60) * 1000
        try:
            if not self.middleware.backend.claim_tick(identifier, stamp, ttl=ttl):
                logger.debug("Tick %s of %r was claimed elsewhere.", stamp, declaration)
                return False
            message = schedule(declaration)
        except Exception:
            logger.exception("Could not fire tick %s of %r.", stamp, declaration)
            return False
        if message is None:
            logger.info("Tick %s of %r skipped: its previous run is still in flight.", stamp,
                        declaration)
            return False
        logger.debug("Tick %s of %r enqueued message %s.", stamp, declaration,
                     message.message_id)
        return True
