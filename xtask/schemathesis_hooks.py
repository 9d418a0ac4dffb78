"""Schemathesis hooks for Fidelis, loaded by `cargo xtask schemathesis` through
SCHEMATHESIS_HOOKS.

- NDJSON bodies (the journal batch and the member openings).
- `negative_data_rejection_beyond_per_line_verdicts`: schemathesis' own check, except for
  the NDJSON endpoints, which answer each line's verdict in a 200.
- `positive_data_acceptance_beyond_business_rules`: schemathesis' own
  `positive_data_acceptance` check (a request the document calls valid must not be refused),
  except for the refusals listed below. Each is a rule no OpenAPI document can state because
  it depends on what the program defines or on what happened before (a balance, a merge, the
  clock); each is listed with the reason. Anything else refused is a failure: the document
  must say it.
"""

import json

import schemathesis
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

# Problem codes a schema-valid request may still get (422, or 409 for the state of a
# journal), and why a document cannot rule them out.
BUSINESS_RULES = {
    # What the program defines: its currencies, activity types, tiers, tier groups.
    "unknown_currency": "currencies are the program's own codes",
    "currency_not_redeemable": "which currencies are qualifying is the program's choice",
    "unsupported_money_currency": "the program prices journals in one ISO 4217 currency",
    "unknown_journal_type": "activity types are declared by the program",
    "unknown_tier": "tiers are the program's own codes",
    "unknown_segment": "segments are the program's own codes",
    "cursor_mismatch": "a cursor continues the list it came from, in that list's sort order",
    "invalid_program": "a definition's cross-references (currencies, tiers, activity types) "
    "and its CEL conditions are checked against each other",
    # Who exists, named in a body (the path's unknowns are 404 and need no exception).
    "unknown_member": "a member named in the body must be enrolled",
    "unknown_program": "a token or user's program must exist",
    "unknown_original": "the journal a refund or cancellation names must exist",
    "original_member_mismatch": "the journal named must be the member's own",
    "unknown_referral_code": "a referral code must be a member's",
    # What happened before: balances, states, earlier journals, groups.
    "insufficient_points": "a balance is the sum of earlier journals",
    "member_merged": "a merged member is closed for good",
    "member_suspended": "status is set by an earlier request",
    "before_enrolment": "a purchase earns from the member's enrolment on (less the program's days_before_enrolment)",
    "member_closed": "status is set by an earlier request",
    "member_not_active": "status is set by an earlier request",
    "member_is_group": "a group's points are spent through the group",
    "member_in_arrears": "a negative balance blocks what it blocks",
    "member_has_ledger": "opening balances are for members without journals",
    "member_has_holds": "a member with points held for orders is not merged until they end",
    "already_grouped": "a member belongs to one group",
    "not_allowed_by_group": "the group's redeem rule names who may spend",
    "same_member": "a member cannot merge into or transfer to itself",
    "not_opt_in": "only opt-in promotions can be joined",
    "not_refundable": "only accruals are refunded",
    "refund_exceeds_original": "a refund takes back at most what was bought",
    "not_cancellable": "what can be cancelled depends on the journal",
    "already_cancelled": "a journal is cancelled once",
    "not_transferable": "the program says which currencies transfer",
    "transfer_limit": "daily transfer limits count earlier transfers",
    "not_reinstatable": "the program says how long expired points may be reinstated",
    "nothing_to_reinstate": "reinstating needs expired points",
    "not_extendable": "only expiring points are extended",
    "hold_captured": "a hold ends once: captured, it cannot be released",
    "hold_released": "a hold ends once: released, it cannot be captured",
    "currency_not_payable": "the program says which currencies pay at checkout",
    "unknown_voucher_definition": "the program's definition names its vouchers",
    "voucher_redeemed": "a voucher's uses and value are spent by earlier requests",
    "voucher_cancelled": "status is set by an earlier request",
    "voucher_reserved": "a reservation by an earlier request holds the voucher",
    "voucher_not_reserved": "redeeming or reinstating a reservation needs the key it was made with",
    "voucher_value_exceeded": "a fixed voucher's remaining value is what earlier redemptions left",
    "invalid_item": "an item's currency, tiers and voucher definition must be the program's",
    "unknown_item": "an order names an item of the catalog",
    "item_inactive": "an operator sets whether an item is offered",
    "item_not_for_tier": "an item's tiers and the member's standing decide who may order it",
    "out_of_stock": "stock is what earlier orders left",
    "order_fulfilled": "status is set by an earlier request",
    "order_cancelled": "status is set by an earlier request",
    "order_not_placed": "status is set by an earlier request",
    "order_voucher_used": "an order whose voucher was spent cannot be cancelled",
    "order_member_merged": "an order of a member merged since cannot be cancelled",
    "invalid_partner": "a partner's currency must be the program's, and its billing fit its roles",
    "partner_not_prepaid": "only a prepaid partner has a pack to top up",
    "partner_pack_empty": "a prepaid pack holds what earlier top-ups and accruals left",
    "period_not_next": "settlement periods close in order: the next starts where the last closed one ended",
    "period_overlaps": "a closed settlement period is not closed again in part",
    "invalid_period": "a period ends after it starts",
    "claim_exists": "a member claims a transaction once",
    "claim_already_processed": "a transaction the program processed cannot be claimed",
    "claim_approved": "status is set by an earlier request",
    "claim_rejected": "status is set by an earlier request",
    "invalid_amount": "how many decimals an amount may have, and how large it may be, depends on the program's money currency",
    # The clock.
    "future_dated": "occurred_at must not be after now",
    "hold_expired": "a hold can be captured until its end",
    "voucher_expired": "a voucher is valid until its definition's end",
    "voucher_not_yet_valid": "a voucher is valid from its definition's start",
    "as_of_in_future": "as_of must not be after now",
    "item_not_yet_available": "an item is orderable from its available_from",
    "item_no_longer_available": "an item is orderable until its available_until",
    "period_not_over": "a settlement period closes once it is over",
    "invalid_claim": "a claimed transaction happened before now",
    # Policy beyond length.
    "weak_password": "a password needs 5 different characters, not only spaces",
    "invalid_template": "a message template must be minijinja that renders for a made-up event "
    "of its type, with only if and for (no set, macros or *)",
}

# `invalid_journal` is mostly structural (and then the document must rule it out); these are
# its cross-field and program-dependent rules, matched in `detail`.
JOURNAL_RULES = {
    "differs from the sum of the lines": "an amount equals the sum of its lines",
    "appears twice": "line ids are unique within a journal",
    "decimals": "how many decimals depends on the program's money currency",
    "a purchase needs an amount": "a purchase has an amount or lines",
    "cannot cancel itself": "a cancellation names another journal",
    "not both": "a refund gives lines or an amount; a line its quantity or amount",
    "is required with an amount": "an amount names its currency",
    "before the program began": "the program's starts_on",
    "are Fidelis's own": "orders starting with review: reserve the points of held journals",
}


# Refusals under a general code that are business rules only with this `detail`.
DETAIL_RULES = {
    ("invalid_group", "cannot join itself"): "a group's own record is not a member of a group",
    ("invalid_validity", "must be in the future"): "valid_until must be after now",
    ("invalid_request", "is reserved"): "the bootstrap token's name is reserved",
    ("invalid_request", "must be before"): "a window's start comes before its end",
    ("invalid_member", "U+0000"): "PostgreSQL's jsonb holds no U+0000, so no profile does",
    ("invalid_member", "1e300"): "PostgreSQL's jsonb keeps decimals that near the largest double do not read back",
}


def business_rule(response):
    """The documented reason a refusal is a business rule, or None."""
    if response.status_code not in (409, 422):
        return None
    try:
        problem = json.loads(response.content)
    except ValueError:
        return None
    code = problem.get("code") if isinstance(problem, dict) else None
    if code in BUSINESS_RULES:
        return BUSINESS_RULES[code]
    detail = str(problem.get("detail", ""))
    for (rule_code, fragment), reason in DETAIL_RULES.items():
        if code == rule_code and fragment in detail:
            return reason
    if code == "invalid_journal":
        detail = str(problem.get("detail", ""))
        for fragment, reason in JOURNAL_RULES.items():
            if fragment in detail:
                return reason
    return None


@schemathesis.check
def positive_data_acceptance_beyond_business_rules(ctx, response, case):
    """`positive_data_acceptance`, except for the business rules above."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except Exception:
        if business_rule(response) is not None:
            return None
        raise


# The NDJSON endpoints answer 200 with a verdict per line: a line that breaks the document is
# reported in the answer (`status: rejected` with its code) while the other lines are
# processed, by design (one bad line must not cost a batch of thousands). The per-line
# refusals are asserted by the batch tests in crates/fidelis-web/tests.
PER_LINE_VERDICTS = ("/journals/batch", "/members/openings")


@schemathesis.check
def negative_data_rejection_beyond_per_line_verdicts(ctx, response, case):
    """`negative_data_rejection`, except for the NDJSON endpoints' per-line verdicts."""
    if case.operation.path.endswith(PER_LINE_VERDICTS):
        return None
    return negative_data_rejection(ctx, response, case)


@schemathesis.serializer("application/x-ndjson")
def ndjson_serializer(ctx, value):
    """A batch request: one JSON document per line."""
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode("utf-8")


@schemathesis.serializer("application/yaml")
def yaml_serializer(ctx, value):
    """A program definition as YAML: JSON is YAML, so the JSON text is sent."""
    return json.dumps(value).encode("utf-8")


def split_ndjson(text):
    """The documents of an NDJSON text. Lines end at "\\n" only: `str.splitlines` would also
    split at U+0085, U+2028 and U+2029, which JSON strings may hold unescaped."""
    return [json.loads(line) for line in text.split("\n") if line.strip()]


@schemathesis.deserializer("application/x-ndjson")
def ndjson_deserializer(ctx, response):
    """A batch response: one JSON result per line, validated as an array."""
    return split_ndjson(response.content.decode(response.encoding or "utf-8"))


if __name__ == "__main__":
    # A self-test, run by `cargo xtask schemathesis` before schemathesis.
    lines = [{"detail": "a\u2028b\u0085c\u2029d"}, {"ok": True}]
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    assert split_ndjson(text) == lines, split_ndjson(text)
    assert split_ndjson("") == []

    class Answer:
        def __init__(self, status, body):
            self.status_code = status
            self.content = json.dumps(body).encode()

    assert business_rule(Answer(422, {"code": "insufficient_points"})) is not None
    assert business_rule(Answer(422, {"code": "invalid_journal", "detail": "x appears twice"}))
    assert business_rule(Answer(422, {"code": "invalid_journal", "detail": "type is required"})) is None
    assert business_rule(Answer(400, {"code": "insufficient_points"})) is None
    print("schemathesis_hooks: NDJSON split and business rules ok")
