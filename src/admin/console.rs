//! The web console at `/console`: server-rendered HTML over the admin functions, no build chain.
//!
//! - `GET /console` (with the search fields as query): journal counts, flows per sink (with a 5 s refresh
//!   when `?live=1`), message search, dead letters with a replay button;
//! - `GET /console/messages/{id}`: one message's timeline;
//! - `POST /console/dlq/{sink}/{id}/replay`: publishes the dead letter again, then back to `/console`;
//! - `POST /console/sinks/{sink}/pause` / `resume`: pauses or resumes the sink, then back to `/console`.
//!
//! With `http.admin_token` set, the console asks for the token once and keeps it in a `SameSite=Strict`
//! cookie (`relais_admin`) that the same check as the API accepts. Pages never show message bodies.

use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};

use super::Admin;
use super::api::{ApiError, SearchQuery, Timeline, authorized, operator};
use crate::journal::EntryMeta;

/// The console routes.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/console", get(home))
        .route("/console/messages/{id}", get(message))
        .route("/console/dlq/{sink}/{id}/replay", post(replay_dead_letter))
        .route("/console/sinks/{sink}/{action}", post(pause_resume))
        .route_layer(middleware::from_fn_with_state(admin.clone(), login_wall))
        .with_state(admin)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;\
text-align:left;font-size:.9em}th{background:#eef}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.2em}\
form.search input,form.search select{margin-right:.6em}.failed,.rejected{color:#b00}.published{color:#070}\
.note{color:#666;font-size:.85em}.paused{color:#b60;font-weight:bold}form.inline{display:inline}";

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · Relais</title>\
         <style>{STYLE}</style></head><body><h1><a href=\"/console\">Relais</a> · {}</h1>{body}</body></html>",
        text(title),
        text(title)
    ))
}

async fn login_wall(
    AxumState(admin): AxumState<Admin>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    if admin.token.is_empty() || authorized(&admin.token, request.headers()) {
        return next.run(request).await;
    }
    let form = "<p>This console needs the admin token (<code>http.admin_token</code>).</p>\
        <form id=\"login\"><input type=\"password\" id=\"token\" autocomplete=\"off\"> <button>Open</button></form>\
        <script>document.getElementById('login').onsubmit=function(e){e.preventDefault();\
        document.cookie='relais_admin='+encodeURIComponent(document.getElementById('token').value)+\
        '; path=/; SameSite=Strict';location.reload();};</script>";
    (StatusCode::UNAUTHORIZED, page("Sign in", form)).into_response()
}

fn error_page(error: ApiError) -> Response {
    let status = error.to_string();
    let mut response = error.into_response();
    *response.body_mut() = page("Error", &format!("<p class=\"failed\">{}</p>", text(&status))).0.into();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// Query of `GET /console`: the search fields, plus a flash message after an action.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct HomeQuery {
    #[serde(flatten)]
    search: SearchQuery,
    done: Option<String>,
    live: Option<String>,
}

async fn home(AxumState(admin): AxumState<Admin>, Query(query): Query<HomeQuery>) -> Response {
    match render_home(&admin, &query).await {
        Ok(html) => html.into_response(),
        Err(error) => error_page(error),
    }
}

async fn render_home(admin: &Admin, query: &HomeQuery) -> Result<Html<String>, ApiError> {
    let mut body = String::new();
    if let Some(done) = query.done.as_deref().filter(|d| !d.is_empty()) {
        let _ = write!(body, "<p id=\"flash\" class=\"published\">{}</p>", text(done));
    }
    if query.live.is_some() {
        body.push_str("<script>setTimeout(function(){location.reload();},5000);</script>");
    }

    let stats = admin.journal.stats()?;
    body.push_str("<h2>Journal</h2><table id=\"stats\"><tr>");
    for name in stats.keys() {
        let _ = write!(body, "<th>{}</th>", text(name));
    }
    body.push_str("</tr><tr>");
    for count in stats.values() {
        let _ = write!(body, "<td>{count}</td>");
    }
    body.push_str("</tr></table>");

    body.push_str(
        "<h2>Flows per sink <span class=\"note\">(newest 1000 messages; \
         <a href=\"/console?live=1\">live</a>)</span></h2>\
         <table id=\"flows\"><tr><th>sink</th><th>state</th><th>routed</th><th>published</th>\
         <th>dead letters</th><th></th></tr>",
    );
    for flow in admin.flows(1000).await? {
        let dead = flow.dead_letters.map_or("n/a".to_owned(), |n| n.to_string());
        let (state, action, label) =
            if flow.paused { ("paused", "resume", "Resume") } else { ("running", "pause", "Pause") };
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"{state}\">{state}</td><td>{}</td><td>{}</td><td>{dead}</td>\
             <td><form class=\"inline\" method=\"post\" action=\"/console/sinks/{}/{action}\">\
             <button id=\"{action}-{}\">{label}</button></form></td></tr>",
            text(&flow.sink),
            flow.routed,
            flow.published,
            attr(&urlencode(&flow.sink)),
            attr(&flow.sink),
        );
    }
    body.push_str("</table>");

    body.push_str(&search_form(&query.search));
    let results = admin.search(&query.search).await?;
    let _ = write!(body, "<p class=\"note\" id=\"found\">{} message(s)</p>", results.len());
    body.push_str(&messages_table(&results));

    body.push_str("<h2>Dead letters</h2>");
    for sink in &admin.sinks {
        let _ = write!(body, "<h3>{}</h3>", text(sink));
        match admin.dead_letter_list(sink, 100).await {
            Ok(dead) if dead.is_empty() => body.push_str("<p class=\"note\">none</p>"),
            Ok(dead) => {
                body.push_str(
                    "<table class=\"dlq\"><tr><th>message</th><th>route</th><th>event</th><th>attempts</th>\
                     <th>reason</th><th></th></tr>",
                );
                for letter in dead {
                    let event = letter.event_class.map_or("", |e| e.as_str());
                    let _ = write!(
                        body,
                        "<tr><td><a href=\"/console/messages/{id}\">{id}</a></td><td>{}</td><td>{}</td>\
                         <td>{}</td><td>{}</td>\
                         <td><form method=\"post\" action=\"/console/dlq/{}/{id}/replay\">\
                         <button id=\"replay-{}-{id}\">Replay</button></form></td></tr>",
                        text(&letter.route),
                        text(event),
                        letter.attempts.map_or(String::new(), |n| n.to_string()),
                        text(letter.reason.as_deref().unwrap_or("")),
                        attr(&urlencode(sink)),
                        attr(sink),
                        id = letter.message_id,
                    );
                }
                body.push_str("</table>");
            }
            Err(error) => {
                let _ = write!(body, "<p class=\"note\">{}</p>", text(&error.to_string()));
            }
        }
    }

    body.push_str("<h2>Undeliverable <span class=\"note\">(newest 20)</span></h2>");
    let undeliverable = admin.undeliverable(None, 20)?;
    if undeliverable.is_empty() {
        body.push_str("<p class=\"note\">none</p>");
    } else {
        body.push_str(
            "<table id=\"undeliverable\"><tr><th>message</th><th>sink</th><th>when</th><th>reason</th></tr>",
        );
        for u in undeliverable {
            let _ = write!(
                body,
                "<tr><td><a href=\"/console/messages/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                text(&u.sink),
                u.at.map(|at| at.strftime("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default(),
                text(&u.reason),
                id = u.message_id,
            );
        }
        body.push_str("</table>");
    }
    Ok(page("Console", &body))
}

fn urlencode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn search_form(query: &SearchQuery) -> String {
    let field = |name: &str, label: &str, value: &Option<String>, kind: &str| {
        format!(
            "<label>{label} <input type=\"{kind}\" name=\"{name}\" id=\"q-{name}\" value=\"{}\"></label>",
            attr(value.as_deref().unwrap_or(""))
        )
    };
    let mut form =
        String::from("<h2>Messages</h2><form class=\"search\" method=\"get\" action=\"/console\">");
    form.push_str(&field("control_id", "MSH-10", &query.control_id, "text"));
    form.push_str(&field("sender", "sender (MSH-4)", &query.sender, "text"));
    form.push_str(&field("state", "state", &query.state, "text"));
    form.push_str(&field("event", "event", &query.event, "text"));
    form.push_str(&field("patient", "patient id", &query.patient, "password"));
    form.push_str(&field("since", "since", &query.since, "text"));
    form.push_str(&field("until", "until", &query.until, "text"));
    form.push_str("<button id=\"search\">Search</button></form>");
    form
}

fn messages_table(entries: &[EntryMeta]) -> String {
    let mut html = String::from(
        "<table id=\"messages\"><tr><th>id</th><th>received</th><th>sender</th><th>type</th>\
         <th>MSH-10</th><th>state</th><th>event</th><th>reason</th></tr>",
    );
    for entry in entries {
        let header = entry.header.clone().unwrap_or_default();
        let event = entry
            .progress
            .as_ref()
            .and_then(|p| p.event_class)
            .map_or("", |e: crate::facts::EventClass| e.as_str());
        let state = entry.state.as_str();
        let _ = write!(
            html,
            "<tr><td><a href=\"/console/messages/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td class=\"{state}\">{state}</td><td>{event}</td><td>{}</td></tr>",
            entry.received_at.strftime("%Y-%m-%d %H:%M:%S"),
            text(&header.sending_facility),
            text(&header.message_type),
            text(&header.control_id),
            text(entry.reason.as_deref().unwrap_or("")),
            id = entry.id,
        );
    }
    html.push_str("</table>");
    html
}

async fn message(AxumState(admin): AxumState<Admin>, Path(id): Path<u64>) -> Response {
    match admin.timeline(id).await {
        Ok(timeline) => render_timeline(&timeline).into_response(),
        Err(error) => error_page(error),
    }
}

fn render_timeline(timeline: &Timeline) -> Html<String> {
    let entry = &timeline.entry;
    let header = entry.header.clone().unwrap_or_default();
    let mut body = format!(
        "<p>{} from {} ({}), MSH-10 <b>{}</b>, state <b class=\"{state}\">{state}</b></p>\
         <h2>Timeline</h2><table id=\"timeline\"><tr><th>when</th><th>stage</th><th>detail</th></tr>",
        text(&header.message_type),
        text(&header.sending_facility),
        text(&format!("{:?}", entry.transport).to_lowercase()),
        text(&header.control_id),
        state = entry.state.as_str(),
    );
    for step in &timeline.steps {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"{stage}\">{stage}</td><td>{}</td></tr>",
            step.at.strftime("%Y-%m-%d %H:%M:%S%.3f"),
            text(step.detail.as_deref().unwrap_or("")),
            stage = text(&step.stage),
        );
    }
    body.push_str(
        "</table><h2>Sinks</h2><table id=\"sinks\"><tr><th>sink</th><th>route</th><th>published</th>\
         <th>outcome</th><th>attempts</th><th>when</th><th>reason</th><th>dead letter</th></tr>",
    );
    for sink in &timeline.sinks {
        let outcome = match (&sink.outcome, sink.purged) {
            (Some(outcome), true) => format!("{outcome} (purged)"),
            (Some(outcome), false) => outcome.clone(),
            (None, _) => "pending (no sink report yet)".to_owned(),
        };
        let dead = sink.dead_lettered.map_or("n/a", |d| if d { "yes" } else { "no" });
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{dead}</td></tr>",
            text(&sink.sink),
            text(&sink.route),
            if sink.published { "yes" } else { "no" },
            if sink.delivered == Some(false) { "failed" } else { "published" },
            text(&outcome),
            sink.attempts.map_or(String::new(), |n| n.to_string()),
            sink.at.map(|at| at.strftime("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default(),
            text(sink.reason.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</table>");
    if timeline.sinks.iter().any(|sink| !sink.history.is_empty()) {
        body.push_str(
            "<h2>Attempts</h2><table id=\"attempts\"><tr><th>sink</th><th>attempt</th><th>when</th>\
             <th>outcome</th><th>reason</th></tr>",
        );
        for sink in &timeline.sinks {
            for attempt in &sink.history {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    text(&sink.sink),
                    attempt.attempt,
                    attempt.at.map(|at| at.strftime("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default(),
                    text(&attempt.outcome),
                    text(attempt.reason.as_deref().unwrap_or("")),
                );
            }
        }
        body.push_str("</table>");
    }
    page(&format!("Message {}", entry.id), &body)
}

async fn replay_dead_letter(
    AxumState(admin): AxumState<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((sink, id)): Path<(String, u64)>,
) -> Response {
    match admin.replay_dead_letters(&sink, &[id], &operator(&headers, peer)).await {
        Ok(_) => {
            let done = urlencode(&format!("Dead letter {id} of {sink} published again"));
            Redirect::to(&format!("/console?done={done}")).into_response()
        }
        Err(error) => error_page(error),
    }
}

async fn pause_resume(
    AxumState(admin): AxumState<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((sink, action)): Path<(String, String)>,
) -> Response {
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return error_page(ApiError::NotFound(format!("no action `{action}` (pause, resume)"))),
    };
    match admin.set_paused(&sink, paused, &operator(&headers, peer)) {
        Ok(_) => {
            let state = if paused { "paused" } else { "resumed" };
            let done = urlencode(&format!("Sink {sink} {state}"));
            Redirect::to(&format!("/console?done={done}")).into_response()
        }
        Err(error) => error_page(error),
    }
}
