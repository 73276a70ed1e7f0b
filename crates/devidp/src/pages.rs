//! The HTML pages a browser sees: the login form, error pages and the
//! signed-out page, each with the "not for production" banner.
//!
//! Every reflected value goes through [`escape`]. The pages load nothing
//! (inline style only) and run no script. This module builds strings; it
//! does not decide status codes or headers (see `server`).

use crate::BANNER;

/// Escapes text for HTML element content and double- or single-quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f5;color:#18181b}\
#dev-banner{background:#b91c1c;color:#fff;font-weight:bold;text-align:center;padding:.75em}\
main{max-width:24em;margin:3em auto;background:#fff;padding:2em;border-radius:8px;box-shadow:0 1px 4px #0002}\
label{display:block;margin-top:1em}input{width:100%;box-sizing:border-box;padding:.5em;font-size:1em}\
button{margin-top:1.5em;padding:.6em 1.2em;font-size:1em}\
#error{color:#b91c1c;font-weight:bold}.muted{color:#52525b;font-size:.9em}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <div id=\"dev-banner\" role=\"alert\">{BANNER}</div>\n<main>\n{body}\n</main>\n</body>\n</html>\n",
        title = escape(title),
    )
}

/// The login form.
#[derive(Debug)]
pub(crate) struct Login<'a> {
    /// The client asking, shown to the user.
    pub(crate) client_id: &'a str,
    /// The pending transaction, posted back as a hidden field.
    pub(crate) transaction: &'a str,
    /// Pre-filled username (login_hint, or what was typed before).
    pub(crate) username: &'a str,
    /// An error from the previous attempt.
    pub(crate) error: Option<&'a str>,
}

pub(crate) fn login(form: &Login<'_>) -> String {
    let error = form
        .error
        .map(|e| format!("<p id=\"error\" role=\"alert\">{}</p>\n", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1>\n<p class=\"muted\">to continue to <strong id=\"client-id\">{client}</strong></p>\n{error}\
         <form id=\"login\" method=\"post\" action=\"/authorize\">\n\
         <input type=\"hidden\" id=\"transaction\" name=\"transaction\" value=\"{transaction}\">\n\
         <label for=\"username\">Username</label>\n\
         <input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" autofocus required value=\"{username}\">\n\
         <label for=\"password\">Password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\n\
         <button id=\"sign-in\" type=\"submit\">Sign in</button>\n</form>",
        client = escape(form.client_id),
        transaction = escape(form.transaction),
        username = escape(form.username),
    );
    page("Sign in - development identity provider", &body)
}

/// An error page (a request that cannot be sent back to the client).
pub(crate) fn error(heading: &str, message: &str) -> String {
    let body = format!("<h1>{}</h1>\n<p id=\"error\">{}</p>", escape(heading), escape(message));
    page("Error - development identity provider", &body)
}

/// The page shown after logout when there is nowhere to send the browser back to.
pub(crate) fn signed_out(note: Option<&str>) -> String {
    let note = note
        .map(|n| format!("\n<p class=\"muted\" id=\"note\">{}</p>", escape(n)))
        .unwrap_or_default();
    let body = format!("<h1 id=\"signed-out\">You are signed out</h1>{note}");
    page("Signed out - development identity provider", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn login_form_has_stable_ids_and_escapes() {
        let html = login(&Login {
            client_id: "<script>",
            transaction: "t\"x",
            username: "\"><img>",
            error: Some("<b>"),
        });
        for needle in [
            "id=\"username\" name=\"username\"",
            "id=\"password\" name=\"password\" type=\"password\"",
            "<button id=\"sign-in\" type=\"submit\">",
            BANNER,
        ] {
            assert!(html.contains(needle), "{needle} missing from {html}");
        }
        assert!(!html.contains("<script>") && !html.contains("<img>") && !html.contains("<b>"));
        assert!(html.contains("&lt;script&gt;") && html.contains("t&quot;x"));
    }
}
