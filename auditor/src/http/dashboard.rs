//! The public dashboard: one page, its script and style, compiled into the binary.
//! The page reads only the public API (`/v1/status`, `/v1/epochs`, `/v1/evidence`).

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

pub(super) async fn index() -> Html<&'static str> {
    Html(include_str!("../../dashboard/index.html"))
}

pub(super) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../dashboard/dashboard.js"),
    )
        .into_response()
}

pub(super) async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../dashboard/dashboard.css"),
    )
        .into_response()
}
