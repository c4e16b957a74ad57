//! The report as one self-contained HTML page for a merchant: no script, no external style,
//! image or font; the charts are inline SVG bars labelled with their figures. Every bar is a
//! `rect.bar` carrying `data-chart`, `data-row`, `data-series` and `data-value`, and its figure
//! is the `text.value` with the same data attributes (the browser test measures both).

use crate::report::{Report, channel_label, money_text, percent, step_label};
use std::fmt::Write as _;

const LABEL_WIDTH: f64 = 222.0;
const BAR_X: f64 = 232.0;
/// The longest bar of a chart.
pub const BAR_SPAN: f64 = 310.0;
const CHART_WIDTH: f64 = 640.0;

const BLUE: &str = "#2563eb";
const PURPLE: &str = "#7c3aed";
const GREEN: &str = "#15803d";
const RED: &str = "#dc2626";
const SLATE: &str = "#475569";

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// One bar: its series (for colour and legend), value (for length) and printed figure.
struct Bar {
    series: &'static str,
    value: f64,
    text: String,
    /// Printed after the figure, smaller (a share, say).
    note: Option<String>,
}

struct Row {
    label: String,
    bars: Vec<Bar>,
}

struct Series {
    key: &'static str,
    legend: &'static str,
    color: &'static str,
}

fn chart(id: &str, title: &str, caption: &str, series: &[Series], rows: &[Row]) -> String {
    let max = rows.iter().flat_map(|r| r.bars.iter().map(|b| b.value)).fold(0.0_f64, f64::max);
    let per_row = rows.iter().map(|r| r.bars.len()).max().unwrap_or(1).max(1) as f64;
    let bar_h = if per_row > 1.0 { 18.0 } else { 24.0 };
    let row_h = per_row * (bar_h + 4.0) + 14.0;
    let legend_h = if series.len() > 1 { 26.0 } else { 0.0 };
    let height = legend_h + rows.len() as f64 * row_h + 4.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" id="chart-{id}" role="img" aria-labelledby="title-{id}" width="{CHART_WIDTH}" height="{height}" viewBox="0 0 {CHART_WIDTH} {height}">"#
    );
    if series.len() > 1 {
        let mut x = BAR_X;
        for s in series {
            let _ = write!(
                svg,
                r#"<rect x="{x}" y="6" width="12" height="12" rx="2" fill="{}"/><text class="legend" x="{}" y="16">{}</text>"#,
                s.color,
                x + 18.0,
                escape(s.legend)
            );
            x += 40.0 + 8.0 * s.legend.len() as f64;
        }
    }
    for (i, row) in rows.iter().enumerate() {
        let top = legend_h + i as f64 * row_h;
        let mid = top + (row.bars.len() as f64 * (bar_h + 4.0)) / 2.0;
        let _ = write!(
            svg,
            r#"<text class="row-label" x="{}" y="{:.1}" text-anchor="end" dominant-baseline="middle">{}</text>"#,
            LABEL_WIDTH,
            mid,
            escape(&row.label)
        );
        for (j, bar) in row.bars.iter().enumerate() {
            let y = top + j as f64 * (bar_h + 4.0);
            let width = if max > 0.0 { bar.value / max * BAR_SPAN } else { 0.0 };
            let color = series.iter().find(|s| s.key == bar.series).map_or(SLATE, |s| s.color);
            let data = format!(
                r#"data-chart="{}" data-row="{}" data-series="{}""#,
                escape(id),
                escape(&row.label),
                escape(bar.series)
            );
            let _ = write!(
                svg,
                r#"<rect class="track" x="{BAR_X}" y="{y:.1}" width="{BAR_SPAN}" height="{bar_h}" rx="3"/><rect class="bar" {data} data-value="{}" x="{BAR_X}" y="{y:.1}" width="{width:.3}" height="{bar_h}" rx="3" fill="{color}"><title>{}: {}</title></rect>"#,
                bar.value,
                escape(&row.label),
                escape(&bar.text)
            );
            let tx = BAR_X + width + 8.0;
            let ty = y + bar_h / 2.0;
            let _ = write!(
                svg,
                r#"<text class="value" {data} x="{tx:.1}" y="{ty:.1}" dominant-baseline="middle">{}</text>"#,
                escape(&bar.text)
            );
            if let Some(note) = &bar.note {
                let nx = tx + 9.0 * bar.text.chars().count() as f64 + 6.0;
                let _ = write!(
                    svg,
                    r#"<text class="note" x="{nx:.1}" y="{ty:.1}" dominant-baseline="middle">{}</text>"#,
                    escape(note)
                );
            }
        }
    }
    svg.push_str("</svg>");
    format!(
        r#"<section class="card" id="section-{id}"><h2 id="title-{id}">{}</h2><p class="caption">{}</p>{svg}</section>"#,
        escape(title),
        escape(caption)
    )
}

fn count_bar(series: &'static str, n: u64, note: Option<String>) -> Bar {
    Bar { series, value: n as f64, text: n.to_string(), note }
}

fn kpi(label: &str, value: &str, detail: &str) -> String {
    format!(
        r#"<div class="kpi"><div class="kpi-label">{}</div><div class="kpi-value">{}</div><div class="kpi-detail">{}</div></div>"#,
        escape(label),
        escape(value),
        escape(detail)
    )
}

/// The whole page.
pub fn render_html(r: &Report) -> String {
    let currency = r.main_currency();
    let period = match r.since {
        Some(s) => format!("Carts since {}", s.format("%B %-d, %Y")),
        None => "All carts".to_string(),
    };
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<header><h1>Cart recovery report <span class="merchant">{}</span></h1><p class="period">{} · generated {}</p></header>"#,
        escape(&r.merchant_name),
        escape(&period),
        escape(&r.generated_at.format("%Y-%m-%d %H:%M UTC").to_string())
    );
    body.push_str(r#"<div class="kpis">"#);
    body.push_str(&kpi(
        "Recovered revenue",
        &r.revenue.text(),
        &format!("from {} recovered cart{}", r.recovered, if r.recovered == 1 { "" } else { "s" }),
    ));
    body.push_str(&kpi(
        "Recovery rate",
        &format!("{:.1}%", percent(r.recovered, r.messaged)),
        &format!("{} of {} carts messaged or called", r.recovered, r.messaged),
    ));
    body.push_str(&kpi(
        "Opt-out rate",
        &format!("{:.1}%", r.opt_out_rate()),
        &format!("{} of {} people messaged", r.opt_outs, r.people_messaged),
    ));
    body.push_str(&kpi("Delivery failures", &r.failures.total().to_string(), "texts undelivered, calls not completed"));
    body.push_str("</div>");

    let funnel_rows: Vec<Row> = r
        .funnel()
        .iter()
        .map(|(label, n)| Row {
            label: label.to_string(),
            bars: vec![count_bar("carts", *n, Some(format!("{:.0}%", percent(*n, r.with_phone))))],
        })
        .collect();
    body.push_str(&chart(
        "funnel",
        "Recovery funnel",
        &format!("{} abandoned carts in all; percentages are of the carts with a phone number.", r.carts),
        &[Series { key: "carts", legend: "Carts", color: BLUE }],
        &funnel_rows,
    ));

    let step_rows: Vec<Row> = r
        .by_step
        .iter()
        .map(|s| Row {
            label: format!("{} · {}", step_label(s.step), channel_label(s.channel)),
            bars: vec![count_bar("sent", s.sent, None), count_bar("recovered", s.recovered, None)],
        })
        .collect();
    body.push_str(&chart(
        "steps",
        "By step",
        "Texts sent or calls placed at each step of the flow, and the carts each step recovered (the last message before the order).",
        &[
            Series { key: "sent", legend: "Sent", color: BLUE },
            Series { key: "recovered", legend: "Recovered", color: GREEN },
        ],
        &step_rows,
    ));
    let step_revenue: Vec<Row> = r
        .by_step
        .iter()
        .map(|s| {
            let m = s.revenue.get(&currency);
            Row {
                label: format!("{} · {}", step_label(s.step), channel_label(s.channel)),
                bars: vec![Bar { series: "revenue", value: m.as_f64(), text: money_text(&currency, m), note: None }],
            }
        })
        .collect();
    body.push_str(&chart(
        "step-revenue",
        "Recovered revenue by step",
        &format!("In {}.", if currency.is_empty() { "the shop's currency" } else { &currency }),
        &[Series { key: "revenue", legend: "Revenue", color: GREEN }],
        &step_revenue,
    ));

    let channel_rows: Vec<Row> = r
        .by_channel
        .iter()
        .map(|c| Row {
            label: match c.channel {
                callfy_shared::domain::merchant::Channel::Sms => "Text messages".to_string(),
                callfy_shared::domain::merchant::Channel::Voice => "Calls".to_string(),
            },
            bars: vec![count_bar("sent", c.sent, None), count_bar("recovered", c.recovered, None)],
        })
        .collect();
    body.push_str(&chart(
        "channels",
        "By channel",
        "Texts sent and calls placed, and the carts each channel recovered.",
        &[
            Series { key: "sent", legend: "Sent", color: PURPLE },
            Series { key: "recovered", legend: "Recovered", color: GREEN },
        ],
        &channel_rows,
    ));
    let channel_revenue: Vec<Row> = r
        .by_channel
        .iter()
        .map(|c| {
            let m = c.revenue.get(&currency);
            Row {
                label: channel_label(c.channel).to_string(),
                bars: vec![Bar { series: "revenue", value: m.as_f64(), text: money_text(&currency, m), note: None }],
            }
        })
        .collect();
    body.push_str(&chart(
        "channel-revenue",
        "Recovered revenue by channel",
        &format!("In {}.", if currency.is_empty() { "the shop's currency" } else { &currency }),
        &[Series { key: "revenue", legend: "Revenue", color: GREEN }],
        &channel_revenue,
    ));

    body.push_str(&chart(
        "opt-outs",
        "Opt-outs",
        &format!(
            "{:.1}% of the people messaged opted out afterwards (STOP, key 9, the shop, their carrier).",
            r.opt_out_rate()
        ),
        &[Series { key: "people", legend: "People", color: SLATE }],
        &[
            Row { label: "People messaged".into(), bars: vec![count_bar("people", r.people_messaged, None)] },
            Row {
                label: "Opted out".into(),
                bars: vec![count_bar("people", r.opt_outs, Some(format!("{:.1}%", r.opt_out_rate())))],
            },
        ],
    ));

    let failure_rows: Vec<Row> = r
        .failures
        .rows()
        .iter()
        .map(|(label, n)| Row { label: label.to_string(), bars: vec![count_bar("failures", *n, None)] })
        .collect();
    body.push_str(&chart(
        "failures",
        "Delivery failures",
        "Final statuses reported by the carrier, and steps Twilio refused.",
        &[Series { key: "failures", legend: "Failures", color: RED }],
        &failure_rows,
    ));
    if !r.agent_calls.is_empty() {
        let outcome_rows: Vec<Row> = r
            .outcomes_by_step()
            .iter()
            .map(|(step, outcome, n)| Row {
                label: format!("Step {} · {outcome}", step + 1),
                bars: vec![count_bar("calls", *n, None)],
            })
            .collect();
        body.push_str(&chart(
            "agent",
            "Voice agent calls",
            "How each call the AI agent answered ended, by flow step.",
            &[Series { key: "calls", legend: "Calls", color: BLUE }],
            &outcome_rows,
        ));
        body.push_str(r#"<section class="card"><h2>Agent calls</h2><p class="caption">Each call's transcript is shown by <code>callfy-admin transcript MERCHANT CALL_SID</code> (it holds what the shopper said, so it is not in this page).</p><ul>"#);
        for c in &r.agent_calls {
            let _ = write!(
                body,
                "<li><code>{}</code> step {} · {} · {} — <code>callfy-admin transcript {} {}</code></li>",
                escape(&c.call_sid),
                c.step + 1,
                escape(&c.outcome),
                escape(&c.summary),
                escape(r.merchant.as_str()),
                escape(&c.call_sid)
            );
        }
        body.push_str("</ul></section>");
    }
    if r.other_orders > 0 {
        let _ = write!(
            body,
            r#"<p class="footnote">Not counted as recovered: {} order{} on these carts that came before any message or after the attribution window ({}).</p>"#,
            r.other_orders,
            if r.other_orders == 1 { "" } else { "s" },
            escape(&r.other_revenue.text())
        );
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Cart recovery report: {title}</title>
<style>{STYLE}</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"#,
        title = escape(&r.merchant_name)
    )
}

const STYLE: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f1f5f9; color: #0f172a; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 720px; margin: 0 auto; padding: 24px 16px 48px; }
header h1 { font-size: 24px; margin: 0 0 4px; }
header .merchant { color: #2563eb; }
header .period { margin: 0 0 20px; color: #475569; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin-bottom: 16px; }
.kpi { background: #fff; border-radius: 10px; padding: 14px 16px; box-shadow: 0 1px 2px rgba(15, 23, 42, .08); }
.kpi-label { font-size: 13px; color: #475569; }
.kpi-value { font-size: 20px; font-weight: 700; margin: 2px 0; white-space: nowrap; }
.kpi-detail { font-size: 12px; color: #64748b; }
.card { background: #fff; border-radius: 10px; padding: 16px 16px 8px; margin-bottom: 16px; box-shadow: 0 1px 2px rgba(15, 23, 42, .08); overflow-x: auto; }
.card h2 { font-size: 17px; margin: 0 0 2px; }
.caption { margin: 0 0 10px; color: #64748b; font-size: 13px; }
svg.chart { display: block; font-size: 13px; max-width: 100%; height: auto; }
svg .row-label { fill: #0f172a; }
svg .value { fill: #0f172a; font-weight: 700; }
svg .note, svg .legend { fill: #475569; }
svg .track { fill: #f1f5f9; }
.footnote { color: #475569; font-size: 13px; }
"#;
