//! The dashboard's page, embedded in the binary (the full dashboard is issue 6; this page
//! lists clusters, workloads and migrations from the API with the token in the URL
//! fragment, which never reaches the server's logs).

use axum::response::Html;

pub async fn index() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}
