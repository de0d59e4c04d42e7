//! Usage of plans' quotas: one consumer's (`GET /consumers/{name}/usage`) and a plan's heaviest
//! consumers (`GET /plans/{name}/usage?period=day&top=10`), read from where quotas are counted.

use super::{error, json};
use crate::config::Period;
use crate::gateway::Gateway;
use http::Response;
use serde_json::{json as value, Value};

/// The plans for `/status`: each with its quotas, its consumers' count, and the requests its
/// consumers sent through this gateway (admitted, refused).
pub(super) fn plans(gw: &Gateway) -> Value {
    gw.plans
        .iter()
        .enumerate()
        .map(|(i, (plan, counters))| {
            value!({
                "name": &*plan.name,
                "quotas": plan.periods().iter().map(|(p, limit)| value!({
                    "period": p.as_str(),
                    "limit": limit,
                })).collect::<Vec<_>>(),
                "consumers": gw.consumers.iter().filter(|(_, p)| *p == Some(i)).count(),
                "admitted": counters[0].get(),
                "refused": counters[1].get(),
            })
        })
        .collect()
}

/// `GET /consumers/{name}/usage`: the consumer's plan and, per quota, what it used in the
/// current period.
pub(super) async fn consumer(gw: &Gateway, path: &str) -> Response<Vec<u8>> {
    let Some(name) = path
        .strip_prefix("/consumers/")
        .and_then(|p| p.strip_suffix("/usage"))
    else {
        return error(404, "no such admin endpoint");
    };
    let Some((consumer, plan)) = gw.consumers.iter().find(|(n, _)| &**n == name) else {
        return error(404, "no such consumer");
    };
    let Some((plan, _)) = plan.and_then(|p| gw.plans.get(p)) else {
        return json(
            200,
            value!({ "consumer": &**consumer, "plan": null, "quotas": [] }),
        );
    };
    let quotas: Vec<Value> = plan
        .usage(&gw.limits, consumer)
        .await
        .into_iter()
        .map(|u| {
            value!({
                "period": u.period.as_str(),
                "window": u.window,
                "limit": u.limit,
                "used": u.used,
                "remaining": u.limit.saturating_sub(u.used),
                "resets_at": u.resets_at,
                "counted": if u.local { "local" } else { "redis" },
            })
        })
        .collect();
    json(
        200,
        value!({ "consumer": &**consumer, "plan": &*plan.name, "quotas": quotas }),
    )
}

/// `GET /plans/{name}/usage`: the `top` consumers (default 10, at most 1,000) of the plan's
/// `period` quota (default: its first) in the current period.
pub(super) async fn plan(gw: &Gateway, path: &str, query: Option<&str>) -> Response<Vec<u8>> {
    let Some(name) = path
        .strip_prefix("/plans/")
        .and_then(|p| p.strip_suffix("/usage"))
    else {
        return error(404, "no such admin endpoint");
    };
    let Some((plan, _)) = gw.plans.iter().find(|(p, _)| &*p.name == name) else {
        return error(404, "no such plan");
    };
    let mut top = 10usize;
    let mut period = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "top" => match v.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => top = n,
                _ => return error(400, "top: a number from 1 to 1000"),
            },
            "period" => {
                period = Some(match v.as_ref() {
                    "day" => Period::Day,
                    "week" => Period::Week,
                    "month" => Period::Month,
                    _ => return error(400, "period: day, week or month"),
                })
            }
            _ => return error(400, &format!("unknown parameter \"{k}\" (top, period)")),
        }
    }
    let periods = plan.periods();
    let Some((period, limit)) = (match period {
        Some(p) => periods.iter().find(|(q, _)| *q == p).copied(),
        None => periods.first().copied(),
    }) else {
        return error(404, "the plan has no quota of that period");
    };
    let Some(list) = plan.top(period, top).await else {
        return error(503, "redis does not answer: usage is counted there");
    };
    let consumers: Vec<Value> = list
        .into_iter()
        .map(|(c, used)| value!({ "consumer": c, "used": used, "remaining": limit.saturating_sub(used) }))
        .collect();
    json(
        200,
        value!({ "plan": &*plan.name, "period": period.as_str(), "limit": limit, "top": consumers }),
    )
}
