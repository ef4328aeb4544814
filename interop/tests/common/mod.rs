//! Starts node `oidc-provider` (interop/oidc-provider, installed by `npm ci`) on a free port.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::path::PathBuf;
use std::process::Stdio;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};

pub const RESOURCE: &str = "urn:tokenkeeper:api";

/// A running provider; killed when dropped.
pub struct Provider {
    pub issuer: String,
    child: tokio::process::Child,
}

impl Provider {
    /// Starts a provider with extra environment settings (see server.mjs).
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc-provider");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run `npm ci --prefix interop/oidc-provider` \
             (the README's test command does this)"
        );
        let mut command = tokio::process::Command::new("node");
        command
            .arg("server.mjs")
            .current_dir(&dir)
            // The provider binds port 0 and names the port in its READY line.
            .env("PORT", "0")
            .env("DEBUG_EVENTS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("node must be installed");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(issuer) = line.strip_prefix("READY ") {
                    return issuer.to_owned();
                }
            }
            panic!("oidc-provider exited before it was ready");
        })
        .await
        .expect("oidc-provider did not start within 30 s");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            issuer: ready,
            child,
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The claims of a JWT, without verifying it (the provider is trusted here).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Logs `user` in through the provider's own login and consent pages, without a browser:
/// follows the redirects by hand with a cookie jar and posts the forms. Returns the callback URL
/// (with `code`, `state`, `iss`).
pub async fn scripted_login(
    authorization_url: &url::Url,
    redirect_uri: &str,
    user: &str,
) -> url::Url {
    scripted_login_trusting(authorization_url, redirect_uri, user, None).await
}

/// [`scripted_login`] with a browser that also trusts `ca` (PEM): a provider on https with the
/// test CA's certificate.
pub async fn scripted_login_trusting(
    authorization_url: &url::Url,
    redirect_uri: &str,
    user: &str,
    ca: Option<&str>,
) -> url::Url {
    let mut builder = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = ca {
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    }
    let browser = builder.build().unwrap();
    let mut next = authorization_url.clone();
    for _ in 0..20 {
        if next.as_str().starts_with(redirect_uri) {
            return next;
        }
        let response = browser.get(next.clone()).send().await.unwrap();
        if response.status().is_redirection() {
            next = location(&next, &response);
            continue;
        }
        assert!(
            response.status().is_success(),
            "{} at {next}",
            response.status()
        );
        let page = response.text().await.unwrap();
        let (post, form) = provider_form(&page, &next, user);
        let response = browser.post(post.clone()).form(&form).send().await.unwrap();
        assert!(
            response.status().is_redirection(),
            "{} after posting to {post}",
            response.status()
        );
        next = location(&post, &response);
    }
    panic!("the login did not come back to the redirect URI");
}

/// The provider's interaction page `page` (at `at`) answered: where its form posts, and the
/// fields — `user`'s login (any password) on a login page, the consent otherwise.
fn provider_form(page: &str, at: &url::Url, user: &str) -> (url::Url, Vec<(&'static str, String)>) {
    let attribute = |after: &str, name: &str| -> Option<String> {
        let rest = &page[page.find(after)?..];
        let value = rest
            .split(&format!("{name}=\""))
            .nth(1)?
            .split('"')
            .next()?;
        Some(value.replace("&amp;", "&"))
    };
    let action = attribute("<form", "action")
        .unwrap_or_else(|| panic!("a form on the provider's page {at}: {page}"));
    let prompt = attribute("name=\"prompt\"", "value").unwrap_or_else(|| "consent".into());
    let form = if prompt == "login" {
        vec![
            ("prompt", "login".to_owned()),
            ("login", user.to_owned()),
            ("password", "any".to_owned()),
        ]
    } else {
        vec![("prompt", prompt)]
    };
    (at.join(&action).unwrap(), form)
}

fn location(base: &url::Url, response: &reqwest::Response) -> url::Url {
    let location = response
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap();
    base.join(location).unwrap()
}

/// In a real browser on the provider's interaction pages: logs `user` in (when the provider
/// asks: it has no session yet) and gives consent, until the browser is back on `/app`.
pub async fn provider_login_in_browser(browser: &tokenkeeper_testing::Browser, user: &str) {
    let page = browser
        .until(
            "the provider's login or consent form",
            "const f = document.querySelector('form'); return f && location.pathname.startsWith('/interaction') ? (document.querySelector('input[name=login]') ? 'login' : 'consent') : null",
        )
        .await;
    if page == "login" {
        browser
            .script(&format!(
                "document.querySelector('input[name=login]').value = {};\
                 document.querySelector('input[name=password]').value = 'any';\
                 document.querySelector('form').submit();",
                serde_json::Value::from(user)
            ))
            .await;
        browser
            .until(
                "the consent form",
                "return document.querySelector('form') !== null && document.querySelector('input[name=login]') === null && location.pathname.startsWith('/interaction')",
            )
            .await;
    }
    browser
        .script("document.querySelector('form').submit()")
        .await;
    browser
        .until(
            "the app, logged in",
            "return location.pathname === '/app' && document.getElementById('ready') !== null",
        )
        .await;
}

/// The session's logout URL (`bff:logout_url`) among the claims of a BFF's `/bff/user`.
pub fn logout_url(claims: &serde_json::Value) -> String {
    claims
        .as_array()
        .and_then(|claims| claims.iter().find(|c| c["type"] == "bff:logout_url"))
        .and_then(|c| c["value"].as_str())
        .expect("a bff:logout_url claim")
        .to_owned()
}

/// Logs out of the BFF at `origin` with its `logout` URL, and confirms the sign-out on the
/// provider's page (when it shows one).
pub async fn logout_in_browser(browser: &tokenkeeper_testing::Browser, origin: &str, logout: &str) {
    browser.go(&format!("{origin}{logout}")).await;
    browser
        .until(
            "the provider's sign-out confirmation, or home",
            &format!(
                "return document.querySelector('form') !== null || location.href.startsWith('{origin}/')"
            ),
        )
        .await;
    browser
        .script("const form = document.querySelector('form'); if (form) { const yes = form.querySelector('[name=logout]'); if (yes) { yes.click(); } else { form.submit(); } }")
        .await;
}

/// Logs `user` in through a web app and the provider's own pages with `browser` (a cookie jar,
/// redirects not followed): from `start` (the app's login URL), following redirects, posting
/// the provider's login and consent forms, until a page that is not the provider's. Returns
/// that page's URL and text.
pub async fn scripted_web_login(
    browser: &reqwest::Client,
    start: &str,
    provider: &str,
    user: &str,
) -> (url::Url, String) {
    let mut next = url::Url::parse(start).unwrap();
    for _ in 0..30 {
        let response = browser.get(next.clone()).send().await.unwrap();
        if response.status().is_redirection() {
            next = location(&next, &response);
            continue;
        }
        let page = response.text().await.unwrap();
        if !next.as_str().starts_with(provider) {
            return (next, page);
        }
        let (post, form) = provider_form(&page, &next, user);
        let response = browser.post(post.clone()).form(&form).send().await.unwrap();
        assert!(
            response.status().is_redirection(),
            "{} after posting to {post}",
            response.status()
        );
        next = location(&post, &response);
    }
    panic!("the login did not come back to the app");
}

/// The `name`/`value` pairs of a page's `<input>`s (hidden and filled ones alike).
fn inputs(page: &str) -> Vec<(String, String)> {
    let attribute = |tag: &str, name: &str| -> Option<String> {
        let value = tag.split(&format!("{name}=\"")).nth(1)?.split('"').next()?;
        Some(value.replace("&amp;", "&"))
    };
    page.split("<input")
        .skip(1)
        .filter_map(|rest| {
            let tag = rest.split('>').next()?;
            Some((
                attribute(tag, "name")?,
                attribute(tag, "value").unwrap_or_default(),
            ))
        })
        .collect()
}

/// The user approves a device (RFC 8628) at the provider: opens `verification_uri_complete`,
/// confirms the code, logs in and consents as `user`. Returns the provider's last page.
pub async fn scripted_device_approval(verification: &url::Url, user: &str) -> String {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut next = verification.clone();
    let mut post: Option<Vec<(String, String)>> = None;
    for _ in 0..20 {
        let response = match post.take() {
            Some(form) => browser.post(next.clone()).form(&form).send().await.unwrap(),
            None => browser.get(next.clone()).send().await.unwrap(),
        };
        if response.status().is_redirection() {
            next = location(&next, &response);
            continue;
        }
        let page = response.text().await.unwrap();
        let Some(at) = page.find("<form") else {
            return page;
        };
        let action = page[at..]
            .split("action=\"")
            .nth(1)
            .and_then(|a| a.split('"').next())
            .unwrap()
            .replace("&amp;", "&");
        let mut form = inputs(&page[at..]);
        if let Some(prompt) = form
            .iter()
            .find(|(k, _)| k == "prompt")
            .map(|(_, v)| v.clone())
        {
            if prompt == "login" {
                form.retain(|(k, _)| k != "login" && k != "password");
                form.push(("login".into(), user.to_owned()));
                form.push(("password".into(), "any".into()));
            }
        }
        next = next.join(&action).unwrap();
        post = Some(form);
    }
    panic!("the device approval did not end");
}
