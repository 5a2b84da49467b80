//! The local status page (`GET /` on the ops HTTP port): plain server-rendered HTML, no external
//! assets, refreshes itself, read-only.

use crate::ops::board::StatusView;

/// Renders the page.
pub fn render(view: &StatusView) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let mut h = String::new();
    h.push_str("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">");
    h.push_str(&format!("<title>{} - district-gateway</title></head><body>", esc(&view.gateway_id)));
    h.push_str(&format!("<h1>{}</h1>", esc(&view.gateway_id)));
    h.push_str("<h2>Devices</h2><table>");
    for d in &view.devices {
        h.push_str(&format!("<tr><td>{}</td><td>{}</td></tr>", esc(&d.name), esc(&d.profile)));
    }
    h.push_str("</table></body></html>");
    h
}
