//! Gateway lists: show, create, update (add, remove or replace items), delete.
//!
//! Every change is checked by compiling the whole policy it would leave, so a change that
//! would break a rule referring to the list is refused (409, `in_use`) naming the rule.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use zt_policy::ListType;

use super::lookup::find_list;
use super::{created, ok, ApiRequest, Ctx, Reply};
use crate::admin::error::ApiError;
use crate::admin::policy::{check_policy, list_kind, list_type};
use crate::store::{List, Rule, WriteTxn};

fn list_view(l: &List) -> Value {
    json!({
        "id": l.id,
        "name": l.name,
        "slug": l.slug,
        "type": list_type(l.kind).map_or_else(|| format!("{:?}", l.kind).to_uppercase(), |t| t.to_string()),
        "reference": format!("${}", l.id.simple()),
        "items": l.items,
        "description": l.description,
    })
}

pub(super) fn all(ctx: &Ctx) -> Reply {
    let read = ctx.state.db().read()?;
    let mut lists = read.list::<List>()?;
    lists.sort_by(|a, b| a.name.cmp(&b.name));
    ok(json!(lists.iter().map(list_view).collect::<Vec<_>>()))
}

pub(super) fn show(ctx: &Ctx, key: &str) -> Reply {
    let read = ctx.state.db().read()?;
    ok(list_view(&find_list(&read, key)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateList {
    name: String,
    #[serde(default)]
    slug: Option<String>,
    #[serde(rename = "type")]
    list_type: String,
    #[serde(default)]
    items: Vec<String>,
    #[serde(default)]
    description: String,
}

fn parse_list_type(s: &str) -> Result<ListType, ApiError> {
    match s.to_ascii_uppercase().as_str() {
        "IP" => Ok(ListType::Ip),
        "DOMAIN" => Ok(ListType::Domain),
        "EMAIL" => Ok(ListType::Email),
        "DEVICE" | "SERIAL" => Ok(ListType::Device),
        _ => Err(ApiError::bad_request(
            "invalid_list",
            format!("unknown list type `{s}`; use IP, DOMAIN, EMAIL or DEVICE"),
        )),
    }
}

/// Checks one list on its own (slug, every item) with zt-policy's rules.
fn check_list(list: &List) -> Result<(), ApiError> {
    if let Some(p) = crate::admin::policy::policy_list(list) {
        p.validate()
            .map_err(|e| ApiError::bad_request("invalid_list", e.to_string()))?;
    }
    Ok(())
}

/// Writes `list` (or removes `deleted`) after checking that every rule still compiles.
fn write_list(txn: &mut WriteTxn<'_>, list: Option<&List>, deleted: Option<Uuid>) -> Reply {
    if let Some(list) = list {
        check_list(list)?;
        txn.put(list)?;
    }
    if let Some(id) = deleted {
        txn.delete::<List>(id)?;
    }
    let lists = txn.list::<List>()?;
    let rules = txn.list::<Rule>()?;
    check_policy(&lists, &rules).map_err(|mut e| {
        if e.code == "invalid_expression" {
            // The rule was fine before; what changed is the list it refers to.
            e.status = StatusCode::CONFLICT;
            e.code = "in_use";
            e.message = format!(
                "this change would break a rule that refers to the list: {}",
                e.message
            );
        }
        e
    })?;
    ok(Value::Null)
}

pub(super) fn create(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let body: CreateList = req.json()?;
    let t = parse_list_type(&body.list_type)?;
    let mut list = List::new(body.name.trim(), list_kind(t), body.items);
    list.slug = body.slug.filter(|s| !s.is_empty());
    list.description = body.description;
    ctx.state
        .db()
        .update(|txn| write_list(txn, Some(&list), None))?;
    created(list_view(&list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateList {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    description: Option<String>,
    /// Replaces every item.
    #[serde(default)]
    items: Option<Vec<String>>,
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

pub(super) fn update(ctx: &Ctx, req: &ApiRequest, key: &str) -> Reply {
    let body: UpdateList = req.json()?;
    let (list, _) = ctx.state.db().update(|txn| {
        let mut list = find_list(txn, key)?;
        if let Some(name) = &body.name {
            list.name = name.trim().to_owned();
        }
        if let Some(slug) = &body.slug {
            list.slug = Some(slug.clone()).filter(|s| !s.is_empty());
        }
        if let Some(d) = &body.description {
            list.description = d.clone();
        }
        if let Some(items) = &body.items {
            list.items = items.clone();
        }
        for item in &body.remove {
            let before = list.items.len();
            list.items.retain(|i| i.trim() != item.trim());
            if list.items.len() == before {
                return Err(ApiError::not_found(format!(
                    "list `{}` has no item `{item}`",
                    list.name
                )));
            }
        }
        for item in &body.add {
            if !list.items.iter().any(|i| i.trim() == item.trim()) {
                list.items.push(item.clone());
            }
        }
        write_list(txn, Some(&list), None)?;
        Ok::<_, ApiError>(list)
    })?;
    ok(list_view(&list))
}

pub(super) fn delete(ctx: &Ctx, key: &str) -> Reply {
    let (list, _) = ctx.state.db().update(|txn| {
        let list = find_list(txn, key)?;
        write_list(txn, None, Some(list.id))?;
        Ok::<_, ApiError>(list)
    })?;
    ok(list_view(&list))
}
