//! The canteen counter (docs/CANTEEN.md): find a resident by card or name; top up (with the
//! payment method), pay out, report a card lost and bind a new one; today's meals with a void
//! (and its reason) each; the day's report and the monthly claim download; the roster import
//! with a dry run shown before the real one.
//!
//! Invariant: no money rule here. Every form posts to the staff JSON API (`pages.js`), which
//! runs the same `CanteenAdmin` / `TopUp` / `ImportRoster` operations as every other client, with
//! the session's staff id as `by`; the page only reads (balances and ledgers from
//! `canteen::statement`, totals from `canteen::reports` and `canteen::dayclose`). Forms are shown
//! only to roles the API lets act; a manager sees the reports only.

use super::nav::Page;
use super::residents::{find, ledger_table, meals_table, resident_card, room_of};
use super::{
    bad_query, date_field, field, layout, local_time, page, refused, today, unavailable, yuan, Lang,
};
use crate::auth::Actor;
use crate::canteen::admin::PAYMENT_METHODS;
use crate::canteen::statement::{self, MealFilter};
use crate::http::Api;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use sqlx::Row;

/// Query of the counter.
#[derive(Deserialize)]
pub(super) struct CounterQuery {
    /// Card or name typed (or read by a desk reader acting as a keyboard).
    q: Option<String>,
    /// The resident being served.
    resident: Option<String>,
    /// The day of the meal list and the report (default today).
    date: Option<String>,
}

fn method_label(lang: Lang, m: &str) -> &'static str {
    match m {
        "cash" => lang.t("现金", "cash"),
        "wechat" => lang.t("微信", "WeChat"),
        "alipay" => lang.t("支付宝", "Alipay"),
        "bank" => lang.t("银行转账", "bank transfer"),
        _ => lang.t("其他", "other"),
    }
}

/// `GET /console/canteen?q=…&resident=…&date=…`
pub(super) async fn show(
    State(api): State<Api>,
    actor: Actor,
    headers: HeaderMap,
    Query(cq): Query<CounterQuery>,
) -> Response {
    let lang = Lang::of(&headers);
    if let Some(r) = refused(lang, &actor, Page::Canteen) {
        return r;
    }
    let (q, resident, date) = match (
        field(&cq.q, "q", 64),
        field(&cq.resident, "resident", 64),
        date_field(&cq.date, "date"),
    ) {
        (Ok(q), Ok(r), Ok(d)) => (q, r, d.unwrap_or_else(|| today(&api.registry))),
        (Err(m), _, _) | (_, Err(m), _) | (_, _, Err(m)) => return bad_query(lang, &actor, &m),
    };
    let pool = api.journal.readers();
    let acts = super::nav::moves_money(actor.role);
    // A search that finds exactly one resident opens them.
    let mut found = Vec::new();
    let mut resident = resident.map(str::to_string);
    if let (Some(q), None) = (q, &resident) {
        match find(&api, q).await {
            Ok(f) if f.len() == 1 => resident = f.first().map(|r| r.resident_id.clone()),
            Ok(f) => found = f,
            Err(e) => return unavailable(e),
        }
    }
    let served = match &resident {
        Some(id) => match serve(lang, &api, id, acts).await {
            Ok(m) => Some(m),
            Err(e) => return unavailable(e),
        },
        None => None,
    };
    let day = date.to_string();
    let meals = match statement::meals(
        pool,
        &api.registry,
        &MealFilter {
            date: Some(day.clone()),
            resident: None,
            card: None,
            limit: 500,
        },
    )
    .await
    {
        Ok(m) => m,
        Err(e) => return unavailable(e),
    };
    let totals = match crate::canteen::reports::daily(pool, &day).await {
        Ok(t) => t,
        Err(e) => return unavailable(e),
    };
    let close = match crate::canteen::dayclose::close(pool, &api.registry, date).await {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    let month = day.get(..7).unwrap_or_default().to_string();
    let body = html! {
        h2 { (lang.t("食堂柜台", "Canteen counter")) }
        div.status #status role="status" {}
        form.filters method="get" action="/console/canteen" {
            label { (lang.t("刷卡或输入卡号、姓名", "Tap or type a card, or a name"))
                input name="q" type="search" value=(q.unwrap_or("")) maxlength="64" autofocus autocomplete="off"; }
            button type="submit" { (lang.t("查找", "Find")) }
        }
        @if q.is_some() && resident.is_none() {
            @if found.is_empty() { p.empty { (lang.t("没找到", "Nobody found")) } }
            @for r in &found { (resident_card(lang, r, "/console/canteen?resident=")) }
        }
        @if let Some(m) = &served { (m) }
        h3 { (lang.t("当天用餐 ", "Meals of ")) (day) }
        form.filters method="get" action="/console/canteen" {
            @if let Some(r) = &resident { input type="hidden" name="resident" value=(r); }
            label { (lang.t("日期", "Date")) input type="date" name="date" value=(day); }
            button type="submit" { (lang.t("查看", "Show")) }
        }
        @if meals.is_empty() { p.empty { (lang.t("无", "None")) } } @else { (meals_table(lang, &api, &meals, acts)) }
        h3 { (lang.t("日报", "Day report")) }
        div.scroll { table #daily {
            thead { tr { th { (lang.t("餐次", "Period")) } th.num { (lang.t("份数", "Meals")) } th.num { (lang.t("总价", "Gross")) }
                th.num { (lang.t("补贴", "Subsidy")) } th.num { (lang.t("实收", "Paid")) } th.num { (lang.t("送餐", "Delivered")) } } }
            tbody { @for t in &totals { tr { td { (t.period) } td.num { (t.meals) } td.num { (yuan(t.gross_fen)) }
                td.num { (yuan(t.subsidy_fen)) } td.num { (yuan(t.paid_fen)) } td.num { (t.delivered) } } } }
        } }
        p.meta { (lang.t("充值：", "Top-ups: "))
            @for (m, t) in &close.topups_by_method { (method_label(lang, m)) " " (t.count) " × ¥" (yuan(t.amount_fen)) "; " }
            " · " (lang.t("退余额 ", "payouts ")) (close.payouts.count) " × ¥" (yuan(close.payouts.amount_fen))
            " · " (lang.t("钱箱应有现金 ¥", "cash in the drawer ¥")) strong { (yuan(close.cash_drawer_fen)) }
            @if !close.flags.is_empty() { " · " span.bad { (close.flags.len()) (lang.t(" 条需核查", " flags to check")) } } }
        div.actions {
            a.button href={ "/api/reports/daily?date=" (day) } download={ "canteen-day-" (day) ".json" } { (lang.t("下载日报", "Download the day report")) }
            a.button href={ "/api/reports/claim?month=" (month) } download { (lang.t("下载 ", "Download the ")) (month) (lang.t(" 补贴申领表", " subsidy claim")) }
        }
        @if actor.role.may_import_roster() {
            h3 { (lang.t("导入花名册", "Import the roster")) }
            form #roster {
                input type="file" name="file" accept=".csv,text/csv";
                button type="submit" { (lang.t("试运行（只看变化）", "Dry run (only show changes)")) }
                button #roster-confirm type="button" disabled { (lang.t("确认导入", "Import it")) }
            }
            pre #roster-result {}
        }
        script src="/console/static/pages.js" {}
    };
    page(layout(
        lang,
        lang.t("食堂柜台", "Canteen counter"),
        Some(&actor),
        "/console/canteen",
        body,
    ))
}

/// The resident at the counter: who, cards, balance, the money forms, the ledger's last lines.
async fn serve(lang: Lang, api: &Api, id: &str, acts: bool) -> Result<Markup, sqlx::Error> {
    let pool = api.journal.readers();
    let r = api.registry.residents.get(id);
    let st = statement::statement(pool, &api.registry, id, 20).await?;
    let Some(st) = st else {
        return Ok(
            html! { p.error { (lang.t("名册上没有这位老人：", "Not on the roster: ")) (id) } },
        );
    };
    let cards: Vec<(String, String)> = sqlx::query(
        "SELECT card_id, state FROM cards WHERE resident_id = ? ORDER BY changed_at DESC",
    )
    .bind(id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|c| Ok((c.try_get(0)?, c.try_get(1)?)))
    .collect::<Result<_, sqlx::Error>>()?;
    let name = st.name.clone().unwrap_or_default();
    let away = super::residents::away_section(lang, api, id).await?;
    Ok(html! {
        section.card #serving data-resident=(id) {
            h3 { (name) " " span.muted { (id) } }
            @if let Some(r) = &r { div.meta { (room_of(r)) } }
            div { (lang.t("余额 ", "Balance ")) span.big #balance { "¥" (yuan(st.balance_fen)) } }
            div.meta { (lang.t("卡：", "Cards: "))
                @for (c, s) in &cards { span.cardid data-state=(s) { (c) " (" (if s == "active" { lang.t("在用", "active") } else { lang.t("挂失", "lost") }) ") " } }
                @if cards.is_empty() { (lang.t("无", "none")) } }
            @if r.is_some() { (away) }
            @if acts {
                form.act.topup data-api={ "/api/residents/" (id) "/topup" } data-done=(lang.t("已充值", "Topped up")) {
                    input name="amount_fen" data-fen inputmode="decimal" required placeholder=(lang.t("充值金额（元）", "Amount (yuan)"));
                    select name="method" required {
                        @for m in PAYMENT_METHODS { option value=(m) { (method_label(lang, m)) } }
                    }
                    input name="reason" maxlength="200" placeholder=(lang.t("收据号（可选）", "Receipt no. (optional)"));
                    button.resolve type="submit" { (lang.t("充值", "Top up")) }
                    span.status {}
                }
                form.act.payout data-api={ "/api/residents/" (id) "/payout" } data-done=(lang.t("已退余额", "Paid out")) {
                    input name="amount_fen" data-fen inputmode="decimal" placeholder=(lang.t("退款金额（元，空=全部）", "Amount (yuan; empty = all)"));
                    input name="reason" required maxlength="200" placeholder=(lang.t("原因（必填）", "Reason (required)"));
                    button type="submit" { (lang.t("退余额", "Pay out")) }
                    span.status {}
                }
                @for (c, s) in &cards {
                    @if s == "active" {
                        form.act.lost data-api={ "/api/cards/" (c) "/lost" } data-done=(lang.t("已挂失", "Card reported lost")) {
                            span { (lang.t("卡 ", "Card ")) (c) }
                            button type="submit" { (lang.t("挂失", "Report lost")) }
                            span.status {}
                        }
                    }
                }
                form.act.bind data-api="/api/cards/{card}/bind" data-done=(lang.t("新卡已绑定", "New card bound")) {
                    input type="hidden" name="resident_id" value=(id);
                    input name="card" required maxlength="32" autocomplete="off" placeholder=(lang.t("新卡号", "New card UID"));
                    button type="submit" { (lang.t("绑定新卡", "Bind a new card")) }
                    span.status {}
                }
            }
            h3 { (lang.t("最近账目", "Recent ledger")) }
            @if st.lines.is_empty() { p.muted { (lang.t("无", "None")) } } @else { (ledger_table(lang, api, &st)) }
            p.meta { a href={ "/console/residents/" (id) } { (lang.t("老人详情", "Resident's page")) }
                " · " (lang.t("共 ", "")) (st.ledger_rows) (lang.t(" 条账目", " ledger rows")) " · "
                (lang.t("更新于 ", "as of ")) (local_time(&api.registry, &crate::journal::format_ts(jiff::Timestamp::now()))) }
        }
    })
}
