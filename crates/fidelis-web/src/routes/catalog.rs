//! The reward catalog and its orders: items members spend points on (priced per tier,
//! restricted to tiers, orderable in a window, with stock), orders placed, fulfilled and
//! cancelled (see `fidelis_core::catalog` for the rules, `fidelis_store`'s `catalog` for
//! how stock and points move together).
//!
//! Who may do what: the program's managers write items (`programs:write`); whoever may
//! spend reads the catalog (`redemptions:write`; inactive items only with
//! `programs:read`); a member orders for itself, staff for any member, a partner not at
//! all (the catalog is the program's own); a member reads its own orders, a partner the
//! orders it fulfils, and fulfils them; staff cancel (`cancellations:write`, audited).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use fidelis_core::catalog::{CatalogItem, OrderStatus, TierPrice};
use fidelis_store::{CatalogEntry, LoadedProgram, OrderView, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Problems, cached_program, program as require_program};
use crate::auth::{Caller, Permission, Role};
use crate::error::{ApiError, ApiResult};
use crate::{ApiJson, AppState};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_catalog))
        .routes(routes!(get_item, put_item))
        .routes(routes!(place_order, list_orders))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
        .routes(routes!(fulfil_order))
}

const PROGRAM_PARAM: &str = "The program's code";
const ITEM_PARAM: &str = "The item's code";
const ORDER_PARAM: &str = "The order's id";
/// The most orders one list answers.
const MAX_LIMIT: i64 = 500;

/// An item's price for the members of a tier.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierPriceBody {
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub tier: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub points: i64,
}

/// A catalog item as written (its code is the path's).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// The redeemable currency it is priced in.
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub currency: String,
    /// The price for members none of whose tiers has its own.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub points: i64,
    /// Prices per tier: a member holding several pays the lowest.
    #[serde(default, deserialize_with = "crate::extract::object::list")]
    pub tier_prices: Vec<TierPriceBody>,
    /// Only members of these tiers may order it (anyone when empty).
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Orderable from (always, when absent) …
    pub available_from: Option<DateTime<Utc>>,
    /// … until, excluded.
    pub available_until: Option<DateTime<Utc>>,
    /// The partner that fulfils its orders.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub partner: Option<String>,
    /// A voucher definition: each order issues the member one.
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub voucher: Option<String>,
    /// `false`: kept, not orderable (default `true`).
    pub active: Option<bool>,
    /// Units in stock (unlimited when absent); writing the item sets it.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub stock: Option<i64>,
}

/// A catalog item and its stock.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ItemBody {
    pub code: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub currency: String,
    pub points: i64,
    pub tier_prices: Vec<TierPriceBody>,
    pub tiers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_from: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_until: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voucher: Option<String>,
    pub active: bool,
    /// Units left; absent: unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stock: Option<i64>,
    /// With `?member=`: what the item costs that member, or why it cannot order it
    /// (`item_not_for_tier`, `item_not_yet_available`, `out_of_stock`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl ItemBody {
    fn new(e: CatalogEntry) -> Self {
        let i = e.item;
        Self {
            code: i.code,
            name: i.name,
            description: i.description,
            currency: i.currency,
            points: i.points,
            tier_prices: i
                .tier_prices
                .into_iter()
                .map(|t| TierPriceBody {
                    tier: t.tier,
                    points: t.points,
                })
                .collect(),
            tiers: i.tiers,
            available_from: i.available_from,
            available_until: i.available_until,
            partner: i.partner,
            voucher: i.voucher,
            active: i.active,
            stock: e.stock,
            price: None,
            unavailable: None,
            updated_at: e.updated_at,
        }
    }

    /// Fills in what the item costs a member holding `tiers`, or why it cannot order it.
    fn for_member(mut self, item: &CatalogItem, tiers: &[&str], now: DateTime<Utc>) -> Self {
        let checked = item
            .orderable_at(now)
            .and_then(|()| item.price_for(tiers))
            .and_then(|price| {
                if self.stock == Some(0) {
                    Err(fidelis_core::catalog::CatalogError::OutOfStock)
                } else {
                    Ok(price)
                }
            });
        match checked {
            Ok(price) => self.price = Some(price),
            Err(e) => self.unavailable = Some(e.code().to_owned()),
        }
        self
    }
}

/// An order for one unit of an item.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// The order's id (the shop's, the portal's): placing is once per id, a retry answers
    /// the order placed.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub order_id: String,
    /// The member's external id.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub member: String,
    /// The item's code.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$")]
    pub item: String,
}

/// An order and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderBody {
    pub order_id: String,
    pub member: String,
    pub item: String,
    pub currency: String,
    /// The points it spent (the member's price when it was placed).
    pub points: i64,
    /// `placed`, `fulfilled`, `cancelled` (points and stock given back), `rejected` (the
    /// ledger refused it: see `reason`), or for a moment `placing`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// The voucher the order issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voucher: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// True when this answers a retry: nothing changed now.
    pub replayed: bool,
}

impl OrderBody {
    fn new(o: OrderView, replayed: bool) -> Self {
        Self {
            order_id: o.order_id,
            member: o.member,
            item: o.item,
            currency: o.currency,
            points: o.points,
            status: o.status.as_str().to_owned(),
            partner: o.partner,
            voucher: o.voucher,
            reason: o.reason,
            placed_at: o.placed_at,
            updated_at: o.updated_at,
            replayed,
        }
    }
}

/// Orders as a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrdersBody {
    pub orders: Vec<OrderBody>,
}

/// Catalog items as a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CatalogBody {
    pub items: Vec<ItemBody>,
}

/// A refusal of the catalog: a state that forbids the change is a conflict (409), what
/// the path names and does not exist is 404.
fn catalog_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Refused(
            code @ ("out_of_stock"
            | "order_fulfilled"
            | "order_cancelled"
            | "order_not_placed"
            | "order_voucher_used"
            | "order_member_merged"),
            detail,
        ) => ApiError::new(axum::http::StatusCode::CONFLICT, code, detail),
        StoreError::Refused(code @ ("unknown_item" | "unknown_order"), detail) => {
            ApiError::not_found(code, detail)
        }
        e => e.into(),
    }
}

fn item_code(code: &str) -> ApiResult<()> {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "unknown_item",
            "item codes are 1 to 64 of a-z, 0-9, - and _".to_owned(),
        ))
    }
}

/// The tiers a member holds now (codes).
async fn member_tiers(
    state: &AppState,
    program: &LoadedProgram,
    member: &str,
    now: DateTime<Utc>,
) -> ApiResult<Vec<String>> {
    Ok(state
        .store
        .tier_standing(program, member, now)
        .await?
        .into_iter()
        .map(|s| s.tier)
        .collect())
}

/// The catalog: the items on offer (with `all=true` and `programs:read`, inactive ones
/// too). With `member`, each item says what it costs that member (its tier's price) or
/// why the member cannot order it; a member token sees its own prices.
#[utoipa::path(get, path = "/programs/{program}/catalog", tag = "catalog",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("member" = Option<String>, Query, description = "A member: prices for it", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"),
           ("all" = Option<bool>, Query, description = "Inactive items too (programs:read)")),
    responses((status = 200, body = CatalogBody, description = "The items, by code"), Problems))]
pub(crate) async fn list_catalog(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    axum::extract::Query(query): axum::extract::Query<crate::dto::Query>,
) -> ApiResult<axum::Json<CatalogBody>> {
    caller.require(Permission::Redeem, Some(&code))?;
    let all = match query.get("all").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => {
            caller.require(Permission::ProgramsRead, Some(&code))?;
            true
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "all is true or false".to_owned(),
            ));
        }
    };
    let member = match (caller.role, query.get("member")) {
        (Role::Member, asked) => {
            let own = caller.member.clone();
            if let Some(m) = asked {
                caller.require_member(m)?;
            }
            own
        }
        (Role::Partner, Some(_)) => {
            return Err(ApiError::forbidden("a partner token may not read members"));
        }
        (_, asked) => asked.cloned(),
    };
    let program = cached_program(&state, &code).await?;
    let now = Utc::now();
    let tiers = match &member {
        Some(m) => Some(member_tiers(&state, &program, m, now).await?),
        None => None,
    };
    let items = state
        .store
        .catalog(&program, all)
        .await?
        .into_iter()
        .map(|e| {
            let item = e.item.clone();
            let body = ItemBody::new(e);
            match &tiers {
                Some(t) => {
                    let t: Vec<&str> = t.iter().map(String::as_str).collect();
                    body.for_member(&item, &t, now)
                }
                None => body,
            }
        })
        .collect();
    Ok(axum::Json(CatalogBody { items }))
}

/// One item.
#[utoipa::path(get, path = "/programs/{program}/catalog/{item}", tag = "catalog",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("item" = String, Path, description = ITEM_PARAM, example = "mug", min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$")),
    responses((status = 200, body = ItemBody, description = "The item"), Problems))]
async fn get_item(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, item)): Path<(String, String)>,
) -> ApiResult<axum::Json<ItemBody>> {
    caller.require(Permission::Redeem, Some(&code))?;
    item_code(&item)?;
    let program = cached_program(&state, &code).await?;
    let entry = state
        .store
        .catalog_item(&program, &item)
        .await?
        .filter(|e| {
            e.item.active
                || caller
                    .require(Permission::ProgramsRead, Some(&code))
                    .is_ok()
        })
        .ok_or_else(|| {
            ApiError::not_found("unknown_item", format!("the catalog has no item {item:?}"))
        })?;
    Ok(axum::Json(ItemBody::new(entry)))
}

/// Creates or replaces an item, and sets its stock. Every problem is listed
/// (`invalid_item`), nothing stored. Audited.
#[utoipa::path(put, path = "/programs/{program}/catalog/{item}", tag = "catalog",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("item" = String, Path, description = ITEM_PARAM, example = "mug", min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$")),
    request_body = ItemRequest,
    responses((status = 201, body = ItemBody, description = "Created"),
              (status = 200, body = ItemBody, description = "Replaced"),
              Problems))]
async fn put_item(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, item)): Path<(String, String)>,
    ApiJson(request): ApiJson<ItemRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::ProgramsWrite, Some(&code))?;
    item_code(&item)?;
    let program = require_program(&state, &code).await?;
    let definition = CatalogItem {
        code: item.clone(),
        name: request.name,
        description: request.description,
        currency: request.currency,
        points: request.points,
        tier_prices: request
            .tier_prices
            .into_iter()
            .map(|t| TierPrice {
                tier: t.tier,
                points: t.points,
            })
            .collect(),
        tiers: request.tiers,
        available_from: request.available_from,
        available_until: request.available_until,
        partner: request.partner,
        voucher: request.voucher,
        active: request.active.unwrap_or(true),
    };
    let created = state
        .store
        .put_catalog_item(
            &program,
            &definition,
            request.stock,
            Utc::now(),
            &caller.actor(),
        )
        .await?;
    let entry = state
        .store
        .catalog_item(&program, &item)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_item", format!("no item {item:?}")))?;
    let body = axum::Json(ItemBody::new(entry));
    Ok(if created {
        (axum::http::StatusCode::CREATED, body).into_response()
    } else {
        body.into_response()
    })
}

/// Orders one unit of an item for a member: the member's price is redeemed from its
/// points (earliest expiry first), the stock counted down, the item's voucher issued.
/// Idempotent by `order_id`. Refused with `out_of_stock` (409), `item_not_for_tier`,
/// `item_inactive`, `item_not_yet_available`, `item_no_longer_available`,
/// `insufficient_points` (422; the order is kept as `rejected`, the stock given back).
#[utoipa::path(post, path = "/programs/{program}/orders", tag = "catalog",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body = OrderRequest,
    responses((status = 201, body = OrderBody, description = "Placed"),
              (status = 200, body = OrderBody, description = "A retry: the order placed with this id", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome of the same order"))),
              Problems))]
pub(crate) async fn place_order(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    ApiJson(request): ApiJson<OrderRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::Redeem, Some(&code))?;
    if caller.role == Role::Partner {
        return Err(ApiError::forbidden(
            "a partner token may not order from the program's catalog",
        ));
    }
    caller.require_member(&request.member)?;
    item_code(&request.item)?;
    let program = cached_program(&state, &code).await?;
    let (order, replayed) = state
        .store
        .place_order(
            &program,
            &request.order_id,
            &request.member,
            &request.item,
            Utc::now(),
            &caller.actor(),
        )
        .await
        .map_err(catalog_error)?;
    Ok(super::created_or_replayed(
        OrderBody::new(order, replayed),
        replayed,
    ))
}

/// Orders, newest first: a member token's own, a partner's those it fulfils; staff any
/// (by `member`, `status`).
#[utoipa::path(get, path = "/programs/{program}/orders", tag = "catalog",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("member" = Option<String>, Query, description = "One member's orders", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"),
           ("status" = Option<String>, Query, description = "Orders in this status", pattern = "^(placing|placed|fulfilled|cancelled|rejected)$"),
           ("limit" = Option<i64>, Query, description = "At most this many (50 by default, at most 500)", minimum = 1, maximum = 500)),
    responses((status = 200, body = OrdersBody, description = "The orders"), Problems))]
pub(crate) async fn list_orders(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    axum::extract::Query(query): axum::extract::Query<crate::dto::Query>,
) -> ApiResult<axum::Json<OrdersBody>> {
    caller.require(Permission::JournalsRead, Some(&code))?;
    let status = query
        .get("status")
        .map(|s| {
            OrderStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request("invalid_query", format!("no order status {s:?}"))
            })
        })
        .transpose()?;
    let limit = match query.get("limit") {
        None => 50,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request("invalid_query", format!("limit is 1 to {MAX_LIMIT}"))
            })?,
    };
    let member = match caller.role {
        Role::Member => {
            if let Some(m) = query.get("member") {
                caller.require_member(m)?;
            }
            caller.member.clone()
        }
        Role::Partner if query.contains_key("member") => {
            return Err(ApiError::forbidden("a partner token may not read members"));
        }
        _ => query.get("member").cloned(),
    };
    let program = cached_program(&state, &code).await?;
    let member_id = match &member {
        Some(m) => Some(state.store.require_member(&program, m).await?.id),
        None => None,
    };
    let partner =
        (caller.role == Role::Partner).then(|| caller.partner.clone().unwrap_or_default());
    let orders = state
        .store
        .orders(&program, member_id, status, partner.as_deref(), limit)
        .await?;
    Ok(axum::Json(OrdersBody {
        orders: orders
            .into_iter()
            .map(|o| OrderBody::new(o, false))
            .collect(),
    }))
}

/// The order as the caller may see it: a member's own, a partner's those it fulfils
/// (404 otherwise: another's order is not confirmed).
async fn visible_order(
    state: &AppState,
    caller: &Caller,
    program: &LoadedProgram,
    order: &str,
) -> ApiResult<OrderView> {
    let unknown = || ApiError::not_found("unknown_order", format!("no order {order:?}"));
    let found = state
        .store
        .order(program, order)
        .await?
        .ok_or_else(unknown)?;
    let visible = match caller.role {
        Role::Member => caller.member.as_deref() == Some(found.member.as_str()),
        Role::Partner => caller.partner.is_some() && caller.partner == found.partner,
        _ => true,
    };
    if visible { Ok(found) } else { Err(unknown()) }
}

/// One order.
#[utoipa::path(get, path = "/programs/{program}/orders/{order}", tag = "catalog",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("order" = String, Path, description = ORDER_PARAM, example = "R-1001", min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 200, body = OrderBody, description = "The order"), Problems))]
async fn get_order(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, order)): Path<(String, String)>,
) -> ApiResult<axum::Json<OrderBody>> {
    caller.require(Permission::JournalsRead, Some(&code))?;
    let program = cached_program(&state, &code).await?;
    let found = visible_order(&state, &caller, &program, &order).await?;
    Ok(axum::Json(OrderBody::new(found, false)))
}

/// Cancels a placed order: the points go back to the buckets they came from with their
/// original expiry, the unit back into stock, the order's voucher is cancelled.
/// Refused for a fulfilled order (`order_fulfilled`), one whose voucher was used (once,
/// or in part: `order_voucher_used`) or whose member was merged since
/// (`order_member_merged`: credit the survivor instead), all 409. A retry answers the cancellation done. Audited.
#[utoipa::path(post, path = "/programs/{program}/orders/{order}/cancel", tag = "catalog",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("order" = String, Path, description = ORDER_PARAM, example = "R-1001", min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 201, body = OrderBody, description = "Cancelled"),
              (status = 200, body = OrderBody, description = "A retry: cancelled before", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome"))),
              Problems))]
pub(crate) async fn cancel_order(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, order)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require(Permission::Cancel, Some(&code))?;
    let program = cached_program(&state, &code).await?;
    let (found, replayed) = state
        .store
        .cancel_order(&program, &order, Utc::now(), &caller.actor())
        .await
        .map_err(catalog_error)?;
    Ok(super::created_or_replayed(
        OrderBody::new(found, replayed),
        replayed,
    ))
}

/// Marks a placed order fulfilled (the item or its voucher went out): staff, or the
/// partner that fulfils the item. A retry answers the fulfilment done. Audited.
#[utoipa::path(post, path = "/programs/{program}/orders/{order}/fulfil", tag = "catalog",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("order" = String, Path, description = ORDER_PARAM, example = "R-1001", min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 201, body = OrderBody, description = "Fulfilled"),
              (status = 200, body = OrderBody, description = "A retry: fulfilled before", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome"))),
              Problems))]
pub(crate) async fn fulfil_order(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, order)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require(Permission::Redeem, Some(&code))?;
    if caller.role == Role::Member {
        return Err(ApiError::forbidden("a member token may not fulfil orders"));
    }
    let program = cached_program(&state, &code).await?;
    visible_order(&state, &caller, &program, &order).await?;
    let (found, replayed) = state
        .store
        .fulfil_order(&program, &order, Utc::now(), &caller.actor())
        .await
        .map_err(catalog_error)?;
    Ok(super::created_or_replayed(
        OrderBody::new(found, replayed),
        replayed,
    ))
}
