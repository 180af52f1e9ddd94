"""Introspection: ``info`` lists the triggers and scheduled actions declared
on each model, and finds one by name."""

from __future__ import annotations

from collections.abc import Iterator

import peewee as pw
import pytest
from dramatiq.brokers.stub import StubBroker

import dramatiq_triggers
from dramatiq_triggers import info, scheduled_action, trigger


class Invoice(pw.Model):
    state = pw.CharField(default="open")

    class Meta:
        table_name = "info_invoice"


class Refund(pw.Model):
    state = pw.CharField(default="requested")

    class Meta:
        table_name = "info_refund"


class Ledger(pw.Model):
    total = pw.IntegerField(default=0)

    class Meta:
        table_name = "info_ledger"


@pytest.fixture
def declared(
    sqlite_db: pw.SqliteDatabase, stub_broker: StubBroker
) -> Iterator[dict[str, object]]:
    sqlite_db.bind([Invoice, Refund, Ledger])

    def send_reminder(invoice: Invoice) -> None:
        pass

    def close(invoice: Invoice) -> None:
        pass

    def approve(refund: Refund) -> None:
        pass

    def nightly_totals() -> None:
        pass

    def hourly_health_check() -> None:
        pass

    yield {
        "send_reminder": trigger(Invoice, where=Invoice.state == "open")(send_reminder),
        "close": trigger(Invoice, cron=None)(close),
        "approve": trigger(Refund)(approve),
        "nightly_totals": scheduled_action(Invoice, cron="0 2 * * *")(nightly_totals),
        "hourly_health_check": scheduled_action(cron="0 * * * *")(hourly_health_check),
    }


def test_info_is_importable_from_the_package() -> None:
    assert dramatiq_triggers.info is info


def test_triggers_lists_a_models_triggers_in_declaration_order(
    declared: dict[str, object],
) -> None:
    assert info.triggers(Invoice) == [declared["send_reminder"], declared["close"]]
    assert info.triggers(Refund) == [declared["approve"]]


def test_triggers_of_a_model_without_triggers_is_empty(declared: dict[str, object]) -> None:
    assert info.triggers(Ledger) == []


def test_changing_the_returned_list_does_not_change_the_declarations(
    declared: dict[str, object],
) -> None:
    info.triggers(Invoice).clear()

    assert len(info.triggers(Invoice)) == 2


def test_trigger_finds_a_trigger_by_name(declared: dict[str, object]) -> None:
    found = info.trigger(Invoice, "close")

    assert found is declared["close"]
    assert (found.model, found.name, found.cron) == (Invoice, "close", None)


def test_a_wrong_trigger_name_raises_lookup_error_listing_the_models_triggers(
    declared: dict[str, object],
) -> None:
    with pytest.raises(LookupError) as caught:
        info.trigger(Invoice, "approve")

    message = str(caught.value)
    assert "Invoice" in message and "'approve'" in message
    assert "close, send_reminder" in message


def test_a_name_on_a_model_without_triggers_says_it_has_none(
    declared: dict[str, object],
) -> None:
    with pytest.raises(LookupError, match=r"Ledger has no trigger named 'anything'.*none"):
        info.trigger(Ledger, "anything")


def test_a_scheduled_action_is_not_found_as_a_trigger(declared: dict[str, object]) -> None:
    with pytest.raises(LookupError):
        info.trigger(Invoice, "nightly_totals")


def test_scheduled_actions_lists_those_grouped_under_a_model(
    declared: dict[str, object],
) -> None:
    assert info.scheduled_actions(Invoice) == [declared["nightly_totals"]]
    assert info.scheduled_actions(Refund) == []


def test_scheduled_actions_without_a_model_are_listed_under_none(
    declared: dict[str, object],
) -> None:
    assert info.scheduled_actions() == [declared["hourly_health_check"]]
    assert info.scheduled_actions(None) == [declared["hourly_health_check"]]


def test_all_triggers_lists_every_trigger_of_every_model_and_no_scheduled_action(
    declared: dict[str, object],
) -> None:
    everything = info.all_triggers()

    assert len(everything) == 3
    assert set(everything) == {declared["send_reminder"], declared["close"],
                               declared["approve"]}


def test_all_scheduled_actions_lists_those_with_and_without_a_model(
    declared: dict[str, object],
) -> None:
    assert set(info.all_scheduled_actions()) == {declared["nightly_totals"],
                                                 declared["hourly_health_check"]}


def test_nothing_is_listed_before_anything_is_declared(stub_broker: StubBroker) -> None:
    assert info.all_triggers() == []
    assert info.all_scheduled_actions() == []
    assert info.triggers(Invoice) == []
