//! The providers' dashboard in a real browser: headless Chromium (Debian's `chromium`), driven
//! over the DevTools protocol. A payment created through the API appears on the open page
//! without a reload.

use crate::support::{Engine, TestApp, new_key, payment_body, payment_once, review_above};
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn chromium_path() -> String {
    std::env::var("MEDPAY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

pub(crate) struct Browser {
    process: tokio::process::Child,
    socket: Socket,
    next_id: u64,
    profile: std::path::PathBuf,
}

impl Browser {
    pub(crate) async fn launch() -> Browser {
        let profile = std::env::temp_dir().join(format!("medpay-chromium-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).unwrap();
        let process = tokio::process::Command::new(chromium_path())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("Chromium is required at {} (Debian's chromium package): {error}", chromium_path())
            });
        // Chromium writes the port it chose into its profile.
        let mut port = None;
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(profile.join("DevToolsActivePort")) {
                port = text.lines().next().and_then(|line| line.trim().parse::<u16>().ok());
                if port.is_some() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let port = port.expect("Chromium opened its DevTools port");
        let targets: Value = crate::support::client()
            .get(format!("http://127.0.0.1:{port}/json/list"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets.as_array().unwrap().iter().find(|target| target["type"] == "page").expect("a page target");
        let (socket, _) =
            tokio_tungstenite::connect_async(page["webSocketDebuggerUrl"].as_str().unwrap()).await.unwrap();
        Browser { process, socket, next_id: 0, profile }
    }

    /// One DevTools command and its result (events in between are skipped).
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.socket
            .send(Message::Text(json!({"id": id, "method": method, "params": params}).to_string().into()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), self.socket.next())
                .await
                .expect("DevTools answers")
                .unwrap()
                .unwrap();
            let Ok(text) = message.to_text() else { continue };
            let value: Value = serde_json::from_str(text).unwrap();
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    pub(crate) async fn evaluate(&mut self, expression: &str) -> Value {
        let result = self
            .call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}))
            .await;
        result["result"]["value"].clone()
    }

    /// Waits until the page's text contains `needle`; returns the text.
    pub(crate) async fn wait_for_text(&mut self, needle: &str) -> String {
        let mut text = String::new();
        for _ in 0..200 {
            text = self.evaluate("document.body.innerText").await.as_str().unwrap_or_default().to_owned();
            if text.contains(needle) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the page never showed {needle:?}; it shows:\n{text}");
    }

    pub(crate) async fn close(mut self) {
        let _ = self.process.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_appears_live_on_the_open_dashboard() {
    let app = TestApp::spawn(Engine::Sqlite).await;
    let clinic = app.provider(json!({"name": "Clínica Boa Vista", "escrow": true, "fee_bps": 500})).await;
    let patient = app.patient(&clinic).await;
    let (status, first) = app
        .request(
            Method::POST,
            "/v1/payments",
            Some(&clinic.key),
            Some(&payment_body(&clinic, &patient, 12_345)),
            Some(&new_key()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let mut browser = Browser::launch().await;
    browser.call("Page.navigate", json!({"url": format!("{}/dashboard", app.base)})).await;
    sign_in_to_dashboard(&mut browser, &clinic.key).await;
    let page = browser.wait_for_text("R$\u{a0}123,45").await;
    assert!(page.contains(&first["id"].as_str().unwrap()[..8]), "{page}");
    // Approved and charged: the payment waits for the patient's PIX.
    assert!(page.contains("aguardando pagamento"), "{page}");
    browser.wait_for_text("ao vivo").await;

    // A new payment, made through the API while the page is open, appears without a reload.
    let other = app.patient(&clinic).await;
    let (status, second) = app
        .request(
            Method::POST,
            "/v1/payments",
            Some(&clinic.key),
            Some(&payment_body(&clinic, &other, 67_890)),
            Some(&new_key()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let page = browser.wait_for_text("R$\u{a0}678,90").await;
    assert!(page.contains(&second["id"].as_str().unwrap()[..8]), "{page}");
    let rows = browser.evaluate("document.querySelectorAll('#rows tr[data-payment]').length").await;
    assert_eq!(rows, 2, "each payment once");
    let reloaded = browser.evaluate("performance.getEntriesByType('navigation').length").await;
    assert_eq!(reloaded, 1, "no reload happened");
    assert!(page.contains("A receber"), "the balance is shown: {page}");
    let axe = crate::patient_app::axe_source();
    let violations = crate::patient_app::serious_violations(&mut browser, &axe).await;
    assert!(violations.is_empty(), "the dashboard, signed in: {violations:#?}");
    // The first patient pays: the row shows the amount held, with a button to confirm the procedure.
    let charge = first["charge"]["id"].as_str().unwrap();
    let paid = app.client.post(format!("{}/sandbox/charges/{charge}/pay", app.celcoin)).send().await.unwrap();
    assert_eq!(paid.status(), StatusCode::NO_CONTENT);
    browser.wait_for_text("Confirmar procedimento").await;
    let row = format!("document.querySelector('tr[data-payment=\"{}\"]')", first["id"].as_str().unwrap());
    let clicked = browser.evaluate(&format!("{row}.querySelector('button.confirm').click(); true")).await;
    assert_eq!(clicked, true);
    let page = browser.wait_for_text("liberado").await;
    // 5 % of R$ 123,45 is R$ 6,17 (rounded half up): R$ 117,28 is the clinic's, now available.
    let page = if page.contains("Disponível R$\u{a0}117,28") {
        page
    } else {
        browser.wait_for_text("Disponível R$\u{a0}117,28").await
    };
    assert!(!page.contains("Confirmar procedimento"), "{page}");
    let (_, payment) = app
        .request(Method::GET, &format!("/v1/payments/{}", first["id"].as_str().unwrap()), Some(&clinic.key), None, None)
        .await;
    assert_eq!(payment["status"], "released");
    // MEDPAY_SCREENSHOT=path.png keeps a picture of the page, to look at.
    if let Ok(path) = std::env::var("MEDPAY_SCREENSHOT") {
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 1000, "height": 700, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        let shot = browser.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let bytes = base64_decode(shot["data"].as_str().unwrap());
        std::fs::write(path, bytes).unwrap();
    }
    browser.close().await;
    app.stop().await;
}

/// Standard base64 (the DevTools protocol's encoding of screenshots).
pub(crate) fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut buffer = 0u32;
        for (index, c) in chunk.iter().enumerate() {
            buffer |= u32::from(value(*c)) << (18 - 6 * index);
        }
        let bytes = buffer.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// The analysts' console in a real browser: an analyst signs in, sees a payment in review with
/// its reasons, approves it by clicking, sees the models, and promotes one by clicking — the next
/// payment's decision names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_approves_a_case_and_promotes_a_model_in_the_console() {
    let app = TestApp::spawn(Engine::Sqlite).await;
    let clinic = app.provider(json!({"name": "Clínica Boa Vista"})).await;
    review_above(&app, 30_000).await;
    let patient = app.patient(&clinic).await;
    let (status, in_review) = app
        .request(
            Method::POST,
            "/v1/payments",
            Some(&clinic.key),
            Some(&payment_body(&clinic, &patient, 45_600)),
            Some(&new_key()),
        )
        .await;
    assert_eq!((status, in_review["status"].as_str()), (StatusCode::CREATED, Some("in_review")), "{in_review}");
    let tree: Value = serde_json::from_str(include_str!("../../ml/models/tree.json")).unwrap();
    let (status, registered) =
        app.request(Method::POST, "/v1/models", Some(&app.analyst), Some(&json!({"artefact": tree})), None).await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let tree_version = registered["version"].as_str().unwrap().to_owned();
    // The bundled boosted trees with their report (480 KB: over the 64 KB of other bodies).
    let boosted: Value = serde_json::from_str(include_str!("../../ml/models/boosted.json")).unwrap();
    let report: Value = serde_json::from_str(include_str!("../../ml/models/boosted.report.json")).unwrap();
    let (status, boosted) = app
        .request(
            Method::POST,
            "/v1/models",
            Some(&app.analyst),
            Some(&json!({"artefact": boosted, "report": report})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{boosted}");

    let mut browser = Browser::launch().await;
    browser.call("Page.navigate", json!({"url": format!("{}/console", app.base)})).await;
    browser.wait_for_text("token de analista").await;
    // Its script has run (the form is handled by it, not submitted as a plain form).
    for _ in 0..200 {
        if browser.evaluate("document.body.dataset.ready").await == json!("yes") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sign_in = format!(
        "document.getElementById('token').value = {}; document.querySelector('#login-form button').click(); true",
        serde_json::to_string(&app.analyst).unwrap()
    );
    browser.evaluate(&sign_in).await;
    let page = browser.wait_for_text("R$\u{a0}456,00").await;
    // The bundled model carries no training reference to measure drift against.
    browser.wait_for_text("Sem referência de treino").await;
    assert!(page.contains("decisão: em análise"), "{page}");
    assert!(page.contains("rule big_consultation matched"), "the case shows its reasons: {page}");
    let row = format!("document.querySelector('tr[data-payment=\"{}\"]')", in_review["id"].as_str().unwrap());
    // Taken first, so nobody else decides it meanwhile; the queue says who holds it.
    let taken = browser.evaluate(&format!("{row}.querySelector('button.claim-button').click(); true")).await;
    assert_eq!(taken, true);
    browser.wait_for_text("com analyst desde").await;
    let clicked =
        browser.evaluate(&format!("{row}.querySelector('button[data-outcome=\"approve\"]').click(); true")).await;
    assert_eq!(clicked, true);
    browser.wait_for_text("Nenhum caso aberto.").await;
    let approved = payment_once(&app, &clinic.key, &in_review, "awaiting_payment").await;
    assert_eq!(approved["status"], "awaiting_payment", "approved in the console, then charged: {approved}");

    // A rule: tested against recent payments first, then saved, by clicking.
    let typed = "document.getElementById('rule-name').value = 'very_big'; \
                 document.getElementById('rule-source').value = 'review if amount_centavos > 40000'; \
                 document.getElementById('rule-test').click(); true";
    browser.evaluate(typed).await;
    let tested = browser.wait_for_text("casariam").await;
    assert!(tested.contains("Nos últimos 1 pagamentos: 1 casariam (review)"), "{tested}");
    browser.evaluate("document.getElementById('rule-save').click(); true").await;
    browser.wait_for_text("Regra salva").await;
    let (_, rules) = app.request(Method::GET, "/v1/rules", Some(&app.analyst), None, None).await;
    assert!(rules["data"].as_array().unwrap().iter().any(|rule| rule["name"] == "very_big"), "{rules}");
    // The boosted model's plots, drawn by the service, and its numbers beside them.
    let plots =
        format!("document.querySelector('button[data-plots=\"{}\"]').click(); true", boosted["id"].as_str().unwrap());
    browser.wait_for_text(boosted["version"].as_str().unwrap()).await;
    assert_eq!(browser.evaluate(&plots).await, true);
    let drawn = "Array.from(document.querySelectorAll('#plots img')).filter((i) => i.complete && i.naturalWidth > 0).map((i) => i.dataset.plot).join(',')";
    let mut shown = Value::Null;
    for _ in 0..200 {
        shown = browser.evaluate(drawn).await;
        if shown == json!("roc,precision-recall,calibration,scores") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shown, json!("roc,precision-recall,calibration,scores"), "the four plots are drawn");
    let numbers = browser.evaluate("document.getElementById('evaluation-numbers').textContent").await;
    let pr_auc = format!("{:.3}", report["holdout"]["pr_auc"].as_f64().unwrap());
    assert!(numbers.as_str().unwrap().contains(&pr_auc), "its PR-AUC beside the plots: {numbers}");
    let notes = browser.evaluate("document.getElementById('evaluation-notes').textContent").await;
    assert!(notes.as_str().unwrap().contains("calibração Platt"), "{notes}");
    // Promote the tree by clicking.
    browser.wait_for_text(&tree_version).await;
    let model_row = format!("document.querySelector('tr[data-model=\"{}\"]')", registered["id"].as_str().unwrap());
    let clicked =
        browser.evaluate(&format!("{model_row}.querySelector('button[data-alias=\"champion\"]').click(); true")).await;
    assert_eq!(clicked, true);
    browser.wait_for_text("Promover pelo console").await;
    let axe = crate::patient_app::axe_source();
    let violations = crate::patient_app::serious_violations(&mut browser, &axe).await;
    assert!(violations.is_empty(), "the console, signed in: {violations:#?}");
    let in_force = browser.evaluate("document.getElementById('in-force').textContent").await;
    assert_eq!(in_force, json!(tree_version));
    let other = app.patient(&clinic).await;
    let (status, next) = app
        .request(
            Method::POST,
            "/v1/payments",
            Some(&clinic.key),
            Some(&payment_body(&clinic, &other, 12_300)),
            Some(&new_key()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        next["decision"]["model_version"],
        json!(tree_version),
        "the next decision names the promoted model: {next}"
    );
    if let Ok(path) = std::env::var("MEDPAY_CONSOLE_SCREENSHOT") {
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 1100, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        let shot = browser.call("Page.captureScreenshot", json!({"format": "png"})).await;
        std::fs::write(path, base64_decode(shot["data"].as_str().unwrap())).unwrap();
    }
    browser.close().await;
    app.stop().await;
}

/// Signs in to the open dashboard as a person would: types the key, presses the button.
async fn sign_in_to_dashboard(browser: &mut Browser, key: &str) {
    browser.wait_for_text("chave de API").await;
    let sign_in = format!(
        "document.getElementById('key').value = {}; document.querySelector('#login-form button').click(); true",
        serde_json::to_string(key).unwrap()
    );
    browser.evaluate(&sign_in).await;
}

/// How many pixels of an `<img>` (by CSS selector) are near `rgb`: the image is drawn on a canvas
/// in the page, so this counts what Chromium rendered of the SVG, not the SVG's text.
fn pixels_of(selector: &str, rgb: (u8, u8, u8)) -> String {
    format!(
        "(() => {{ const image = document.querySelector({selector:?});
            if (!image || !image.complete || !image.naturalWidth) return -1;
            const canvas = document.createElement('canvas');
            canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
            const context = canvas.getContext('2d'); context.drawImage(image, 0, 0);
            const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
            let count = 0;
            for (let i = 0; i < data.length; i += 4) {{
              if (Math.abs(data[i] - {}) < 12 && Math.abs(data[i + 1] - {}) < 12 && Math.abs(data[i + 2] - {}) < 12) count++;
            }}
            return count; }})()",
        rgb.0, rgb.1, rgb.2
    )
}

async fn wait_for_images(browser: &mut Browser, selector: &str, count: u64) {
    let expression = format!(
        "Array.from(document.querySelectorAll({selector:?})).filter((image) => image.complete && image.naturalWidth === 640).length"
    );
    for _ in 0..200 {
        if browser.evaluate(&expression).await == json!(count) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = browser.evaluate("document.body.innerText").await;
    panic!("{count} charts never rendered at {selector}; the page shows {text}");
}

/// The reports' charts, drawn by the service with plotters, rendered by Chromium on the provider's
/// dashboard and in the analysts' console: bars in the decisions' colours where payments are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reports_charts_render_on_the_dashboard_and_in_the_console() {
    let app = TestApp::spawn(Engine::Sqlite).await;
    let clinic = app.provider(json!({"name": "Clínica Boa Vista"})).await;
    review_above(&app, 50_000).await;
    let patient = app.patient(&clinic).await;
    for amount in [12_000, 21_000, 64_000] {
        let (status, _) = app
            .request(
                Method::POST,
                "/v1/payments",
                Some(&clinic.key),
                Some(&payment_body(&clinic, &patient, amount)),
                Some(&new_key()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let mut browser = Browser::launch().await;
    browser.call("Page.navigate", json!({"url": format!("{}/dashboard", app.base)})).await;
    sign_in_to_dashboard(&mut browser, &clinic.key).await;
    let page = browser.wait_for_text("3 pagamentos de").await;
    assert!(page.contains("aprovados 66,7%"), "{page}");
    wait_for_images(&mut browser, "#charts img[data-chart]", 3).await;
    // Approved bars in green and the review bar in amber, as drawn by the service.
    let outcomes = "#charts img[data-chart=outcomes]";
    let green = browser.evaluate(&pixels_of(outcomes, (0x1b, 0x7f, 0x4c))).await.as_i64().unwrap();
    let amber = browser.evaluate(&pixels_of(outcomes, (0xc2, 0x7c, 0x0e))).await.as_i64().unwrap();
    let red = browser.evaluate(&pixels_of(outcomes, (0xb4, 0x23, 0x18))).await.as_i64().unwrap();
    assert!(green > 2 * amber && amber > 200, "two approved, one in review: green {green}, amber {amber}");
    assert!(red < 200, "nothing declined, only the legend's swatch: {red}");
    // By month: the same payments in one bar.
    browser.evaluate("document.getElementById('report-period').value = 'month'; document.getElementById('report-period').dispatchEvent(new Event('change')); true").await;
    browser.wait_for_text("por mês").await;
    wait_for_images(&mut browser, "#charts img[data-chart]", 3).await;
    let axe = crate::patient_app::axe_source();
    let violations = crate::patient_app::serious_violations(&mut browser, &axe).await;
    assert!(violations.is_empty(), "the dashboard with its charts: {violations:#?}");

    // The analysts' console: the platform's charts and the models'.
    browser.call("Page.navigate", json!({"url": format!("{}/console", app.base)})).await;
    browser.wait_for_text("token de analista").await;
    for _ in 0..200 {
        if browser.evaluate("document.body.dataset.ready").await == json!("yes") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sign_in = format!(
        "document.getElementById('token').value = {}; document.querySelector('#login-form button').click(); true",
        serde_json::to_string(&app.analyst).unwrap()
    );
    browser.evaluate(&sign_in).await;
    browser.wait_for_text("3 pagamentos (fonte: SQL)").await;
    wait_for_images(&mut browser, "#platform-charts img[data-chart]", 4).await;
    let scores = browser.evaluate(&pixels_of("#platform-charts img[data-chart=scores]", (0x1f, 0x5f, 0xa8))).await;
    assert!(scores.as_i64().unwrap() > 100, "the champion's score line: {scores}");
    if let Ok(path) = std::env::var("MEDPAY_CHARTS_SCREENSHOT") {
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 1100, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        browser.evaluate("document.getElementById('platform').scrollIntoView(); true").await;
        let shot = browser.call("Page.captureScreenshot", json!({"format": "png"})).await;
        std::fs::write(path, base64_decode(shot["data"].as_str().unwrap())).unwrap();
    }
    browser.close().await;
    app.stop().await;
}
